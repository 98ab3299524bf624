"""Name -> implementation lookup for methods, protocols, datasets, samplers, backbones, tasks and commands.

Built-in entries are lazy `"module:attr"` placeholders, so listing names or `fssbench --help`
imports neither torch nor any model library. Third-party packages add methods through the entry
point group `fssbench.adapters` (name -> "module:AdapterClass") and protocols through
`fssbench.protocols` (name -> "module:attr", where attr is the path of a spec file or of a folder of
spec files). A plugin that does not import is an error naming the plugin, never a silent skip.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib
import importlib.util
import inspect
import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from fssbench.harness.errors import FssbenchError, UsageError

if TYPE_CHECKING:
    from fssbench.harness.specs import ProtocolSpec

BUILTIN_SPEC_DIR = Path(str(files("fssbench.protocols") / "specs"))


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:attr"
    origin: str  # "built-in" or the distribution that provides the plugin
    stated: str | None = None  # a description given at registration, for targets that state none
    described_at: str | None = None  # "module:DICT" whose DICT[name] states the description
    base: str | None = None  # a composition's base entry: its target is called as target(base class, name)

    @property
    def description(self) -> str:
        """Stated once, at the definition: read from the source without importing it (no torch)."""
        if self.stated is not None:
            return self.stated
        return static_description(self.described_at or self.target, self.name)


@functools.lru_cache(maxsize=None)
def static_description(target: str, name: str) -> str:
    """The `description` string of the class `module:Class` (else its docstring's first line), a
    function's docstring's first line, or, for
    `module:DICT`, the first string argument of the call `DICT[name]` holds; read with `ast` only."""
    module_name, _, attr = target.partition(":")
    try:
        spec = importlib.util.find_spec(module_name)
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (ImportError, AttributeError, TypeError, OSError, SyntaxError, ValueError):
        return ""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == attr:
            for statement in node.body:
                if (isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)
                        and any(isinstance(t, ast.Name) and t.id == "description" for t in statement.targets)):
                    return statement.value.value
            return (ast.get_docstring(node) or "").split("\n")[0]
        if isinstance(node, ast.FunctionDef) and node.name == attr:
            return (ast.get_docstring(node) or "").split("\n")[0]
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == attr for t in node.targets)):
            for key, value in zip(node.value.keys, node.value.values):
                if isinstance(key, ast.Constant) and key.value == name and isinstance(value, ast.Call):
                    first = value.args[0] if value.args else None
                    return first.value if isinstance(first, ast.Constant) else ""
    return ""


def load_target(target: str, what: str) -> Any:
    module_name, _, attr = target.rpartition(":") if ".py:" in target else target.partition(":")  # path.py:Class
    try:
        module = import_file(Path(module_name)) if module_name.endswith(".py") else importlib.import_module(module_name)
        return getattr(module, attr) if attr else module
    except Exception as exc:  # a plugin may fail in any way while importing
        raise FssbenchError(f"{what} could not be loaded from {target!r}: {type(exc).__name__}: {exc}") from exc


def import_file(path: Path) -> Any:
    """The module of a .py file (a method run as `--method path/to/file.py:Class`, without packaging),
    imported from its path under the name `fssbench_local_<stem>`, which it alone holds in sys.modules, so
    that provenance finds its source (its sha256 is part of the run's identity)."""
    import sys

    path = path.expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    name = f"fssbench_local_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def unknown_name_error(kind: str, name: str, known: list[str]) -> UsageError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return UsageError(f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known)}.")


class Registry:
    """A thread-safe table of lazy placeholders with did-you-mean errors and entry-point plugins."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self._group = entry_point_group
        self._entries: dict[str, Entry] = {}
        self._loaded: dict[str, Any] = {}
        self._plugins_scanned = entry_point_group is None
        self._lock = threading.RLock()
        self._compositions: dict[str, tuple[str, str, tuple[str, ...]]] = {}  # prefix -> target, description, listed

    def register(self, name: str, target: str, description: str | None = None, origin: str = "built-in",
                 described_at: str | None = None) -> None:
        """`description`: only for targets that state none themselves (see Entry.description)."""
        with self._lock:
            existing = self._entries.get(name)
            if existing is not None and existing.target != target:
                raise FssbenchError(
                    f"{self.kind} {name!r} is defined twice: by {existing.origin} ({existing.target}) "
                    f"and by {origin} ({target}); uninstall one of them"
                )
            self._entries[name] = Entry(name, target, origin, description, described_at)

    def register_composition(self, prefix: str, target: str, description: str, listed: tuple[str, ...] = ()) -> None:
        """Names `<prefix><base>` resolve for any entry `base` (itself possibly composed): `target(base class,
        name)` builds the class at lookup. `listed` bases are shown by entries(); every other base resolves too."""
        with self._lock:
            self._compositions[prefix] = (target, description, listed)

    def _composed(self, name: str) -> Entry | None:
        for prefix, (target, description, _) in self._compositions.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                base = self.entry(name[len(prefix):])
                return Entry(name, target, base.origin, f"{description} {base.name}: {base.description}",
                             base=base.name)
        return None

    def entries(self) -> list[Entry]:
        self._scan_plugins()
        composed = [self._composed(prefix + base) for prefix, (_, _, listed) in self._compositions.items()
                    for base in listed]
        return sorted([*self._entries.values(), *composed], key=lambda entry: entry.name)

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries()]

    def entry(self, name: str) -> Entry:
        self._scan_plugins()
        if name in self._entries:
            return self._entries[name]
        try:
            composed = self._composed(name)
        except UsageError:  # the base is unknown: name the whole name
            composed = None
        if composed is None:
            raise unknown_name_error(self.kind, name, self.names())
        return composed

    def get(self, name: str) -> Any:
        entry = self.entry(name)
        with self._lock:
            if name not in self._loaded:
                what = f"{self.kind} {name!r} ({entry.origin})"
                target = load_target(entry.target, what)
                self._loaded[name] = target(self.get(entry.base), name) if entry.base else target
            return self._loaded[name]

    def _scan_plugins(self) -> None:
        with self._lock:
            if self._plugins_scanned:
                return
            self._plugins_scanned = True
            for point in entry_points(group=self._group):
                self.register(point.name, point.value, origin=_plugin_origin(point))


def _plugin_origin(point: EntryPoint) -> str:
    dist = point.dist
    return f"plugin {dist.name} {dist.version}" if dist is not None else "plugin"



class ProtocolRegistry:
    """Protocols are spec files: built-in ones in protocols/specs, plugins' through entry points."""

    def __init__(self, spec_dirs: list[Path], entry_point_group: str = "fssbench.protocols") -> None:
        self._spec_dirs = spec_dirs
        self._group = entry_point_group
        self._paths: dict[str, tuple[Path, str]] | None = None
        self._lock = threading.RLock()

    def _scan(self) -> dict[str, tuple[Path, str]]:
        with self._lock:
            if self._paths is None:
                paths: dict[str, tuple[Path, str]] = {}
                for folder in self._spec_dirs:
                    self._add_folder(paths, folder, "built-in")
                for point in entry_points(group=self._group):
                    origin = _plugin_origin(point)
                    location = Path(load_target(point.value, f"protocol plugin {point.name!r} ({origin})"))
                    if location.is_dir():
                        self._add_folder(paths, location, origin)
                    elif location.is_file():
                        self._add(paths, location, origin)
                    else:
                        raise FssbenchError(
                            f"protocol plugin {point.name!r} ({origin}) points to {location}, "
                            "which is neither a spec file nor a folder of spec files"
                        )
                self._paths = paths
            return self._paths

    def _add_folder(self, paths: dict[str, tuple[Path, str]], folder: Path, origin: str) -> None:
        for path in sorted(folder.glob("*.yaml")):
            if not path.name.startswith("_"):
                self._add(paths, path, origin)

    def _add(self, paths: dict[str, tuple[Path, str]], path: Path, origin: str) -> None:
        name = path.stem
        if name in paths and paths[name][0] != path:
            raise FssbenchError(f"protocol {name!r} is defined twice: {paths[name][0]} and {path} ({origin})")
        paths[name] = (path, origin)

    def names(self) -> list[str]:
        return sorted(self._scan())

    def path(self, name: str) -> Path:
        paths = self._scan()
        if name not in paths:
            raise unknown_name_error("protocol", name, sorted(paths))
        return paths[name][0]

    def spec(self, name: str) -> ProtocolSpec:
        """The validated spec file and its sampler's name, importing no sampler: cheap, for listing."""
        from fssbench.harness.specs import load_spec

        spec = load_spec(self.path(name))
        try:
            samplers.entry(spec.sampler["name"])
        except UsageError as exc:
            raise UsageError(f"protocol spec {spec.source}: key 'sampler.name' is an {exc}") from None
        return spec

    def get(self, name: str) -> ProtocolSpec:
        """The spec, its sampler keys checked against the sampler's parameters (imports the sampler)."""
        spec = self.spec(name)
        check_sampler_params(spec, samplers.get(spec.sampler["name"]))
        return spec


HARNESS_SAMPLER_ARGS = ("fold", "shot", "seed")  # the harness calls sampler(reader, fold=, shot=, seed=, **params)


def check_sampler_params(spec: ProtocolSpec, sampler: Callable[..., Any]) -> None:
    """Raise a UsageError naming the spec file and key where the harness's call of the sampler with the
    spec's sampler keys (all but name and seed) would raise TypeError: an unknown or missing parameter."""
    name = spec.sampler["name"]
    try:
        reader, *parameters = inspect.signature(sampler).parameters.values()
    except (TypeError, ValueError):  # no signature to read: the call itself will tell
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    named = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    settable = [p for p in named if p not in HARNESS_SAMPLER_ARGS]
    known = f"its parameters besides name and seed: {', '.join(settable) or 'none'}"
    given = [key for key in spec.sampler if key not in ("name", "seed")]

    def fail(key: str, problem: str) -> None:
        raise UsageError(f"protocol spec {spec.source}: key 'sampler.{key}' {problem}")

    for key in given:
        if key in (reader.name, *HARNESS_SAMPLER_ARGS):
            fail(key, "must be removed: the harness passes it (from the spec's dataset, folds and shot)")
        if key not in named:
            fail(key, f"is not a parameter of sampler {name!r} ({known}); fix its spelling or remove it")
    for p in parameters:
        if p.name in settable and p.default is p.empty and p.name not in given:
            fail(p.name, f"is missing: sampler {name!r} requires it ({known})")


methods = Registry("method", "fssbench.adapters")  # descriptions: each adapter class's `description`
methods.register("oracle", "fssbench.adapters.oracle:OracleAdapter")
methods.register("protonet", "fssbench.adapters.protonet:ProtoNetAdapter")
methods.register("precomputed", "fssbench.adapters.precomputed:PrecomputedAdapter")
methods.register("affinity-sam", "fssbench.adapters.affinity_sam:AffinitySamAdapter")
methods.register("gsm+protonet", "fssbench.adapters.gsm:GsmProtoNetAdapter")
methods.register("gsm+affinity-sam", "fssbench.adapters.gsm:GsmAffinitySamAdapter")
methods.register("diffews", "fssbench.adapters.diffews:DiffewsAdapter")
methods.register("diffup", "fssbench.adapters.diffup.adapter:DiffUpAdapter")
methods.register("gfss-learner", "fssbench.adapters.gfss_learner.adapter:GfssLearnerAdapter")
methods.register("syn4seg", "fssbench.adapters.syn4seg.adapter:Syn4SegAdapter")
methods.register_composition("aligndiff+", "fssbench.adapters.aligndiff.adapter:compose",
                             "AlignDiff: 1 real + N synthetic supports (any FSS method X as aligndiff+X) for",
                             listed=("protonet", "gsm+protonet", "affinity-sam", "diffews", "diffup"))

# Image sources of the synthesis layer (AlignDiff, Syn4Seg): name -> an ImageSource class
sources = Registry("image source")
sources.register("diffusers", "fssbench.adapters.synthesis.diffusers_source:DiffusersSource")
sources.register("sd3", "fssbench.adapters.synthesis.sd3_source:SD3Source")
sources.register("folder", "fssbench.adapters.synthesis.folder:FolderSource")
sources.register("demo", "fssbench.protocols.demo_synthesis:DemoSource")

datasets = Registry("dataset")
datasets.register("demo", "fssbench.protocols.demo:DemoDataset",
                  "built-in demo: 16 textured classes from scikit-image's photographs, 4 folds, generated on first use")
datasets.register("pascal", "fssbench.protocols.pascal:PascalDataset",
                  "PASCAL-5i: 20 VOC classes in 4 folds, SBD-augmented masks, HSNet's split lists")
datasets.register("coco", "fssbench.protocols.coco:CocoDataset",
                  "COCO-20i, interleaved folds (fold i = classes i, i+4, ..., i+76): HSNet's pickled lists, PNG masks")
datasets.register("coco-contiguous", "fssbench.protocols.coco:CocoContiguousDataset",
                  "COCO-20i, contiguous folds (fold i = classes 20i..20i+19), lists derived from HSNet's val pickles")
datasets.register("fss1000", "fssbench.protocols.fss1000:Fss1000Dataset",
                  "FSS-1000: 240 test classes of 10 images (ids 760..999), HSNet's split lists")
datasets.register("deepglobe", "fssbench.protocols.deepglobe:DeepglobeDataset",
                  "Deepglobe land cover: PATNet's 408x408 tiles in 6 class folders (cross-domain)")
datasets.register("isic", "fssbench.protocols.isic:IsicDataset",
                  "ISIC2018 task 1: 3 lesion classes from PATNet's class_id.csv (cross-domain)")
datasets.register("chestxray", "fssbench.protocols.chestxray:ChestXrayDataset",
                  "Chest X-ray lung masks (Kaggle 'Lung Segmentation'), 1 class (cross-domain)")
datasets.register("lvis92i-1shot", "fssbench.protocols.lvis:Lvis92iOneShot",
                  "LVIS-92i with Matcher's 1-shot fold lists (classes with more than 1 image), 10 folds")
datasets.register("lvis92i-5shot", "fssbench.protocols.lvis:Lvis92iFiveShot",
                  "LVIS-92i with Matcher's 5-shot fold lists (classes with more than 5 images), 10 folds")
datasets.register("isaid", "fssbench.protocols.isaid:IsaidDataset",
                  "iSAID-5i: 15 aerial classes in 3 folds, GF-SAM's patches and split lists")

backbones = Registry("backbone")  # each name -> the factory that builds it: build_backbone(name, random_init, weights)
for _name in ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "resnet50", "resnet101", "clip-rn50",
              "clip-rn101", "clip-vit-b16"):
    backbones.register(_name, "fssbench.adapters.backbones:build_backbone",
                       described_at="fssbench.adapters.backbones:SPECS")

