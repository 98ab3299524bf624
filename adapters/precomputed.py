"""Scores prediction masks that another program wrote, so any external method can be evaluated on
fssbench's manifests: `--weights predictions=DIR` with DIR/fold<F>/<episode index>.png (zero padding
allowed), one 8-bit PNG per episode at the evaluation resolution. A PNG whose values are all 0 or 1
is a mask; otherwise values are probabilities times 255. Foreground where the probability is > 0.5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fssbench.harness.contract import EpisodeBatch, FssAdapter, SetupContext, WeightSpec
from fssbench.harness.errors import PredictionError


class PrecomputedAdapter(FssAdapter):
    description = "scores prediction PNGs from a folder (one per episode index): any external method"
    support_annotations = frozenset({"mask", "box", "scribble", "none", "text"})
    weights = (WeightSpec("predictions", "a folder of fold<F>/<episode index>.png prediction masks",
                          "the external method's own inference, run on `fssbench episodes` manifests"),)
    supports_random_init = False

    def setup(self, context: SetupContext) -> None:
        self.folder = context.weights["predictions"]
        self.resolution = context.resolution
        self._files: dict[int, dict[int, Path]] = {}

    def _fold_files(self, fold: int) -> dict[int, Path]:
        if fold not in self._files:
            folder = self.folder / f"fold{fold}"
            self._files[fold] = {int(p.stem): p for p in folder.glob("*.png") if p.stem.isdigit()}
        return self._files[fold]

    def _read(self, fold: int, index: int) -> np.ndarray:
        path = self._fold_files(fold).get(index)
        if path is None:
            raise PredictionError(f"episode {index}: no prediction {self.folder}/fold{fold}/{index}.png")
        try:
            with Image.open(path) as image:
                values = np.asarray(image.convert("L"), dtype=np.float32)
        except (OSError, ValueError) as exc:
            raise PredictionError(f"episode {index}: {path} is unreadable ({exc})") from None
        if values.shape != (self.resolution, self.resolution):
            raise PredictionError(f"episode {index}: {path} is {values.shape[1]}x{values.shape[0]}, expected "
                                  f"{self.resolution}x{self.resolution} (the protocol's evaluation resolution)")
        return values if values.max() <= 1 else values / 255

    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        masks = [self._read(episode.fold, episode.index) for episode in batch.episodes]
        return torch.from_numpy(np.stack(masks)).to(batch.query_images.device)
