"""Shared fixtures: an isolated fssbench cache (the demo dataset is generated once per session into
it), no network, registries reset after every test, and an in-process CLI runner."""

from __future__ import annotations

import copy
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("fssbench-cache")
    previous = os.environ.get("FSSBENCH_CACHE")
    os.environ["FSSBENCH_CACHE"] = str(cache)
    os.environ.pop("FSSBENCH_DATA", None)
    yield cache
    if previous is None:
        os.environ.pop("FSSBENCH_CACHE", None)
    else:
        os.environ["FSSBENCH_CACHE"] = previous


REGISTRY_TABLES = ("_entries", "_loaded", "_plugins_scanned", "_paths")  # Registry's and ProtocolRegistry's


@pytest.fixture(autouse=True)
def reset_registries():
    """Whatever a test registers in fssbench.registry (methods, datasets, samplers, backbones,
    protocols) is gone after it: every registry's tables are snapshotted before and restored after."""
    from fssbench import registry

    saved = [(table, {name: copy.copy(getattr(table, name)) for name in REGISTRY_TABLES if hasattr(table, name)})
             for table in vars(registry).values() if isinstance(table, (registry.Registry, registry.ProtocolRegistry))]
    yield
    for table, state in saved:
        with table._lock:
            for name, value in state.items():
                setattr(table, name, value)


@pytest.fixture(scope="session")
def demo_reader(isolated_cache):
    from fssbench.protocols.demo import DemoDataset

    return DemoDataset.open(None)


@pytest.fixture
def demo_copy(demo_reader, tmp_path) -> Path:
    """A private data root holding a copy of the demo dataset (tests may damage it)."""
    shutil.copytree(demo_reader.root, tmp_path / "data" / demo_reader.root.name.replace("demo-v", "fssbench-demo-v"))
    return tmp_path / "data"


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `fssbench ARGS...` in this process; returns its exit code, stdout and stderr."""
    from fssbench.cli import main

    def run(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["fssbench", *args])
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main()
        captured = capsys.readouterr()
        return CliResult(exited.value.code, captured.out, captured.err)

    return run
