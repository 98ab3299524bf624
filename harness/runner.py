"""The episode loop of one fold: load, predict, check, score, time."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from fssbench.harness.contract import Adapter, EpisodeBatch
from fssbench.harness.episodes import Episode
from fssbench.harness.errors import DataError, PredictionError
from fssbench.harness.loading import EpisodeLoader, LoadedEpisode
from fssbench.harness.metrics import EpisodeScore, episode_counts
from fssbench.harness.timing import now, synchronize


def check_prediction(prediction: object, expected: tuple[int, ...], episodes: list[Episode], method: str) -> torch.Tensor:
    """The adapter's output as a boolean foreground mask, or an error naming the episode."""
    where = f"method {method!r}, episode {episodes[0].index}" + (
        f"-{episodes[-1].index}" if len(episodes) > 1 else "")
    if not isinstance(prediction, torch.Tensor):
        raise PredictionError(f"{where}: predict() returned {type(prediction).__name__}, expected a torch.Tensor")
    if tuple(prediction.shape) != expected:
        raise PredictionError(f"{where}: prediction has shape {tuple(prediction.shape)}, expected {expected} "
                              "(batch, height, width at the evaluation resolution)")
    if prediction.dtype == torch.bool:
        return prediction
    if prediction.is_floating_point():
        if not torch.isfinite(prediction).all():
            raise PredictionError(f"{where}: prediction contains NaN or infinite values")
    elif prediction.is_complex():
        raise PredictionError(f"{where}: prediction has complex dtype {prediction.dtype}")
    low, high = prediction.min().item(), prediction.max().item()
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
    def images(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device, non_blocking=True).float().div_(255)

    return EpisodeBatch(
        episodes=episodes,
        query_images=images(torch.stack([item.query_image for item in loaded])),
        support_images=images(torch.stack([item.support_images for item in loaded])),
        support_masks=torch.stack([item.support_masks for item in loaded]).to(device).float(),
        support_labelled=torch.stack([item.support_labelled for item in loaded]).to(device).float(),
        support_annotation=support_annotation,
        class_names=[class_names[episode.class_id] for episode in episodes],
        query_masks=torch.stack([item.query_mask for item in loaded]).to(device).float() if with_truth else None,
    )


def run_fold(
    method: str,
    adapter: Adapter,
    loader: EpisodeLoader,
    episodes: list[Episode],
    class_names: list[str],
    device: torch.device,
    on_scored: Callable[[Episode, EpisodeScore, tuple[float, float, float]], None],
    batch_size: int = 1,
) -> None:
    """Load, predict, check and score episodes, `batch_size` per adapter call; `on_scored` gets each
    episode's score and (data, compute, scoring) milliseconds (a batch's times shared equally by its
    episodes), and must persist them before the next batch starts."""
    size = loader.size
    for start in range(0, len(episodes), batch_size):
        chunk = episodes[start:start + batch_size]
        started = now()
        loaded = [_load(loader, episode) for episode in chunk]
        batch = make_batch(chunk, loaded, class_names, device, adapter.needs_query_ground_truth, loader.support)
        synchronize(device)
        loaded_at = now()
        with torch.inference_mode():
            prediction = adapter.predict(batch)
        synchronize(device)
        predicted_at = now()
        masks = check_prediction(prediction, (len(chunk), size, size), chunk, method)
        scores = [_score(episode, item, mask, prediction[i], device, loader.mode == "pad")
                  for i, (episode, item, mask) in enumerate(zip(chunk, loaded, masks))]
        share = 1000 / len(chunk)
        milliseconds = tuple(share * t for t in (loaded_at - started, predicted_at - loaded_at, now() - predicted_at))
        for episode, score in zip(chunk, scores):
            on_scored(episode, score, milliseconds)


def _load(loader: EpisodeLoader, episode: Episode) -> LoadedEpisode:
    try:
        return loader.load(episode)
    except DataError as exc:
        raise DataError(f"episode {episode.index} (fold {episode.fold}, class {episode.class_id}): {exc}") from None


def _score(episode: Episode, loaded: LoadedEpisode, mask: torch.Tensor, prediction: torch.Tensor,
           device: torch.device, padded: bool) -> EpisodeScore:
    truth = loaded.scored_mask.to(device)
    if truth.shape != mask.shape:  # original-resolution mode: bilinear upsampling of the output
        mask = upsample_prediction(prediction, tuple(truth.shape), padded)
    ignore = loaded.scored_ignore.to(device) if loaded.scored_ignore is not None else None
    inter, union = episode_counts(mask, truth, ignore)
    return EpisodeScore(episode.index, episode.class_id, inter, union)
