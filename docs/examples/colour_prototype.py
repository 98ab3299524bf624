"""An example fssbench adapter, complete and tested (tests/test_adapter_guide.py runs it on the demo).

Mean-colour prototypes: the mean RGB colour of the supports' labelled foreground and background pixels,
and for each query pixel a sigmoid of how much closer its colour is to the foreground's. Training-free,
no weights. Run it without packaging:

    fssbench eval --method docs/examples/colour_prototype.py:ColourPrototypeAdapter --protocol demo-1shot --episodes 10
"""

from __future__ import annotations

import torch

from fssbench.harness.contract import EpisodeBatch, FssAdapter, SetupContext


class ColourPrototypeAdapter(FssAdapter):
    # read from the source by `fssbench list methods`, which imports nothing
    description = "example: mean-colour prototypes of the supports' foreground and background"
    # the support annotations it accepts: masks, and boxes and scribbles (it uses only labelled pixels)
    support_annotations = frozenset({"mask", "box", "scribble"})
    # --option NAME=VALUE, typed by the default; recorded, part of the run's identity
    option_defaults = {"temperature": 20.0, "space": "rgb"}
    option_choices = {"space": ("rgb", "chroma")}

    def setup(self, context: SetupContext) -> None:
        """Called once per run: load weights (context.weights) on context.device here."""
        self.device = context.device

    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        queries = self.colours(batch.query_images)  # [B, 3, H, W]
        supports = self.colours(batch.support_images)  # [B, K, 3, H, W]
        labelled = batch.support_labelled  # [B, K, H, W], 1 where the annotation says fg or bg
        foreground = self.mean_colour(supports, batch.support_masks * labelled)  # [B, 3]
        background = self.mean_colour(supports, (1 - batch.support_masks) * labelled)
        to_foreground = (queries - foreground[:, :, None, None]).square().sum(dim=1)  # [B, H, W]
        to_background = (queries - background[:, :, None, None]).square().sum(dim=1)
        return torch.sigmoid(self.options["temperature"] * (to_background - to_foreground))  # [B, H, W] in [0, 1]

    def colours(self, images: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1], or chromaticity (each channel over their sum: brightness removed)."""
        if self.options["space"] == "chroma":
            return images / images.sum(dim=-3, keepdim=True).clamp_min(1e-6)
        return images

    @staticmethod
    def mean_colour(images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The weighted mean colour over the K supports' pixels: [B, K, 3, H, W], [B, K, H, W] -> [B, 3]."""
        total = weights.sum(dim=(1, 2, 3)).clamp_min(1.0)
        return (images * weights[:, :, None]).sum(dim=(1, 3, 4)) / total[:, None]
