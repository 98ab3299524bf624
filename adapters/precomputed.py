"""Scores prediction masks that another program wrote, so any external method can be evaluated on
fssbench's manifests: `--weights predictions=DIR` with DIR/fold<F>/<episode index>.png (zero padding
allowed), one PNG per episode at the evaluation resolution. Foreground where the probability is > 0.5.
`fssbench eval --save-predictions` writes this layout (1-bit PNGs) to `<out>/predictions/<run id>`, so
a saved run re-scores exactly under the same protocol and --eval-size.

How a PNG is read, by its mode as PIL opens it:
- palette ('P', e.g. saved with the VOC colours): by index, 0 background and 1 foreground; any other
  index is refused (colours are never looked at).
- 8-bit grey ('L'): values all 0 or 1 are a mask; otherwise every value is a probability times 255
  (so 0/255 is a mask too). A grey label map with other class ids would read as low probabilities.
- 1-bit ('1'): a mask.
- anything else (RGB, RGBA, grey with alpha, 16-bit grey, ...) is refused.
A refused file is a PredictionError naming the file and the episode.
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
                mode, values = image.mode, np.asarray(image)
        except (OSError, ValueError) as exc:
            raise PredictionError(f"episode {index}: {path} is unreadable ({exc})") from None
        if mode not in ("P", "L", "1"):
            raise PredictionError(f"episode {index}: {path} has PIL mode {mode!r}; expected 8-bit grey (0/1, 0/255 "
                                  "or probability x 255), a palette PNG with indices 0 and 1, or a 1-bit PNG")
        if mode == "P" and values.max() > 1:
            indices = ", ".join(str(i) for i in np.unique(values)[:10])
            raise PredictionError(f"episode {index}: {path} is a palette PNG with indices {indices}; expected "
                                  "indices 0 (background) and 1 (foreground)")
        if values.shape != (self.resolution, self.resolution):
            raise PredictionError(f"episode {index}: {path} is {values.shape[1]}x{values.shape[0]}, expected "
                                  f"{self.resolution}x{self.resolution} (the protocol's evaluation resolution)")
        values = values.astype(np.float32)
        return values / 255 if mode == "L" and values.max() > 1 else values

    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        masks = [self._read(episode.fold, episode.index) for episode in batch.episodes]
        return torch.from_numpy(np.stack(masks)).to(batch.query_images.device)
