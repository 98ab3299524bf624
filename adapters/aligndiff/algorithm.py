"""Algorithm 1 of AlignDiff: masks for synthetic images by few-shot conditioning (Sec. 3.5).

Given D_good (the real supports with their masks), D_bad (synthetic images with coarse masks) and an FSS
model: condition the model on D_good and predict every synthetic image (scoring); a sample whose
prediction agrees with its coarse mask (IoU >= alpha) moves to D_good with its coarse mask; re-condition
on the enlarged D_good and give every remaining sample the model's prediction (re-estimation).

The paper's Algorithm 1 moves a sample with its coarse mask M_i and tests IoU >= alpha. The authors' code
(RogerQi/AlignDiff, aligndiff/mask_generator.py) tests IoU > alpha and stores the FSS prediction as the
moved sample's mask; `accepted_mask="prediction"` selects that. Their alpha is 0.8 (utils.py,
consensus_iou_threshold), the coarse attention threshold 0.4 (att_cutoff), and the FSS prediction is
thresholded at 0.4 when scoring and 0.5 when re-estimating; here the FSS method's own foreground (> 0.5)
is used in both stages, as fssbench scores every method.

`segment(good_images, good_masks, indices)` is the conditioned FSS model: it predicts the synthetic
images `indices` with the supports (good_images, good_masks) and returns boolean masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from fssbench.adapters.synthesis.quality import mask_iou

Segment = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AlignedMasks:
    masks: torch.Tensor  # [N, H, W] bool: the final mask of every synthetic image
    accepted: torch.Tensor  # [N] bool: moved to D_good in the scoring stage
    ious: torch.Tensor  # [N]: IoU of the first prediction with the coarse mask
    first_predictions: torch.Tensor  # [N, H, W] bool: the prediction conditioned on the real supports only


def align_masks(real_images: torch.Tensor, real_masks: torch.Tensor, images: torch.Tensor, coarse: torch.Tensor,
                segment: Segment, alpha: float, accepted_mask: str = "coarse") -> AlignedMasks:
    """Algorithm 1. real_images [K, 3, H, W], real_masks [K, H, W], images [N, 3, H, W], coarse [N, H, W] bool."""
    everything = torch.arange(len(images), device=images.device)
    first = segment(real_images, real_masks, everything)
    ious = mask_iou(first, coarse)
    accepted = ious >= alpha
    masks = (first if accepted_mask == "prediction" else coarse).clone()
    rejected = everything[~accepted]
    if len(rejected):
        good_images = torch.cat([real_images, images[accepted]])
        good_masks = torch.cat([real_masks.float(), masks[accepted].float()])
        masks[rejected] = segment(good_images, good_masks, rejected)
    return AlignedMasks(masks, accepted, ious, first)
