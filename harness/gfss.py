"""The generalized FSS loop of one fold: per run, adapt once to the novel classes' supports, then
label every query image over background + base + novel classes and score it with a confusion matrix."""

from __future__ import annotations

from typing import Callable

import torch

from fssbench.harness.contract import IGNORE_INDEX, Adapter, GfssLabelSpace, GfssSupportSet
from fssbench.harness.datasets import DatasetReader
from fssbench.harness.episodes import GfssRun
from fssbench.harness.errors import DataError, PredictionError
from fssbench.harness.gfss_metrics import SparseConfusion, query_confusion
from fssbench.harness.loading import EpisodeLoader
from fssbench.harness.timing import now, synchronize


def label_space(reader: DatasetReader, fold: int) -> GfssLabelSpace:
    """DIaM's label order: background, the base classes ascending, the fold's novel classes ascending."""
    names = reader.class_names
    novel = sorted(reader.fold_classes(fold))
    base = [class_id for class_id in range(len(names)) if class_id not in novel]
    return GfssLabelSpace(base, novel, ["background"] + [names[c] for c in base + novel])


def label_indices(loader: EpisodeLoader, label: torch.Tensor, space: GfssLabelSpace,
                  only: int | None = None) -> torch.Tensor:
    """A label map (class id + 1 per pixel, the readers' convention) as label indices of `space`;
    ignored and padding pixels get IGNORE_INDEX. With `only` (a support's class), every other class
    counts as background, as in DIaM's supports."""
    table = torch.zeros(256, dtype=torch.long)
    for index, class_id in enumerate(space.base + space.novel, start=1):
        if only is None or class_id == only:
            table[class_id + 1] = index
    target = table[label.long().clamp(0, 255)]
    ignore = loader.ignore(label)
    if ignore is not None:
        target[ignore] = IGNORE_INDEX
    return target


def support_set(loader: EpisodeLoader, run: GfssRun, space: GfssLabelSpace, device: torch.device) -> GfssSupportSet:
    images, labels, class_ids = [], [], []
    for class_id, image_ids in run.supports:
        for image_id in image_ids:
            image, label = _decoded(loader, image_id, f"support of class {class_id} in run {run.run}")
            images.append(image)
            labels.append(label_indices(loader, label, space, only=class_id))
            class_ids.append(class_id)
    return GfssSupportSet(torch.stack(images).to(device).float().div_(255), torch.stack(labels).to(device), class_ids)


def _decoded(loader: EpisodeLoader, image_id: str, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        return loader.image_and_label(image_id)
    except DataError as exc:
        raise DataError(f"{what} ({image_id}): {exc}") from None


def check_labels(prediction: object, expected: tuple[int, ...], classes: int, where: str) -> torch.Tensor:
    if not isinstance(prediction, torch.Tensor):
        raise PredictionError(f"{where}: segment() returned {type(prediction).__name__}, expected a torch.Tensor")
    if tuple(prediction.shape) != expected:
        raise PredictionError(f"{where}: labels have shape {tuple(prediction.shape)}, expected {expected} "
                              "(batch, height, width at the evaluation resolution)")
    if prediction.is_floating_point() or prediction.is_complex() or prediction.dtype == torch.bool:
        raise PredictionError(f"{where}: labels have dtype {prediction.dtype}, expected integer label indices")
    low, high = prediction.min().item(), prediction.max().item()
    if low < 0 or high >= classes:
        raise PredictionError(f"{where}: label indices lie in [{low}, {high}], expected 0..{classes - 1} "
                              "(background, base classes, novel classes)")
    return prediction


def run_gfss_fold(
    method: str,
    adapter: Adapter,
    loader: EpisodeLoader,
    runs: tuple[GfssRun, ...],
    space: GfssLabelSpace,
    done: set[tuple[int, int]],
    device: torch.device,
    on_adapted: Callable[[GfssRun, float], None],
    on_scored: Callable[[GfssRun, int, SparseConfusion, tuple[float, float, float]], None],
    batch_size: int = 1,
) -> None:
    """Each run: adapt to its supports (`on_adapted` gets the milliseconds), then label its queries not
    in `done` ((run, index) pairs already journaled), `batch_size` per call; `on_scored` gets each
    query's sparse confusion counts and (data, compute, scoring) milliseconds."""
    size = loader.size
    for run in runs:
        remaining = [(index, query) for index, query in enumerate(run.queries) if (run.run, index) not in done]
        if not remaining:
            continue
        supports = support_set(loader, run, space, device)
        synchronize(device)
        started = now()
        with torch.inference_mode():
            adapter.adapt(space, supports)
        synchronize(device)
        on_adapted(run, 1000 * (now() - started))
        for start in range(0, len(remaining), batch_size):
            chunk = remaining[start:start + batch_size]
            started = now()
            decoded = [_decoded(loader, query, f"run {run.run}, query {index}") for index, query in chunk]
            truth = torch.stack([label_indices(loader, label, space) for _, label in decoded]).to(device)
            images = torch.stack([image for image, _ in decoded]).to(device).float().div_(255)
            synchronize(device)
            loaded_at = now()
            with torch.inference_mode():
                prediction = adapter.segment(images, truth if adapter.needs_query_ground_truth else None)
            synchronize(device)
            predicted_at = now()
            where = f"method {method!r}, fold {run.fold}, run {run.run}, query {chunk[0][0]}"
            labels = check_labels(prediction, (len(chunk), size, size), space.size, where)
            cells = [query_confusion(labels[i], truth[i], truth[i] == IGNORE_INDEX, space.size)
                     for i in range(len(chunk))]
            share = 1000 / len(chunk)
            milliseconds = tuple(share * t for t in (loaded_at - started, predicted_at - loaded_at, now() - predicted_at))
            for (index, _), counts in zip(chunk, cells):
                on_scored(run, index, counts, milliseconds)
