"""AlignDiff for generalized FSS training sets (the paper's "GAPS + AlignDiff" / "FineTune + AlignDiff"):
synthetic (image, label map) samples of each novel class, made through the same synthesis layer and
synthetic-set store as the FSS adapter, for a trainable GFSS learner to add to its novel supports.

Each novel class's samples are conditioned on that class's supports (the pixels labelled with its label
index are the support mask). Masks: the coarse masks, or, given an FSS `segment` function, Algorithm 1's
masks with the class's supports as D_good. A sample's label map holds the class's label index on its
mask and 0 (background) elsewhere, at `size` x `size`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fssbench.adapters.aligndiff.adapter import ALIGNDIFF_OPTIONS
from fssbench.adapters.aligndiff.algorithm import Segment, align_masks
from fssbench.adapters.aligndiff.synthesizer import Synthesizer, to_resolution
from fssbench.adapters.synthesis.store import SyntheticStore
from fssbench.harness.contract import GfssLabelSpace, GfssSupportSet
from fssbench.harness.image_sources import SourceSettings


@dataclass(frozen=True)
class NovelSample:
    label: int  # the novel class's label index in the run's label space
    image: torch.Tensor  # [3, size, size] in [0, 1]
    labels: torch.Tensor  # [size, size] int64: `label` on the mask, 0 elsewhere


def novel_class_samples(labels: GfssLabelSpace, supports: GfssSupportSet, class_names: list[str], n_samples: int,
                        size: int, options: dict[str, Any] | None = None, store: SyntheticStore | None = None,
                        segment: Segment | None = None, device: torch.device = torch.device("cpu"),
                        random_init: bool = False, weights: dict | None = None, seed: int = 0,
                        synthesizer: Synthesizer | None = None) -> list[NovelSample]:
    """`n_samples` synthetic samples per novel class. `options`: AlignDiff's (adapter.ALIGNDIFF_OPTIONS:
    source, textual_inversion, coarse_threshold, alpha, ...); `segment(good_images, good_masks, images)`:
    an FSS model for Algorithm 1 (None: coarse masks). Pass a `synthesizer` to share one across calls
    (its report() gives the set's hash, the cost and the mask quality)."""
    options = {**ALIGNDIFF_OPTIONS, **(options or {}), "n_samples": n_samples}
    synthesizer = synthesizer or Synthesizer(options, SourceSettings(
        device, weights or {}, random_init, class_names,
        {"cfg": options["cfg"], "steps": options["sample_steps"], "resolution": options["resolution"],
         "attention_downscale": options["attention_downscale"], "sd_config": options["sd_config"],
         "coarse_noise": options["coarse_noise"], "seed": seed}), store)
    made = []
    for class_id in labels.novel:
        label = 1 + len(labels.base) + labels.novel.index(class_id)
        chosen = [i for i, c in enumerate(supports.class_ids) if c == class_id]
        images = torch.nn.functional.interpolate(supports.images[chosen].float(), (size, size), mode="bilinear",
                                                 align_corners=False, antialias=True).to(device)
        masks = torch.nn.functional.interpolate((supports.labels[chosen] == label).float()[:, None], (size, size),
                                                mode="nearest")[:, 0].to(device)
        samples = synthesizer.samples(class_id, class_names[class_id], images, masks)
        if not samples:
            continue
        synthetic, scores, truth = to_resolution(samples, (size, size), device)
        coarse = scores >= float(options["coarse_threshold"])
        with synthesizer.cost.timed("mask_generation", len(samples)):
            if segment is None:
                final = coarse
            else:
                final = align_masks(images, masks, synthetic, coarse,
                                    lambda gi, gm, idx: segment(gi, gm, synthetic[idx]),
                                    float(options["alpha"]), str(options["accepted_mask"])).masks
        for i in range(len(samples)):
            if truth is not None:
                synthesizer.quality.update("coarse", class_id, coarse[i], truth[i])
                if segment is not None:
                    synthesizer.quality.update("algorithm1", class_id, final[i], truth[i])
            made.append(NovelSample(label, synthetic[i], final[i].long() * label))
    return made
