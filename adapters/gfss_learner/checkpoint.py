"""gfss-learner checkpoints: one torch file holding the head, its config, the backbone it was trained on,
the classes of its classifier, the training step and the optimizer state, loadable with
`torch.load(..., weights_only=True)`."""

from __future__ import annotations

from typing import Any

from fssbench.adapters.gfss_learner.config import GfssLearnerConfig
from fssbench.adapters.gfss_learner.model import GfssHead
from fssbench.adapters.training import CheckpointKind

TRAIN_COMMAND = "`fssbench train gfss-learner --protocol P --fold F --out DIR/foldF.pt`"
# version 2: the training loss on the stride-8 grid (1: on the upsampled logits)
CHECKPOINTS = CheckpointKind("gfss-learner", "fssbench-gfss-learner", 2, TRAIN_COMMAND)
save_checkpoint, load_checkpoint = CHECKPOINTS.save, CHECKPOINTS.load


def head_from(contents: dict[str, Any]) -> GfssHead:
    """The trained head: its classifier rows are background, then `contents["classes"]` in order."""
    state = contents["head"]
    head = GfssHead(state["embed.0.weight"].shape[1], len(contents["classes"]) + 1,
                    GfssLearnerConfig.from_dict(contents["config"]))
    head.load_state_dict(state)
    return head.eval()
