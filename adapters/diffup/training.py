"""Episodic training of the DiffUp decoder on a fold's base classes (paper sections 3.3.4 and 4.2).

Base classes of fold F are the classes of the other folds; their (image, class) pairs come from the
training split lists (`reader.split_list("trn", f)` for f != F, HSNet's layout). Each step draws a
batch of episodes (a query and `shot` other images of its class) and gives the whole batch one support
annotation, in turn mask, box, scribble and image-only, plus text when the backbone has a text tower
(the paper trains on all of them), builds the conditions with the frozen backbone and takes one Adam
step on L = L_diff + lambda_em L_em + lambda_iou L_iou (eq. 21): the MSE of the predicted noise (or
clean mask, by the config's `prediction`), the L1 error of the error
map against E_gt = x0 - x_t, and the L1 error of the IoU against IoU(x_t > 0, x0 > 0). Training
boxes are the tight box of the support's whole foreground (the evaluation protocols draw theirs from
instance maps, which not every training image has); scribbles are the protocols' own strokes.

Everything random in a step is drawn from generators seeded by (seed, step), so a resumed run takes
exactly the steps an uninterrupted one would. Checkpoints are written atomically every
`checkpoint_every` steps and at the end; the checkpoint is also what `--weights decoder=` loads.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fssbench.adapters.backbones import build_backbone
from fssbench.adapters.diffup.checkpoint import CHECKPOINTS, save_checkpoint
from fssbench.adapters.diffup.config import PRIOR_LAYERS, DiffUpConfig, resolve_config
from fssbench.adapters.diffup.diffusion import Diffusion
from fssbench.adapters.diffup.priors import Conditions, build_conditions, resize
from fssbench.adapters.diffup.unet import UQDD
from fssbench.adapters.training import restore, training_progress
from fssbench.harness.datasets import DatasetReader
from fssbench.harness.errors import DataError, UsageError
from fssbench.harness.loading import EpisodeLoader
from fssbench.harness.supports import annotate

VISUAL_ANNOTATIONS = ("mask", "box", "scribble", "none")


@dataclass
class TrainingBatch:
    query_images: torch.Tensor  # [B, 3, S, S] RGB in [0, 1]
    query_masks: torch.Tensor  # [B, S, S] 1 on the class
    support_images: torch.Tensor  # [B, K, 3, S, S]
    support_masks: torch.Tensor  # [B, K, S, S] the annotated foreground
    annotation: str
    class_names: list[str]


class FeatureCache:
    """The frozen backbone, keeping each image's features after their first computation (the same image
    view recurs across epochs). Images are keyed by a hash of their pixels; other attributes delegate."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        self.backbone = backbone
        self.features: dict[bytes, list[torch.Tensor]] = {}

    def __getattr__(self, name: str):
        return getattr(self.backbone, name)

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        keys = [hashlib.blake2b(image.cpu().numpy().tobytes(), digest_size=16).digest() for image in images]
        missing = {key: index for index, key in enumerate(keys) if key not in self.features}
        if missing:
            computed = self.backbone(images[list(missing.values())])
            for position, key in enumerate(missing):
                self.features[key] = [layer[position] for layer in computed]
        return [torch.stack([self.features[key][layer] for key in keys]) for layer in range(PRIOR_LAYERS)]


@dataclass
class Losses:
    total: torch.Tensor
    diffusion: torch.Tensor
    error: torch.Tensor
    iou: torch.Tensor


def base_class_images(reader: DatasetReader, fold: int, folds: Sequence[int], shot: int) -> dict[int, list[str]]:
    """Images of each base class of `fold` (classes with at least shot + 1 images, so supports differ
    from the query), from the training lists of the other folds."""
    if fold not in folds:
        raise UsageError(f"fold {fold} is not one of the protocol's folds {list(folds)}")
    images: dict[int, list[str]] = {}
    for other in folds:
        if other != fold:
            for image, class_id in reader.split_list("trn", other):
                images.setdefault(class_id, []).append(image)
    usable = {class_id: sorted(set(ids)) for class_id, ids in images.items() if len(set(ids)) > shot}
    if not usable:
        raise DataError(f"the training lists of dataset {reader.name!r} (folds other than {fold}) hold no class "
                        f"with {shot + 1} or more images; DiffUp trains on them")
    return usable


def training_annotation(kind: str, foreground: torch.Tensor, seed: tuple[int, ...]) -> torch.Tensor:
    """The annotated foreground [H, W] a support of `kind` gives, from its full mask."""
    if kind == "box":
        box = torch.zeros_like(foreground)
        rows, cols = torch.nonzero(foreground.any(dim=1)).flatten(), torch.nonzero(foreground.any(dim=0)).flatten()
        if len(rows):
            box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
        return box
    return annotate(kind, foreground, None, seed)[0]


def sample_batch(loader: EpisodeLoader, images: dict[int, list[str]], annotation: str, batch_size: int,
                 shot: int, seed: int, step: int) -> TrainingBatch:
    """`batch_size` episodes of random base classes: a query and `shot` other images of its class."""
    rng = np.random.default_rng([seed, step])
    classes = sorted(images)
    queries, query_masks, supports, support_masks, names = [], [], [], [], []
    for index in range(batch_size):
        class_id = classes[rng.integers(len(classes))]
        drawn = [_image_and_mask(loader, str(image), class_id)
                 for image in rng.choice(images[class_id], size=shot + 1, replace=False)]
        queries.append(drawn[0][0])
        query_masks.append(drawn[0][1])
        supports.append(torch.stack([image for image, _ in drawn[1:]]))
        support_masks.append(torch.stack([training_annotation(annotation, mask, (seed, step, index, k))
                                          for k, (_, mask) in enumerate(drawn[1:])]))
        names.append(loader.reader.class_names[class_id])
    return TrainingBatch(torch.stack(queries).float() / 255, torch.stack(query_masks).float(),
                         torch.stack(supports).float() / 255, torch.stack(support_masks).float(), annotation, names)


