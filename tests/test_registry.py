"""The registry: lazy placeholders, did-you-mean errors and entry-point plugins."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fssbench.harness.errors import FssbenchError, UsageError
from fssbench.registry import BUILTIN_SPEC_DIR, ProtocolRegistry, Registry

PLUGIN_MODULE = '''
from pathlib import Path

import typer

from fssbench.harness.contract import FssAdapter

SPECS = Path(__file__).parent / "plugin_specs"


class EmptyAdapter(FssAdapter):
    description = "predicts background everywhere"

    def setup(self, context):
        pass

    def predict(self, batch):
        return batch.query_images[:, 0] * 0


def train(steps: int = typer.Option(1, "--steps")) -> None:
    """Train the empty method (a command contributed through the fssbench.commands hook)."""
    print(f"trained empty for {steps} steps")
'''

PLUGIN_SPEC = """\
include: {base}
name: plugin-demo
description: a protocol contributed by a plugin
shot: 1
"""


def make_plugin_site(root: Path) -> Path:
    """A folder that importlib.metadata sees as an installed distribution with entry points."""
    site = root / "site"
    (site / "plugin_specs").mkdir(parents=True)
    (site / "fake_plugin.py").write_text(PLUGIN_MODULE)
    (site / "broken_plugin.py").write_text("import a_module_that_does_not_exist\n")
    (site / "plugin_specs" / "plugin-demo.yaml").write_text(PLUGIN_SPEC.format(base=BUILTIN_SPEC_DIR / "_demo.yaml"))
    info = site / "fake_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[fssbench.adapters]\nempty = fake_plugin:EmptyAdapter\nbroken = broken_plugin:Adapter\n\n"
        "[fssbench.protocols]\nplugin-demo = fake_plugin:SPECS\n\n"
        "[fssbench.commands]\ntrain empty = fake_plugin:train\n")
    return site


def test_did_you_mean_and_the_list_of_known_names():
    registry = Registry("method")
    registry.register("protonet", "x:y", "")
    registry.register("oracle", "x:z", "")
    with pytest.raises(UsageError) as error:
        registry.get("protonte")
    assert "Did you mean 'protonet'?" in str(error.value) and "oracle" in str(error.value)
    assert error.value.exit_code == 2


def test_placeholders_are_imported_only_when_used():
    registry = Registry("thing")
    registry.register("json", "json:dumps", "")
    registry.register("missing", "no_such_module_here:x", "")
    assert registry.names() == ["json", "missing"]
    import json

    assert registry.get("json") is json.dumps
    with pytest.raises(FssbenchError, match="no_such_module_here"):
        registry.get("missing")


def test_the_same_name_from_two_places_is_an_error():
    registry = Registry("method")
    registry.register("a", "m:A", "")
    with pytest.raises(FssbenchError, match="defined twice"):
        registry.register("a", "other:A", "", origin="plugin x")


def test_plugins_are_discovered_and_a_broken_one_fails_loudly(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(make_plugin_site(tmp_path)))
    methods = Registry("method", "fssbench.adapters")
    entry = methods.entry("empty")
    assert entry.origin == "plugin fake-plugin 1.0"
    assert entry.description == "predicts background everywhere"  # read from the class, not imported
    assert "fake_plugin" not in sys.modules
    assert methods.get("empty").__name__ == "EmptyAdapter"
    with pytest.raises(FssbenchError, match=r"method 'broken' \(plugin fake-plugin 1.0\).*a_module_that_does_not_exist"):
        methods.get("broken")
    protocols = ProtocolRegistry([BUILTIN_SPEC_DIR])
    assert "plugin-demo" in protocols.names() and "demo-1shot" in protocols.names()
    assert protocols.get("plugin-demo").shot == 1


@pytest.mark.slow
def test_a_plugin_runs_end_to_end_through_the_cli(tmp_path):
    site = make_plugin_site(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(site)}
    listed = subprocess.run([sys.executable, "-m", "fssbench", "list", "methods"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert "empty" in listed.stdout and "fake-plugin" in listed.stdout
    run = subprocess.run([sys.executable, "-m", "fssbench", "eval", "-m", "empty", "-p", "plugin-demo", "--fold", "0",
                          "--episodes", "3", "--device", "cpu", "--json", "--out", str(tmp_path / "out")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert '"miou": 0.0' in run.stdout
    trained = subprocess.run([sys.executable, "-m", "fssbench", "train", "empty", "--steps", "3"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert trained.returncode == 0 and trained.stdout == "trained empty for 3 steps\n", trained.stderr


@pytest.mark.slow
def test_help_and_list_import_no_torch():
    code = ("import sys\nfrom fssbench.cli import app\n"
            "for args in (['--help'], ['list', 'methods'], ['list', 'protocols']):\n"
            "    try:\n        app(args)\n    except SystemExit:\n        pass\n"
            "heavy = [m for m in ('torch', 'diffusers', 'segment_anything', 'transformers') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_registered_backbones_are_the_ones_the_factory_builds():
    from fssbench import registry
    from fssbench.adapters.backbones import BACKBONES

    assert registry.backbones.names() == sorted(BACKBONES)
    assert all(registry.backbones.entry(name).description == BACKBONES[name] for name in BACKBONES)
