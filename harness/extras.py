"""Optional dependencies: a method's heavy library comes with an extra (`pip install 'fssbench[NAME]'`)
and is imported when the method runs. `require` imports it or stops with a usage error naming the extra."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from fssbench.harness.errors import UsageError

# the import name of each optional library -> its distribution on PyPI
DISTRIBUTIONS: dict[str, str] = {
    "diffusers": "diffusers",
    "transformers": "transformers",
    "segment_anything": "segment-anything",
    "pycocotools": "pycocotools",
    "ray": "ray",
    "submitit": "submitit",
    "matplotlib": "matplotlib",
    "jinja2": "jinja2",
}


def require(module: str, purpose: str, extra: str) -> ModuleType:
    """Import `module` for `purpose` (e.g. "DiffewS"), or name the extra that installs it (e.g. "diffews")."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.partition(".")[0]
        if (exc.name or "").partition(".")[0] != top:  # the library is there but one of its own imports failed
            raise
        raise UsageError(f"{purpose} needs {DISTRIBUTIONS.get(top, top)}, which is not installed: "
                         f"pip install 'fssbench[{extra}]' (or 'fssbench[all]')") from None


def missing(modules: list[str]) -> list[str]:
    """The distributions of `modules` that are not installed, found without importing anything."""
    return [DISTRIBUTIONS.get(m, m) for m in modules if importlib.util.find_spec(m) is None]