def _image_and_mask(loader: EpisodeLoader, image_id: str, class_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    image, label = loader.image_and_label(image_id)
    return image, loader.reader.foreground(label, class_id)


def mask_target(query_masks: torch.Tensor, size: int) -> torch.Tensor:
    """x0: the query mask at the mask size, -1 background and 1 foreground, [B, 1, M, M]."""
    return (resize(query_masks[:, None], size) > 0.5).float() * 2 - 1


def binary_iou(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """IoU per sample of boolean [B, 1, M, M] maps; 1 where both are empty."""
    inter = (prediction & truth).flatten(1).sum(1).float()
    union = (prediction | truth).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def diffup_losses(decoder: UQDD, diffusion: Diffusion, conditions: Conditions, x0: torch.Tensor,
                  t: torch.Tensor, noise: torch.Tensor) -> Losses:
    """Eq. 21 for clean masks x0 [B, 1, M, M] noised to timesteps t [B] with `noise`."""
    config = decoder.config
    x_t = diffusion.add_noise(x0, noise, t)
    prediction = decoder(x_t, t, decoder.prepare(conditions))
    diffusion_loss = F.mse_loss(prediction.output, diffusion.target(x0, noise))
    error_loss = F.l1_loss(prediction.quality.error, x0 - x_t)
    iou_loss = F.l1_loss(prediction.quality.iou, binary_iou(x_t > 0, x0 > 0))
    total = diffusion_loss + config.lambda_error * error_loss + config.lambda_iou * iou_loss
    return Losses(total, diffusion_loss, error_loss, iou_loss)


def step_noise(x0: torch.Tensor, timesteps: int, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The timesteps [B] and noise of a training step, drawn on the CPU (the same on every device)."""
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, 1]).generate_state(1)[0]))
    t = torch.randint(0, timesteps, (len(x0),), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    return t.to(x0.device), noise.to(x0.device)


def train_diffup(reader: DatasetReader, fold: int, folds: Sequence[int], backbone: str, out: Path,
                 config: str | DiffUpConfig = "paper", steps: int | None = None, seed: int = 0,
                 device: str = "auto", resume: bool = False, shot: int = 1,
                 backbone_weights: Path | None = None) -> Path:
    """Train the decoder for fold `fold` (held out) with `backbone` frozen; returns the checkpoint path.

    `steps` defaults to the config's epochs over the base classes' pairs. With `resume`, an existing
    checkpoint at `out` is continued (same backbone, config, fold, shot, seed, dataset); without it an
    existing `out` is refused.
    """
    from fssbench.harness.timing import resolve_device

    config = resolve_config(config)
    out = Path(out)
    run_device = resolve_device(device)
    images = base_class_images(reader, fold, folds, shot)
    pairs = sum(len(ids) for ids in images.values())
    total = steps if steps is not None else config.epochs * math.ceil(pairs / config.batch_size)
    identity = {"backbone": backbone, "config": config.to_dict(), "fold": fold, "shot": shot, "seed": seed,
                "dataset": reader.name}

    features = build_backbone(backbone, random_init=False, weights=backbone_weights).to(run_device)
    if config.cache_features:
        features = FeatureCache(features)
    torch.manual_seed(seed)  # the decoder's initial weights
    decoder = UQDD(config).to(run_device)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=config.learning_rate)
    start = restore(CHECKPOINTS, out, resume, identity, {"decoder": decoder}, optimizer)
    annotations = VISUAL_ANNOTATIONS + (("text",) if features.has_text_tower else ())
    loader = EpisodeLoader(reader, config.image_size, "mask", seed)
    diffusion = Diffusion(config.timesteps, config.prediction)

    def save(step: int) -> None:
        save_checkpoint(out, {**identity, "step": step, "steps": total, "decoder": decoder.state_dict(),
                              "optimizer": optimizer.state_dict()})

    decoder.train()
    with training_progress(f"diffup {backbone} fold {fold}", total, start) as advance:
        for step in range(start, total):
            annotation = annotations[step % len(annotations)]
            batch = sample_batch(loader, images, annotation, config.batch_size, shot, seed, step)
            losses = train_step(features, decoder, optimizer, diffusion, batch, seed, step, run_device)
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == total:
                save(step + 1)
            advance(losses.total.item())
    return out


def train_step(features: torch.nn.Module | FeatureCache, decoder: UQDD, optimizer: torch.optim.Optimizer,
               diffusion: Diffusion, batch: TrainingBatch, seed: int, step: int, device: torch.device) -> Losses:
    config = decoder.config
    with torch.no_grad():
        conditions = build_conditions(features, config, batch.query_images.to(device),
                                      batch.support_images.to(device), batch.support_masks.to(device),
                                      batch.annotation, batch.class_names)
    x0 = mask_target(batch.query_masks.to(device), config.mask_size)
    t, noise = step_noise(x0, config.timesteps, seed, step)
    losses = diffup_losses(decoder, diffusion, conditions, x0, t, noise)
    optimizer.zero_grad(set_to_none=True)
    losses.total.backward()
    optimizer.step()
    return losses
