"""Episodic few-shot segmentation as a task: episodes in, foreground maps out, HSNet's metric.

Per episode the adapter's prediction is checked (type, shape, finiteness, range; errors name the
episode), thresholded at 0.5 and scored against the query mask (upsampled first in original-resolution
mode); the fold's state accumulates HSNet's per-class counts. Episodes' bootstrap intervals go into
the record.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

from fssbench.harness.contract import EpisodeBatch, FssAdapter
from fssbench.harness.episodes import Episode, Manifest
from fssbench.harness.errors import DataError, PredictionError
from fssbench.harness.loading import EpisodeLoader, LoadedEpisode
from fssbench.harness.metrics import FSS_METRICS, EpisodeScore, FssMetricState, episode_counts, vote_merge
from fssbench.harness.record import FssFoldResult, MetricValue
from fssbench.harness.statistics import Fold, bootstrap_interval
from fssbench.harness.task import FoldContext, FoldRun, Group, Payload, Task


def check_prediction(prediction: object, expected: tuple[int, ...], episodes: list[Episode], method: str) -> torch.Tensor:
    """The adapter's output as a boolean foreground mask, or an error naming the episode."""
    where = f"method {method!r}, episode {episodes[0].index}" + (
        f"-{episodes[-1].index}" if len(episodes) > 1 else "")
    if not isinstance(prediction, torch.Tensor):
        raise PredictionError(f"{where}: predict() returned {type(prediction).__name__}, expected a torch.Tensor")
    if tuple(prediction.shape) != expected:
        layout = "batch, shots, height, width" if len(expected) == 4 else "batch, height, width"
        raise PredictionError(f"{where}: prediction has shape {tuple(prediction.shape)}, expected {expected} "
                              f"({layout} at the evaluation resolution)")
    if prediction.dtype == torch.bool:
        return prediction
    if prediction.is_complex():
        raise PredictionError(f"{where}: prediction has complex dtype {prediction.dtype}")
    low, high = torch.stack(torch.aminmax(prediction)).tolist()  # one pass; NaN and inf show in the bounds
    if not (math.isfinite(low) and math.isfinite(high)):
        raise PredictionError(f"{where}: prediction contains NaN or infinite values")
    if low < 0 or high > 1:
        raise PredictionError(f"{where}: prediction values lie in [{low:g}, {high:g}], expected foreground "
                              "probabilities or 0/1 masks in [0, 1]")
    return prediction > 0.5


def upsample_prediction(prediction: torch.Tensor, size: tuple[int, int], padded: bool = False) -> torch.Tensor:
    """Foreground at the query's original size: bilinear (align_corners=True, as HSNet) then > 0.5. A
    padded canvas is brought to a max(H, W) square and its top-left H x W kept (PFENet's ori_resize)."""
    height, width = size
    target = (max(size), max(size)) if padded else size
    upsampled = F.interpolate(prediction[None, None].float(), target, mode="bilinear", align_corners=True)
    return upsampled[0, 0, :height, :width] > 0.5


