"""Training the learner on a fold's base classes (DIaM's base training), optionally with extra samples.

Base data of fold F: every image of the dataset's training split lists (`reader.split_list("trn", f)`
over all folds, HSNet's layout) that holds at least one pixel of a base class (a class of another
fold); pixels of F's novel classes are labelled background, as in DIaM's base training (images
holding only novel classes are left out, as DIaM's `make_dataset` over the base classes does). Images
are resized as the GFSS protocols resize them (long side to `image_size`, both sides floored to a
multiple of 8, top-left on a padded square; padding ignored).

Extra samples (`extra`, e.g. refined synthetic images of the novel classes) are (image, label) pairs
whose label maps follow the datasets' convention (class id + 1, 0 background, 255 ignored, so
Syn4Seg's free pixels are ignored). Each batch then draws round(batch_size * extra_ratio) of its
samples from them and the rest from the base data (0.5: the paper's balanced ratio); every class
they hold that is not a base class gets a classifier row of its own, after the base classes, so a
checkpoint trained this way labels those classes without registration.

A step: a batch drawn with a generator seeded by (seed, step), each sample flipped horizontally with
probability 1/2 (the frozen backbone's features are flipped, not recomputed), cross-entropy over
background + the trained classes on the head's stride-8 grid (the label maps resized to it by nearest
neighbour, ignored cells excluded; upsampling the logits to the full 417 canvas instead made a step
about 60 times dearer on a CPU for a per-pixel head, whose decisions are per grid cell anyway), one
AdamW step. Everything random in a step depends on (seed, step) only,
so a resumed run takes exactly the steps an uninterrupted one would; checkpoints are written
atomically every `checkpoint_every` steps and at the end.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fssbench.adapters.backbones import build_backbone
from fssbench.adapters.gfss_learner.checkpoint import CHECKPOINTS, save_checkpoint
from fssbench.adapters.gfss_learner.config import DEFAULT, GfssLearnerConfig
from fssbench.adapters.gfss_learner.model import GfssHead
from fssbench.adapters.training import restore, training_progress
from fssbench.harness.contract import IGNORE_LABEL, GfssLabelSpace
from fssbench.harness.datasets import DatasetReader
from fssbench.harness.errors import DataError, UsageError
from fssbench.harness.gfss import label_indices
from fssbench.harness.loading import PADDING, EpisodeLoader, pad_size


@dataclass(frozen=True)
class TrainingSample:
    """An (image, label) pair besides the dataset's: `image` uint8 RGB [3, H, W], `label` [H, W] integer
    in the datasets' convention (class id + 1, 0 background, 255 ignored); `name` says where it is from."""

    image: torch.Tensor
    label: torch.Tensor
    name: str


