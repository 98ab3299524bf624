"""Where fssbench keeps what it can rebuild: manifests and the generated demo dataset."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$FSSBENCH_CACHE, else $XDG_CACHE_HOME/fssbench, else ~/.cache/fssbench."""
    if os.environ.get("FSSBENCH_CACHE"):
        return Path(os.environ["FSSBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fssbench"