def make_batch(episodes: list[Episode], loaded: list[LoadedEpisode], class_names: list[str],
               device: torch.device, with_truth: bool, support_annotation: str = "mask") -> EpisodeBatch:
    """The batch on `device`: uint8 images and boolean masks travel as they are (from pinned memory,
    without blocking, to CUDA) and become float32 there."""
    def on_device(tensors: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(tensors)
        if device.type == "cuda":
            return stacked.pin_memory().to(device, non_blocking=True)
        return stacked.to(device)

    def images(tensors: list[torch.Tensor]) -> torch.Tensor:
        return on_device(tensors).float().div_(255)

    def masks(tensors: list[torch.Tensor]) -> torch.Tensor:
        return on_device(tensors).float()

    return EpisodeBatch(
        episodes=episodes,
        query_images=images([item.query_image for item in loaded]),
        support_images=images([item.support_images for item in loaded]),
        support_masks=masks([item.support_masks for item in loaded]),
        support_labelled=masks([item.support_labelled for item in loaded]),
        support_annotation=support_annotation,
        class_names=[class_names[episode.class_id] for episode in episodes],
        query_masks=masks([item.query_mask for item in loaded]) if with_truth else None,
    )


def load_episode(loader: EpisodeLoader, episode: Episode) -> LoadedEpisode:
    try:
        return loader.load(episode)
    except DataError as exc:
        raise DataError(f"episode {episode.index} (fold {episode.fold}, class {episode.class_id}): {exc}") from None


def score_episode(episode: Episode, loaded: LoadedEpisode, mask: torch.Tensor, prediction: torch.Tensor,
                  device: torch.device, padded: bool,
                  save: Callable[[Episode, torch.Tensor], None] | None = None) -> EpisodeScore:
    """Score one episode; `mask` and `prediction` are [H, W], or [K, H, W] per-shot ones to vote over.
    `save(episode, mask)` receives the binary mask as scored (--save-predictions)."""
    truth = loaded.scored_mask.to(device)
    if truth.shape != mask.shape[-2:]:  # original-resolution mode: bilinear upsampling of each output
        size = tuple(truth.shape)
        mask = (upsample_prediction(prediction, size, padded) if prediction.dim() == 2 else
                torch.stack([upsample_prediction(shot, size, padded) for shot in prediction]))
    if mask.dim() == 3:  # HSNet's K-shot vote, at the scoring resolution as HSNet votes
        mask = vote_merge(mask) > 0.5
    if save is not None:
        save(episode, mask)
    ignore = loaded.scored_ignore.to(device) if loaded.scored_ignore is not None else None
    inter, union = episode_counts(mask, truth, ignore)
    return EpisodeScore(episode.index, episode.class_id, inter, union)


def score_payload(score: EpisodeScore) -> Payload:
    return {"class_id": score.class_id, "inter": list(score.inter), "union": list(score.union)}


def fold_statistics(result: FssFoldResult) -> Fold:
    """A fold in the form the bootstrap and paired tests take."""
    return tuple(result.per_class_iou), [list(row) for row in result.episode_scores]


class FssFoldRun(FoldRun):
    def __init__(self, context: FoldContext, manifest: Manifest) -> None:
        self.context, self.manifest = context, manifest
        self.fold = manifest.episodes[0].fold
        self.state = FssMetricState(context.reader.fold_classes(self.fold))

    def key(self, episode: Episode) -> str:
        return str(episode.index)

    def groups(self) -> Iterable[Group]:
        return [Group(list(self.manifest.episodes))]

    def expect(self, episodes: list[Episode]) -> None:
        self.context.loader.expect(episodes)

    def load(self, episodes: list[Episode]) -> tuple[list[LoadedEpisode], EpisodeBatch]:
        context = self.context
        loaded = [load_episode(context.loader, episode) for episode in episodes]
        return loaded, make_batch(episodes, loaded, context.reader.class_names, context.device,
                                  context.adapter.needs_query_ground_truth, context.loader.support)

    def call(self, inputs: tuple[list[LoadedEpisode], EpisodeBatch]) -> Any:
        return self.context.adapter.predict(inputs[1])

    def score(self, episodes: list[Episode], inputs, output) -> list[Payload]:
        size, context = self.context.loader.size, self.context
        per_shot = (len(episodes[0].supports),) if context.adapter.shot_merge == "vote" else ()
        masks = check_prediction(output, (len(episodes), *per_shot, size, size), episodes, context.method)
        padded = context.loader.mode == "pad"
        return [score_payload(score_episode(episode, loaded, mask, output[i], context.device, padded,
                                            context.predictions))
                for i, (episode, loaded, mask) in enumerate(zip(episodes, inputs[0], masks))]

    def update(self, key: str, payload: Payload) -> None:
        self.state.update(EpisodeScore(int(key), payload["class_id"], tuple(payload["inter"]),
                                       tuple(payload["union"])))

    def done(self) -> set[str]:
        return {str(score.index) for score in self.state.records}

    def running_score(self) -> float | None:
        return self.state.miou()

    def result(self, preparation_ms: dict[str, float]) -> FssFoldResult:
        state, names = self.state, self.context.reader.class_names
        result = FssFoldResult(
            fold=self.fold, manifest_sha256=self.manifest.sha256, episodes=len(state.records),
            metrics={"miou": state.miou(), "fbiou": state.fbiou()},
            per_class_iou=state.per_class_iou(), class_names={c: names[c] for c in state.class_ids},
            episode_scores=sorted((s.index, s.class_id, *s.inter, *s.union) for s in state.records))
        result.miou_ci95 = bootstrap_interval([fold_statistics(result)])
        return result


class FssTask(Task):
    name = "fss"
    metrics = FSS_METRICS
    interface = FssAdapter

    def fold_run(self, context: FoldContext, manifest: Manifest) -> FssFoldRun:
        return FssFoldRun(context, manifest)

    def summarize(self, results: list[FssFoldResult]) -> list[MetricValue]:
        metrics = super().summarize(results)
        if results:
            metrics[0].ci95 = bootstrap_interval([fold_statistics(result) for result in results])
        return metrics