def fit_sample(sample: TrainingSample, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample resized as EpisodeLoader's "pad" mode does: image [3, S, S] uint8, label [S, S] int16 with
    PADDING outside the image."""
    image, label = sample.image, sample.label
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3 or label.shape != image.shape[1:]:
        raise DataError(f"extra training sample {sample.name}: expected a uint8 image [3, H, W] and a label "
                        f"[H, W], got {tuple(image.shape)} {image.dtype} and {tuple(label.shape)}")
    height, width = pad_size(*label.shape, size)
    resized = F.interpolate(image[None].float(), (height, width), mode="bilinear", align_corners=False)[0]
    canvas = torch.zeros(3, size, size, dtype=torch.uint8)
    canvas[:, :height, :width] = resized.round().clamp(0, 255).to(torch.uint8)
    labels = torch.full((size, size), PADDING, dtype=torch.int16)
    labels[:height, :width] = F.interpolate(label[None, None].float(), (height, width), mode="nearest")[0, 0]
    return canvas, labels


def base_training_images(loader: EpisodeLoader, fold: int, folds: Sequence[int]) -> tuple[list[int], list[str]]:
    """The fold's base classes and the training images holding at least one of their pixels."""
    reader = loader.reader
    if fold not in folds:
        raise UsageError(f"fold {fold} is not one of the protocol's folds {list(folds)}")
    novel = set(reader.fold_classes(fold))
    base = [class_id for class_id in range(len(reader.class_names)) if class_id not in novel]
    listed = dict.fromkeys(image for f in folds for image, _ in reader.split_list("trn", f))
    wanted = torch.tensor([class_id + 1 for class_id in base])
    images = [image for image in listed if torch.isin(loader.image_and_label(image)[1].long(), wanted).any()]
    if not images:
        raise DataError(f"the training lists of dataset {reader.name!r} hold no image of a base class of fold "
                        f"{fold}; the learner trains on them")
    return base, images


def extra_classes(extra: Sequence[TrainingSample], base: list[int], class_count: int) -> list[int]:
    """Classes of the extra samples that are not base classes, ascending; refuses unknown label values."""
    values = set()
    for sample in extra:
        present = set(torch.unique(sample.label).tolist()) - {0, IGNORE_LABEL}
        unknown = sorted(v for v in present if not 1 <= v <= class_count)
        if unknown:
            raise DataError(f"extra training sample {sample.name}: label values {unknown} are no class id + 1 of the "
                            f"dataset (1..{class_count}), background 0 or ignored 255")
        values |= present
    return sorted(v - 1 for v in values if v - 1 not in base)


def samples_sha256(extra: Sequence[TrainingSample]) -> str | None:
    if not extra:
        return None
    digest = hashlib.sha256()
    for sample in extra:
        for tensor in (sample.image, sample.label):
            digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
            digest.update(tensor.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


FeatureCache = dict  # (backbone, image size, image id or sample sha256) -> the backbone's layers of the image


class TrainingData:
    """Base images and extra samples as training targets, with the frozen backbone's features (kept in
    `cache` when the config says so, each computed alone so that values never depend on a batch)."""

    def __init__(self, loader: EpisodeLoader, base_images: list[str], extra: Sequence[TrainingSample],
                 space: GfssLabelSpace, backbone: torch.nn.Module, backbone_name: str, config: GfssLearnerConfig,
                 device: torch.device, cache: FeatureCache | None) -> None:
        self.loader, self.base_images, self.space = loader, base_images, space
        self.extra = [fit_sample(sample, config.image_size) for sample in extra]
        self.extra_keys = [samples_sha256([sample]) for sample in extra]
        self.backbone, self.device = backbone, device
        self.key_prefix = (backbone_name, config.image_size)
        self.cache = (cache if cache is not None else {}) if config.cache_features else None

    def item(self, source: str, index: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Backbone layers (each [1, C, h, w]) and label indices [S, S] of one sample."""
        if source == "base":
            image, label = self.loader.image_and_label(self.base_images[index])
            key = (*self.key_prefix, self.base_images[index])
        else:
            image, label = self.extra[index]
            key = (*self.key_prefix, self.extra_keys[index])
        layers = self.cache.get(key) if self.cache is not None else None
        if layers is None:
            with torch.no_grad():
                layers = self.backbone(image[None].to(self.device).float().div_(255))
            if self.cache is not None:
                self.cache[key] = layers
        target = label_indices(self.loader, label, self.space)
        if source == "base":  # DIaM's base training: a class the extra samples add is background in base images
            target = torch.where((target > len(self.space.base)) & (target != IGNORE_LABEL), 0, target)
        return layers, target

    def batch(self, draws: list[tuple[str, int]], flips: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor]:
        items = [self.item(source, index) for source, index in draws]
        layers = [torch.cat([(layer[l].flip(-1) if flip else layer[l]) for (layer, _), flip in zip(items, flips)])
                  for l in range(len(items[0][0]))]
        targets = torch.stack([(target.flip(-1) if flip else target) for (_, target), flip in zip(items, flips)])
        return layers, targets.to(self.device)


def draw_batch(seed: int, step: int, batch_size: int, base_count: int, extra_count: int,
               extra_ratio: float) -> tuple[list[tuple[str, int]], np.ndarray]:
    """The samples of a step (base first, then extra) and which of them are flipped."""
    rng = np.random.default_rng([seed, step])
    from_extra = round(batch_size * extra_ratio) if extra_count else 0
    draws = [("base", int(i)) for i in rng.integers(base_count, size=batch_size - from_extra)]
    draws += [("extra", int(i)) for i in rng.integers(extra_count, size=from_extra)] if from_extra else []
    return draws, rng.random(batch_size) < 0.5


def train_gfss_learner(reader: DatasetReader, fold: int, folds: Sequence[int], backbone: str, out: Path,
                       config: GfssLearnerConfig = DEFAULT, steps: int | None = None, seed: int = 0,
                       device: str = "auto", resume: bool = False, backbone_weights: Path | None = None,
                       extra: Sequence[TrainingSample] = (), extra_ratio: float = 0.5,
                       feature_cache: FeatureCache | None = None) -> Path:
    """Train the head for fold `fold` (its classes held out) with `backbone` frozen; returns the checkpoint.

    With `resume`, an existing checkpoint at `out` is continued (same backbone, config, fold, seed,
    dataset, classes and extra samples); without it an existing `out` is refused. `feature_cache`, a
    dict the caller keeps, shares the backbone's features of the same images across trainings (the
    folds of a dataset, or a base-only and a base + synthetic training).
    """
    from fssbench.harness.timing import resolve_device

    if not 0 <= extra_ratio < 1 or (extra and round(config.batch_size * extra_ratio) == 0):
        raise UsageError(f"extra_ratio={extra_ratio}: must lie in [0, 1) and give at least one extra sample in a "
                         f"batch of {config.batch_size}")
    out = Path(out)
    run_device = resolve_device(device)
    total = steps if steps is not None else config.steps
    loader = EpisodeLoader(reader, config.image_size, "mask", seed, mode="pad")
    base, base_images = base_training_images(loader, fold, folds)
    added = extra_classes(extra, base, len(reader.class_names))
    names = reader.class_names
    space = GfssLabelSpace(base, added, ["background"] + [names[c] for c in base + added])
    identity = {"backbone": backbone, "config": config.to_dict(), "fold": fold, "seed": seed, "dataset": reader.name,
                "base": base, "classes": base + added, "extra_sha256": samples_sha256(extra),
                "extra_ratio": extra_ratio if extra else None}

    features = build_backbone(backbone, random_init=False, weights=backbone_weights).to(run_device)
    torch.manual_seed(seed)  # the head's initial weights
    head = GfssHead(sum(features.channels), space.size, config).to(run_device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    start = restore(CHECKPOINTS, out, resume, identity, {"head": head}, optimizer)
    data = TrainingData(loader, base_images, extra, space, features, backbone, config, run_device, feature_cache)

    def save(step: int) -> None:
        save_checkpoint(out, {**identity, "step": step, "steps": total, "head": head.state_dict(),
                              "optimizer": optimizer.state_dict()})

    head.train()
    with training_progress(f"gfss-learner {backbone} fold {fold}", total, start) as advance:
        for step in range(start, total):
            draws, flips = draw_batch(seed, step, config.batch_size, len(base_images), len(data.extra), extra_ratio)
            loss = train_step(head, optimizer, *data.batch(draws, flips))
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == total:
                save(step + 1)
            advance(loss)
    return out


def train_step(head: GfssHead, optimizer: torch.optim.Optimizer, layers: list[torch.Tensor],
               targets: torch.Tensor) -> float:
    logits = head.logits(head.embedding(layers))
    targets = F.interpolate(targets[:, None].float(), logits.shape[-2:], mode="nearest")[:, 0].long()
    loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_LABEL)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()
