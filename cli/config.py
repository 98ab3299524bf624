"""Defaults that do not depend on the current directory: environment variables and a config file.

Precedence: a command-line flag, then the environment variable, then the config file, then the built-in
default. The config file is the nearest `fssbench.toml` in the current folder or a parent (top-level
keys), or the nearest `pyproject.toml` with a `[tool.fssbench]` table; relative paths in it are relative
to the file's folder:

    results = "~/fssbench-results"    # FSSBENCH_RESULTS: --out of eval/upgrade, --results of the readers
    data_root = "/datasets"           # FSSBENCH_DATA: --data-root
    device = "cuda"                   # FSSBENCH_DEVICE: --device

The file's values reach every command as environment defaults (`apply_config_file`, called once per
process before the command parses its flags), so a variable that is set wins over the file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fssbench.harness.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover  (Python 3.10)
    import tomli as tomllib

CONFIG_FILE = "fssbench.toml"
# config key -> (environment variable, whether the value is a path)
SETTINGS = {"results": ("FSSBENCH_RESULTS", True), "data_root": ("FSSBENCH_DATA", True),
            "device": ("FSSBENCH_DEVICE", False)}
DEFAULT_RESULTS = "fssbench-results"


def find_config_file(start: Path) -> tuple[Path, dict] | None:
    """The nearest config file at or above `start` and its fssbench settings."""
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return candidate, _read(candidate)
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            table = _read(pyproject).get("tool", {}).get("fssbench")
            if table is not None:
                return pyproject, table
    return None


def _read(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"config file {path}: {exc}") from None


def config_settings(start: Path | None = None) -> dict[str, str]:
    """The config file's settings as environment values ({variable: value}), paths made absolute."""
    found = find_config_file((start or Path.cwd()).absolute())
    if found is None:
        return {}
    path, table = found
    settings = {}
    for key, value in table.items():
        if key not in SETTINGS:
            raise UsageError(f"config file {path}: unknown key {key!r} (known: {', '.join(SETTINGS)})")
        if not isinstance(value, str):
            raise UsageError(f"config file {path}: {key} = {value!r} must be a string")
        variable, is_path = SETTINGS[key]
        settings[variable] = str(path.parent / Path(value).expanduser()) if is_path else value
    return settings


def apply_config_file(start: Path | None = None) -> None:
    """Make the config file's settings the environment's defaults (a variable already set wins)."""
    for variable, value in config_settings(start).items():
        os.environ.setdefault(variable, value)


def default_results() -> Path:
    """Where results go when no --out/--results is given: $FSSBENCH_RESULTS or ./fssbench-results, absolute."""
    return Path(os.environ.get("FSSBENCH_RESULTS") or DEFAULT_RESULTS).expanduser().absolute()


def default_data_root() -> Path | None:
    value = os.environ.get("FSSBENCH_DATA")
    return Path(value).expanduser().absolute() if value else None


def default_device() -> str:
    return os.environ.get("FSSBENCH_DEVICE") or "auto"