samplers = Registry("sampler")
samplers.register("hsnet-list", "fssbench.protocols.hsnet:sample_list_episodes",
                  "HSNet PASCAL rules: query = list line j mod len, supports drawn from the class's lines")
samplers.register("hsnet-coco", "fssbench.protocols.hsnet:sample_class_episodes",
                  "HSNet COCO rules: draw a fold class, then a query and supports among its images")
samplers.register("hsnet-fss", "fssbench.protocols.hsnet:sample_numbered_episodes",
                  "HSNet FSS-1000 rules: every test image is a query in turn, supports drawn from images 1..10")
samplers.register("patnet", "fssbench.protocols.hsnet:sample_round_robin_episodes",
                  "PATNet cross-domain rules: episode j takes class j mod n, then a random query and supports")
samplers.register("matcher-lvis", "fssbench.protocols.lvis:sample_lvis_episodes",
                  "Matcher LVIS-92i rules: PATNet's round robin over the fold classes of the dataset's shot")
samplers.register("diam", "fssbench.protocols.diam:sample_diam_manifest",
                  "DIaM generalized FSS rules: per run, K supports per novel class from the val list; all other images query")
samplers.register("pfenet", "fssbench.protocols.pfenet:sample_pfenet_episodes",
                  "PFENet rules: val-list queries (a fold class >= 2*32*32 px), class and supports drawn with Python random in the DataLoader workers")
