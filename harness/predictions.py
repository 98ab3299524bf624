"""Saved predictions (`fssbench eval --save-predictions`): each FSS episode's binary prediction as it
was scored (thresholded at 0.5, K-shot votes merged) is written as a 1-bit PNG
`<out>/predictions/<run id>/fold<F>/<episode index>.png` at the evaluation resolution.

That is the layout the `precomputed` method reads, so `--method precomputed --weights
predictions=<that folder>` under the same protocol (and --eval-size) re-scores the run exactly. The
record's `predictions` names the folder relative to the results folder (`--out`). Writing a PNG
happens while the episode is scored, so it is timed as scoring: zlib level 1 keeps that to a few
milliseconds (a 400x400 mask: about 1-5 kB).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fssbench.harness.episodes import Episode, Manifest
from fssbench.harness.errors import DataError
from fssbench.harness.files import atomic_write, open_image
from fssbench.harness.journal import RunWarning

PREDICTIONS_DIR = "predictions"


def predictions_folder(run_id: str) -> str:
    """Where a run's predictions go, relative to the results folder (as its record names it)."""
    return f"{PREDICTIONS_DIR}/{run_id}"


def prediction_file(folder: Path, fold: int, index: int) -> Path:
    return Path(folder) / f"fold{fold}" / f"{index}.png"


class PredictionWriter:
    """`writer(episode, mask)` saves one episode's [H, W] boolean prediction (atomically: a crash never
    leaves half a PNG, and an episode that was not journaled is predicted and written again on resume)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def __call__(self, episode: Episode, mask: torch.Tensor) -> None:
        image = Image.fromarray(mask.to("cpu", torch.bool).numpy())  # a boolean array is a 1-bit ('1') image
        atomic_write(prediction_file(self.folder, episode.fold, episode.index),
                     lambda staging: image.save(staging, format="PNG", compress_level=1))


def warn_unsaved(folder: Path, manifests: dict[int, Manifest]) -> None:
    """Warn when episodes have no saved prediction: a resumed run whose earlier process ran without
    --save-predictions did not predict its journaled episodes again."""
    missing = [episode for manifest in manifests.values() for episode in manifest.episodes
               if not prediction_file(folder, episode.fold, episode.index).is_file()]
    if missing:
        warnings.warn(f"{len(missing)} episodes (e.g. fold {missing[0].fold} episode {missing[0].index}) have no saved "
                      f"prediction in {folder}: they were journaled by a process that ran without "
                      "--save-predictions; run again with --no-resume to save every episode's", RunWarning)


def read_prediction(folder: Path, fold: int, index: int) -> np.ndarray:
    """A saved prediction as an [H, W] boolean array; a DataError names a missing or unreadable file."""
    path = prediction_file(folder, fold, index)
    if not path.is_file():
        raise DataError(f"fold {fold} episode {index} has no saved prediction {path}")
    with open_image(path) as image:
        return np.array(image.convert("1"), dtype=bool)
