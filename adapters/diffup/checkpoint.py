"""DiffUp checkpoints: one torch file holding the decoder, its config, the backbone it was trained with,
the training step and the optimizer state, loadable with `torch.load(..., weights_only=True)`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fssbench.adapters.diffup.config import DiffUpConfig
from fssbench.adapters.diffup.unet import UQDD
from fssbench.harness.errors import UsageError
from fssbench.harness.files import atomic_write

CHECKPOINT_FORMAT = "fssbench-diffup"
CHECKPOINT_VERSION = 1
TRAIN_COMMAND = "`fssbench train diffup --protocol P --fold F --backbone B --out CKPT`"
TRAIN_HINT = f"write one with {TRAIN_COMMAND}"


def save_checkpoint(path: Path, contents: dict[str, Any]) -> None:
    """Write atomically, so an interrupted save leaves the previous checkpoint intact."""
    atomic_write(path, lambda staging: torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                                                   **contents}, staging))


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a wrong or damaged file fails in many ways
        raise UsageError(f"{path} is not a DiffUp checkpoint loadable with weights_only=True ({exc}); "
                         f"{TRAIN_HINT}") from None
    if not isinstance(contents, dict) or contents.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"{path} is not a DiffUp checkpoint; {TRAIN_HINT}")
    if contents.get("version") != CHECKPOINT_VERSION:
        raise UsageError(f"{path} is a DiffUp checkpoint of version {contents.get('version')}, this fssbench "
                         f"reads version {CHECKPOINT_VERSION}; {TRAIN_HINT}")
    return contents


def decoder_from(contents: dict[str, Any]) -> UQDD:
    decoder = UQDD(DiffUpConfig.from_dict(contents["config"]))
    decoder.load_state_dict(contents["decoder"])
    return decoder.eval()