samplers.register("panet", "fssbench.protocols.panet:sample_panet_episodes",
                  "PANet rules: runs seeded seed+r; per episode a fold class, then K+1 distinct images from its trainaug class list")
samplers.register("gfsam-list", "fssbench.protocols.hsnet:sample_each_entry_episodes",
                  "GF-SAM iSAID-5i rules: one episode per list line, supports drawn from the class's lines")

protocols = ProtocolRegistry([BUILTIN_SPEC_DIR])

tasks = Registry("task")  # a protocol's `task:` -> its strategy (fssbench.harness.task.Task)
tasks.register("fss", "fssbench.harness.fss:FssTask", "episodic few-shot segmentation (HSNet's metric)")
tasks.register("gfss", "fssbench.harness.gfss:GfssTask", "generalized FSS over background + base + novel (DIaM)")

# Commands that methods and datasets contribute: "GROUP NAME" -> a Typer command function, in a module
# that imports nothing heavy at import time. Plugins add theirs through the entry point group
# `fssbench.commands` (e.g. `"train mymethod" = "mypackage.cli:train"`).
commands = Registry("command", "fssbench.commands")
commands.register("train diffup", "fssbench.adapters.diffup.commands:train_diffup_command")
commands.register("train gfss-learner", "fssbench.adapters.gfss_learner.commands:train_gfss_learner_command")
commands.register("data prepare", "fssbench.protocols.commands:prepare_data_command")


def open_dataset(spec: ProtocolSpec, data_root: Path | None):
    """The reader of the protocol's dataset over `data_root` (None: the reader's default location)."""
    return datasets.get(spec.dataset).open(data_root)
