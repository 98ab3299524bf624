"""Run records: everything needed to reproduce and compare a result, written as JSON."""

from __future__ import annotations

import json
import platform
import re
import secrets
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch

import fssbench
from fssbench.harness.files import atomic_write_text

RECORD_SCHEMA = 1


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id(method: str, protocol: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{method}-{protocol}-{secrets.token_hex(3)}"


def _git_sha() -> str | None:
    source = Path(fssbench.__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions() -> dict[str, str | None]:
    """Installed versions of fssbench's own dependencies (extras left out), None where one is missing."""
    def installed(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    try:
        requirements = metadata.requires("fssbench") or []
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return {}
    names = sorted({re.split(r"[\s<>=!~;\[(]", line, maxsplit=1)[0] for line in requirements if "extra ==" not in line})
    return {name: installed(name) for name in names}


def environment(device: torch.device) -> dict[str, Any]:
    on_cuda = device.type == "cuda"
    return {
        "fssbench": fssbench.__version__,
        "git_sha": _git_sha(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "cuda": torch.version.cuda if on_cuda else None,
        "cudnn": torch.backends.cudnn.version() if on_cuda else None,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if on_cuda else _cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "packages": package_versions(),
    }


def write_record(record: dict[str, Any], out_dir: Path) -> Path:
    """Write atomically to <out>/runs/<run_id>.json, so a crash never leaves half a record."""
    path = Path(out_dir) / "runs" / f"{record['run_id']}.json"
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path
