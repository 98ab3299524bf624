"""gfss-learner checkpoints: one torch file holding the head, its config, the backbone it was trained on,
the classes of its classifier, the training step and the optimizer state, loadable with
`torch.load(..., weights_only=True)`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fssbench.adapters.gfss_learner.config import GfssLearnerConfig
from fssbench.adapters.gfss_learner.model import GfssHead
from fssbench.harness.errors import UsageError
from fssbench.harness.files import atomic_write

CHECKPOINT_FORMAT = "fssbench-gfss-learner"
CHECKPOINT_VERSION = 2  # 2: the training loss on the stride-8 grid (1: on the upsampled logits)
TRAIN_COMMAND = "`fssbench train gfss-learner --protocol P --fold F --out DIR/foldF.pt`"
TRAIN_HINT = f"write one with {TRAIN_COMMAND}"


def save_checkpoint(path: Path, contents: dict[str, Any]) -> None:
    """Write atomically, so an interrupted save leaves the previous checkpoint intact."""
    atomic_write(path, lambda staging: torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                                                   **contents}, staging))


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a wrong or damaged file fails in many ways
        raise UsageError(f"{path} is not a gfss-learner checkpoint loadable with weights_only=True ({exc}); "
                         f"{TRAIN_HINT}") from None
    if not isinstance(contents, dict) or contents.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"{path} is not a gfss-learner checkpoint; {TRAIN_HINT}")
    if contents.get("version") != CHECKPOINT_VERSION:
        raise UsageError(f"{path} is a gfss-learner checkpoint of version {contents.get('version')}, this fssbench "
                         f"reads version {CHECKPOINT_VERSION}; {TRAIN_HINT}")
    return contents


def head_from(contents: dict[str, Any]) -> GfssHead:
    """The trained head: its classifier rows are background, then `contents["classes"]` in order."""
    state = contents["head"]
    head = GfssHead(state["embed.0.weight"].shape[1], len(contents["classes"]) + 1,
                    GfssLearnerConfig.from_dict(contents["config"]))
    head.load_state_dict(state)
    return head.eval()
