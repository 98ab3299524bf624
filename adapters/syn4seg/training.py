"""Training Syn4Seg's final segmenter: the learner's head on the fold's base data + the refined synthetic
set in a balanced ratio (the paper trains Mask2Former on the mix; here the GFSS learner's head).

Starting point: the base checkpoint's head (embedding and trained rows), with one classifier row per novel
class initialised from the learner's registration on the run's supports (imprinted and calibrated), so the
classifier covers the run's whole label space in its order (background, base, novel). Then `steps`
AdamW steps of the learner's own recipe (gfss_learner.training: its batches, flips, loss, learning rate)
with round(batch_size * ratio) synthetic samples per batch. Base images are labelled as in DIaM's base
training: their novel-class pixels count as background, whatever the extra samples hold (the annotations
of novel classes in base images are never used). Synthetic label maps carry FREE (255) as ignored.

The trained head is a gfss-learner checkpoint (also loadable with `--method gfss-learner --weights head=`)
kept under `<fssbench cache>/syn4seg/heads/`, named by the sha256 of everything it depends on (base
checkpoint, the synthetic samples and their labels, the initial rows, steps, ratio, seed), so a resumed
or repeated run loads it instead of training again.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from fssbench.adapters.gfss_learner.checkpoint import head_from, load_checkpoint, save_checkpoint
from fssbench.adapters.gfss_learner.config import GfssLearnerConfig
from fssbench.adapters.gfss_learner.model import GfssHead
from fssbench.adapters.gfss_learner.training import (FeatureCache, TrainingData, TrainingSample, base_training_images,
                                                     draw_batch, samples_sha256, train_step)
from fssbench.harness.cache import cache_dir
from fssbench.harness.contract import GfssLabelSpace
from fssbench.harness.datasets import DatasetReader
from fssbench.harness.errors import UsageError
from fssbench.harness.image_sources import canonical_sha256, tensor_sha256
from fssbench.harness.journal import RunWarning
from fssbench.harness.loading import EpisodeLoader


def fold_of(reader: DatasetReader, folds: Sequence[int], space: GfssLabelSpace) -> int:
    for fold in folds:
        if sorted(reader.fold_classes(fold)) == sorted(space.novel):
            return fold
    raise UsageError(f"no fold of the protocol ({list(folds)}) has the novel classes {space.novel}")


def head_key(base: dict[str, Any], samples: Sequence[TrainingSample], rows: torch.Tensor, options: dict[str, Any],
             seed: int) -> str:
    return canonical_sha256({"kind": "syn4seg-head", "version": 1, "base": base, "samples": samples_sha256(samples),
                             "rows": tensor_sha256(rows), "steps": int(options["train_steps"]),
                             "ratio": float(options["ratio"]), "seed": seed})


def head_path(key: str) -> Path:
    return cache_dir() / "syn4seg" / "heads" / key[:2] / f"{key}.pt"


def cached_head(key: str) -> GfssHead | None:
    path = head_path(key)
    if not path.is_file():
        return None
    try:
        return head_from(load_checkpoint(path))
    except UsageError as exc:  # a damaged cache entry is trained again, never used
        warnings.warn(f"syn4seg head cache: {exc}; training it again", RunWarning)
        return None


def train_final_head(reader: DatasetReader, folds: Sequence[int], space: GfssLabelSpace, base_head: GfssHead,
                     config: GfssLearnerConfig, novel_rows: torch.Tensor, samples: Sequence[TrainingSample],
                     backbone: torch.nn.Module, backbone_name: str, options: dict[str, Any], seed: int,
                     device: torch.device, key: str, cache: FeatureCache) -> GfssHead:
    """Train (with grad enabled: the harness adapts in inference mode) and store the head under `key`."""
    fold = fold_of(reader, folds, space)
    loader = EpisodeLoader(reader, config.image_size, "mask", seed, mode="pad")
    base_classes, base_images = base_training_images(loader, fold, folds)
    if base_classes != list(space.base):
        raise UsageError(f"the base checkpoint's fold {fold} has base classes {base_classes}, the run {space.base}")
    head = GfssHead(base_head.embed[0].in_channels, space.size, config).to(device)
    with torch.no_grad():
        head.embed.load_state_dict(base_head.embed.state_dict())
        head.classifier.copy_(torch.cat([base_head.classifier.detach(), novel_rows.detach()]))
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    data = TrainingData(loader, base_images, samples, space, backbone, backbone_name, config, device, cache)
    head.train()
    steps, ratio = int(options["train_steps"]), float(options["ratio"])
    for step in range(steps):
        draws, flips = draw_batch(seed, step, config.batch_size, len(base_images), len(data.extra), ratio)
        train_step(head, optimizer, *data.batch(draws, flips))
    head.eval()
    save_checkpoint(head_path(key), {"config": config.to_dict(), "backbone": backbone_name, "fold": fold,
                                     "seed": seed, "dataset": reader.name, "base": list(space.base),
                                     "classes": list(space.base) + list(space.novel), "step": steps, "steps": steps,
                                     "head": head.state_dict(), "syn4seg_key": key})
    return head
