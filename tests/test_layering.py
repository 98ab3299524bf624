"""The layering is a contract, checked by import-linter (configured in pyproject.toml): the core
(harness) imports nothing above it; adapters, protocols and reports import the registry and the core,
never each other; only the CLI imports everything."""

import shutil
import sys
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_the_layers_contract_is_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def test_a_core_module_importing_a_report_breaks_the_contract(tmp_path, monkeypatch):
    """The check can fail: the same contract over a copy of the tree with one forbidden import."""
    copy = tmp_path / "fssbench"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv*", "tests", "__pycache__", "*.egg-info"))
    runner = copy / "harness" / "runner.py"
    runner.write_text("import fssbench.reports.console  # noqa: F401\n" + runner.read_text())
    monkeypatch.chdir(copy)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [module for module in sys.modules if module == "fssbench" or module.startswith("fssbench.")]:
        monkeypatch.delitem(sys.modules, name)
    assert lint_imports(config_filename=str(copy / "pyproject.toml"), no_cache=True, no_logo=True) == 1
