"""DiffUp checkpoints: one torch file holding the decoder, its config, the backbone it was trained with,
the training step and the optimizer state, loadable with `torch.load(..., weights_only=True)`."""

from __future__ import annotations

from typing import Any

from fssbench.adapters.diffup.config import DiffUpConfig
from fssbench.adapters.diffup.unet import UQDD
from fssbench.adapters.training import CheckpointKind

TRAIN_COMMAND = "`fssbench train diffup --protocol P --fold F --backbone B --out CKPT`"
CHECKPOINTS = CheckpointKind("DiffUp", "fssbench-diffup", 1, TRAIN_COMMAND)
save_checkpoint, load_checkpoint = CHECKPOINTS.save, CHECKPOINTS.load


def decoder_from(contents: dict[str, Any]) -> UQDD:
    decoder = UQDD(DiffUpConfig.from_dict(contents["config"]))
    decoder.load_state_dict(contents["decoder"])
    return decoder.eval()
