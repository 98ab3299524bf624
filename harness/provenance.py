"""The code that computes a run's predictions, as part of the run's identity and record.

A built-in or local adapter is named by the sha256 of its source files: the module that defines it and
every fssbench.adapters module it imports, found by reading the imports (`ast`), never by what a process
happened to import before. An adapter from an installed distribution (a plugin) is named by the
distribution's name, version and the sha256 of its RECORD file. fssbench's own version goes with it.
Changing an adapter's code therefore starts a new run instead of resuming the old one's journal.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from importlib import metadata
from pathlib import Path

import fssbench

OWN_ADAPTERS = "fssbench.adapters"


def code_identity(adapter_class: type) -> dict[str, str]:
    """{"fssbench": version, "adapter": what computes the predictions} for the record and the run key. A
    composed adapter (aligndiff+X) names every module it is made of in `code_modules`: each is identified."""
    modules = getattr(adapter_class, "code_modules", (adapter_class.__module__,))
    return {"fssbench": fssbench.__version__, "adapter": " + ".join(module_identity(module) for module in modules)}


def module_identity(module: str) -> str:
    distribution = _distribution(module)
    if distribution is not None:
        record = distribution.read_text("RECORD") or ""
        adapter = (f"{distribution.metadata['Name']} {distribution.version} "
                   f"(RECORD sha256 {hashlib.sha256(record.encode()).hexdigest()[:16]})")
    else:
        digest = hashlib.sha256()
        for path in sorted(source_files(module)):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        adapter = f"{module} (source sha256 {digest.hexdigest()[:16]})"
    return adapter


def source_files(module: str) -> set[Path]:
    """The file of `module` and of every fssbench.adapters module it imports, transitively."""
    files: set[Path] = set()
    pending, seen = [module], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):  # `from module import name`: the name is no module
            continue
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        path = Path(spec.origin)
        files.add(path)
        pending += [imported for imported in _imports(path, name) if imported.startswith(OWN_ADAPTERS + ".")]
    return files


def _imports(path: Path, module: str) -> list[str]:
    names = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


def _distribution(module: str) -> metadata.Distribution | None:
    """The installed distribution that provides `module`, unless it is fssbench itself."""
    top = module.partition(".")[0]
    names = metadata.packages_distributions().get(top, [])
    if not names or top == "fssbench":
        return None
    return metadata.distribution(names[0])
