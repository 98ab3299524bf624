"""Generalized FSS as a task (DIaM's protocol): per run, adapt once to the novel classes' supports,
then label every query image over background + base + novel classes and score it with a confusion
matrix. A fold's units are its runs' queries, keyed "run:index"; each run is one group."""

from __future__ import annotations

from typing import Iterable

import torch

from fssbench.harness.contract import IGNORE_LABEL, GfssAdapter, GfssLabelSpace, GfssSupportSet
from fssbench.harness.datasets import DatasetReader
from fssbench.harness.episodes import GfssManifest, GfssRun
from fssbench.harness.errors import DataError, PredictionError, UsageError
from fssbench.harness.gfss_metrics import GFSS_METRICS, GfssRunState, average_over_runs, query_confusion
from fssbench.harness.loading import EpisodeLoader
from fssbench.harness.record import GfssFoldResult, GfssRunResult
from fssbench.harness.specs import ProtocolSpec
from fssbench.harness.task import FoldContext, FoldRun, Group, Payload, Task

Query = tuple[int, int, str]  # run, index in the run, image id


def label_space(reader: DatasetReader, fold: int) -> GfssLabelSpace:
    """DIaM's label order: background, the base classes ascending, the fold's novel classes ascending."""
    names = reader.class_names
    novel = sorted(reader.fold_classes(fold))
    base = [class_id for class_id in range(len(names)) if class_id not in novel]
    return GfssLabelSpace(base, novel, ["background"] + [names[c] for c in base + novel])


def label_indices(loader: EpisodeLoader, label: torch.Tensor, space: GfssLabelSpace,
                  only: int | None = None) -> torch.Tensor:
    """A label map (class id + 1 per pixel, the readers' convention) as label indices of `space`;
    ignored and padding pixels get IGNORE_LABEL. With `only` (a support's class), every other class
    counts as background, as in DIaM's supports."""
    table = torch.zeros(256, dtype=torch.long)
    for index, class_id in enumerate(space.base + space.novel, start=1):
        if only is None or class_id == only:
            table[class_id + 1] = index
    target = table[label.long().clamp(0, 255)]
    ignore = loader.ignore(label)
    if ignore is not None:
        target[ignore] = IGNORE_LABEL
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


class GfssFoldRun(FoldRun):
    def __init__(self, context: FoldContext, manifest: GfssManifest) -> None:
        self.context, self.manifest = context, manifest
        self.fold = manifest.runs[0].fold
        self.space = label_space(context.reader, self.fold)
        self.states = {run.run: GfssRunState(len(self.space.base), len(self.space.novel)) for run in manifest.runs}
        self.cells: dict[str, list[tuple[int, int, int]]] = {}

    def key(self, query: Query) -> str:
        return f"{query[0]}:{query[1]}"

    def groups(self) -> Iterable[Group]:
        for run in self.manifest.runs:
            yield Group([(run.run, index, image) for index, image in enumerate(run.queries)],
                        prepare=lambda run=run: self._adapt(run), name=f"adapt_ms_fold{self.fold}_run{run.run}")

    def _adapt(self, run: GfssRun) -> None:
        context = self.context
        supports = support_set(context.loader, run, self.space, context.device)
        with torch.inference_mode():
            context.adapter.adapt(self.space, supports)

    def expect(self, queries: list[Query]) -> None:
        self.context.loader.expect_images(image for _, _, image in queries)

    def load(self, queries: list[Query]) -> tuple[torch.Tensor, torch.Tensor]:
        loader, device = self.context.loader, self.context.device
        decoded = [_decoded(loader, image, f"run {run}, query {index}") for run, index, image in queries]
        truth = torch.stack([label_indices(loader, label, self.space) for _, label in decoded]).to(device)
        return torch.stack([image for image, _ in decoded]).to(device).float().div_(255), truth

    def call(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> object:
        images, truth = inputs
        adapter = self.context.adapter
        return adapter.segment(images, truth if adapter.needs_query_ground_truth else None)

    def score(self, queries: list[Query], inputs, output) -> list[Payload]:
        size, truth = self.context.loader.size, inputs[1]
        run, index, _ = queries[0]
        where = f"method {self.context.method!r}, fold {self.fold}, run {run}, query {index}"
        labels = check_labels(output, (len(queries), size, size), self.space.size, where)
        return [{"cells": query_confusion(labels[i], truth[i], truth[i] == IGNORE_LABEL, self.space.size)}
                for i in range(len(queries))]

    def update(self, key: str, payload: Payload) -> None:
        cells = [tuple(cell) for cell in payload["cells"]]
        self.states[int(key.split(":")[0])].update(cells)
        self.cells[key] = cells

    def done(self) -> set[str]:
        return set(self.cells)

    def running_score(self) -> float | None:
        scored = [state for state in self.states.values() if state.queries]
        return average_over_runs([state.scores() for state in scored])["mean"] if scored else None

    def result(self, preparation_ms: dict[str, float]) -> GfssFoldResult:
        runs = [GfssRunResult(run=run, queries=state.queries, **state.scores()) for run, state in self.states.items()]
        average = average_over_runs([run.model_dump() for run in runs])
        prefix = f"adapt_ms_fold{self.fold}_run"
        return GfssFoldResult(
            fold=self.fold, manifest_sha256=self.manifest.sha256, episodes=len(self.cells),
            metrics={"miou": average["mean"], "base": average["base"], "novel": average["novel"],
                     "harmonic": average["harmonic"]},
            runs=runs, label_names=self.space.names, base_classes=len(self.space.base),
            adapt_ms={int(name[len(prefix):]): ms for name, ms in preparation_ms.items() if name.startswith(prefix)},
            confusion={run: state.confusion.tolist() for run, state in self.states.items()},
            query_confusions=sorted((int(key.split(":")[0]), int(key.split(":")[1]), cells)
                                    for key, cells in self.cells.items()))


class GfssTask(Task):
    name = "gfss"
    metrics = GFSS_METRICS
    interface = GfssAdapter

    def check(self, method: str, adapter_class, spec: ProtocolSpec, original_resolution: bool) -> None:
        super().check(method, adapter_class, spec, original_resolution)
        if original_resolution:
            raise UsageError(f"--original-resolution applies to FSS protocols; {spec.name!r} scores at its "
                             f"{spec.resolution.describe()} canvas as DIaM does")

    def fold_run(self, context: FoldContext, manifest: GfssManifest) -> GfssFoldRun:
        return GfssFoldRun(context, manifest)
