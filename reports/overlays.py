"""Episodes as FSS papers show them: each support with its annotated mask, the query with its ground
truth, and the query with the run's saved prediction (`fssbench eval --save-predictions`).

Ground truth and support annotations are drawn in blue with a solid outline, the prediction in
vermillion with a dashed outline (the ground truth's outline stays on top of it): Okabe-Ito colours,
told apart by colour-blind readers and, through the outlines' styles, in greyscale. Images and masks
are shown at the evaluation resolution, as the method saw and was scored on them.

Episodes are picked by their foreground IoU from the record's own episode scores (`--worst K`,
`--best K`). Before an episode is drawn, its saved prediction is scored against the ground truth read
from the data now: counts that differ from the record's mean the data or the predictions changed
since the run, and the figure would show something else than what was scored (a DataError says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fssbench.harness.errors import DataError, UsageError
from fssbench.harness.loading import LoadedEpisode
from fssbench.harness.metrics import episode_counts
from fssbench.harness.record import FssFoldResult, RunRecord
from fssbench.reports.plots import OKABE_ITO, Plot, blank_figure

TRUTH_COLOUR, PREDICTION_COLOUR = OKABE_ITO[0], OKABE_ITO[1]
PANEL = 1.25  # inches per image
FILL_ALPHA = 0.4


@dataclass(frozen=True)
class EpisodeIou:
    fold: int
    index: int
    class_id: int
    iou: float  # foreground IoU x100: I_fg / max(U_fg, 1), as the record's counts give it


def episode_ious(record: RunRecord) -> list[EpisodeIou]:
    """Every scored episode of an FSS run with its foreground IoU, worst first (ties: by fold, index)."""
    if not record.results or not all(isinstance(result, FssFoldResult) for result in record.results):
        raise UsageError(f"run {record.run_id} is a {record.task} run; episodes are shown for FSS runs")
    ious = [EpisodeIou(result.fold, row[0], row[1], 100 * row[3] / max(row[5], 1))
            for result in record.results for row in result.episode_scores]
    return sorted(ious, key=lambda item: (item.iou, item.fold, item.index))


def pick_episodes(record: RunRecord, worst: int = 0, best: int = 0) -> list[EpisodeIou]:
    """The `worst` lowest-IoU episodes (worst first), then the `best` highest (best first)."""
    ious = episode_ious(record)
    return ious[:worst] + [item for item in reversed(ious) if item not in ious[:worst]][:best]


def find_episode(record: RunRecord, fold: int | None, index: int) -> EpisodeIou:
    ious = episode_ious(record)
    folds = sorted({item.fold for item in ious})
    if fold is None:
        if len(folds) > 1:
            raise UsageError(f"run {record.run_id} has folds {', '.join(map(str, folds))}: say which with --fold "
                             "(episode indices restart in every fold)")
        fold = folds[0]
    match = next((item for item in ious if item.fold == fold and item.index == index), None)
    if match is None:
        count = sum(1 for item in ious if item.fold == fold)
        raise UsageError(f"run {record.run_id} has no episode {index} in fold {fold} "
                         f"({'no such fold' if not count else f'it scored episodes 0-{count - 1}'})")
    return match


@dataclass
class EpisodeView:
    """One episode's pixels at the evaluation resolution, ready to draw."""

    title: str
    support_images: np.ndarray  # [K, S, S, 3] uint8
    support_masks: np.ndarray  # [K, S, S] bool
    query_image: np.ndarray  # [S, S, 3] uint8
    truth: np.ndarray  # [S, S] bool
    prediction: np.ndarray  # [S, S] bool


def episode_view(record: RunRecord, item: EpisodeIou, loaded: LoadedEpisode, prediction: np.ndarray,
                 class_name: str) -> EpisodeView:
    """The episode's view, after checking that its saved prediction gives the record's counts."""
    where = f"run {record.run_id} fold {item.fold} episode {item.index}"
    if prediction.shape != tuple(loaded.query_mask.shape):
        raise DataError(f"{where}: the saved prediction is {prediction.shape[1]}x{prediction.shape[0]}, the "
                        f"episode's images {loaded.query_mask.shape[1]}x{loaded.query_mask.shape[0]}")
    row = next(row for result in record.results if result.fold == item.fold for row in result.episode_scores
               if row[0] == item.index)
    inter, union = episode_counts(torch.from_numpy(prediction), loaded.scored_mask, loaded.scored_ignore)
    if (*inter, *union) != tuple(row[2:]):
        raise DataError(f"{where}: its saved prediction scored against the data now gives counts "
                        f"{(*inter, *union)}, the record {tuple(row[2:])}: the data or the saved predictions "
                        "changed since the run")
    return EpisodeView(
        title=f"fold {item.fold}, episode {item.index}, {class_name}: IoU {item.iou:.1f}",
        support_images=loaded.support_images.permute(0, 2, 3, 1).numpy(),
        support_masks=loaded.support_masks.numpy().astype(bool),
        query_image=loaded.query_image.permute(1, 2, 0).numpy(),
        truth=loaded.query_mask.numpy().astype(bool),
        prediction=prediction,
    )


def render(views: list[EpisodeView], title: str = "") -> Plot:
    """A grid, an episode per row: its supports with their masks, the query with the ground truth, the
    query with the prediction. The plot's data is the views' titles, in order."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    shots = max(len(view.support_images) for view in views)
    figure = blank_figure(PANEL * (shots + 2), (PANEL + 0.3) * len(views) + 0.6)
    for rowfigure, view in zip(figure.subfigures(len(views), 1, squeeze=False)[:, 0], views):
        rowfigure.suptitle(view.title, fontsize=7, x=0.01, ha="left")
        row = rowfigure.subplots(1, shots + 2, squeeze=False)[0]
        for k, ax in enumerate(row[:shots]):
            if k < len(view.support_images):
                _overlay(ax, view.support_images[k], view.support_masks[k], TRUTH_COLOUR, "solid")
                ax.set_title(f"support {k + 1}", fontsize=7)
            else:
                ax.set_visible(False)
        _overlay(row[shots], view.query_image, view.truth, TRUTH_COLOUR, "solid")
        row[shots].set_title("query: ground truth", fontsize=7)
        _overlay(row[shots + 1], view.query_image, view.prediction, PREDICTION_COLOUR, "dashed")
        _outline(row[shots + 1], view.truth, TRUTH_COLOUR, "solid", 0.8)
        row[shots + 1].set_title("query: prediction", fontsize=7)
    figure.legend([Patch(facecolor=TRUTH_COLOUR, alpha=0.6, edgecolor=TRUTH_COLOUR),
                   Line2D([], [], color=PREDICTION_COLOUR, linestyle="dashed", linewidth=1.2)],
                  ["support mask, ground truth (solid outline)", "prediction (dashed outline)"],
                  loc="outside lower center", ncols=1, fontsize=7, frameon=False)
    if title:
        figure.suptitle(title, fontsize=8)
    return Plot(figure, [view.title for view in views])


def _overlay(ax, image: np.ndarray, mask: np.ndarray, colour: str, linestyle: str) -> None:
    from matplotlib.colors import to_rgba

    ax.imshow(image, interpolation="nearest")
    layer = np.zeros((*mask.shape, 4))
    layer[mask] = to_rgba(colour, FILL_ALPHA)
    ax.imshow(layer, interpolation="nearest")
    _outline(ax, mask, colour, linestyle, 1.2)
    ax.set_axis_off()


def _outline(ax, mask: np.ndarray, colour: str, linestyle: str, width: float) -> None:
    if mask.any() and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linestyles=[linestyle], linewidths=[width])

