"""Syn4Seg's pseudo-labels of synthetic images (paper section III-C/D): the GFSS learner registered on the
run's supports labels each image (M, "raw"), then APF (M1), APR (M2) and SABR (M3) refine it, each stage
switchable. Label maps are in the run's label-index space (0 background, base classes, novel classes,
FREE 255) at the image's own resolution.

Pixel features (eqs. 2-7) are the learner's head embedding (unit norm per pixel, the space its cosine
classifier and novel registration live in), upsampled bilinearly from stride 8 to the image; support
prototypes (eq. 2) pool the supports' embedding over their pixels of the class. APR's candidate classes
(`--option apr_candidates`): the novel classes (global and local prototypes, eq. 6) plus, by default, the
base classes with their image-local prototype only (the paper's "optionally base classes"); `all` adds
background the same way.

Each image's stage masks are kept in the synthetic-set store under the sample's key, the supports'
sha256, the base checkpoint's sha256 and every option that changes them, so a resumed or repeated run
reads them instead of labelling again. Pseudo-label quality per stage (class-accumulated mIoU of the
requested class's mask, FREE counted as not the class) is measured against the source's true masks
where it has them (the demo source does).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from fssbench.adapters.syn4seg.refine import FREE, apf, apr, sabr, support_prototypes, upsample
from fssbench.adapters.syn4seg.synthesis import SyntheticImage
from fssbench.adapters.synthesis.cost import SynthesisCost
from fssbench.adapters.synthesis.quality import MaskQuality
from fssbench.adapters.synthesis.store import SyntheticStore, bytes_tensors, tensor_bytes
from fssbench.harness.contract import GfssLabelSpace, GfssSupportSet

VERSION = 1
STAGES = ("raw", "apf", "apr", "sabr")
APR_CANDIDATES = ("novel", "novel+base", "all")

Embed = Callable[[torch.Tensor], torch.Tensor]  # images [N, 3, H, W] in [0, 1] -> embedding [N, D, h, w]
Segment = Callable[[torch.Tensor], torch.Tensor]  # images [N, 3, H, W] in [0, 1] -> label indices [N, H, W]


def image_tensor(sample_image: np.ndarray, device: torch.device) -> torch.Tensor:
    """HxWx3 uint8 -> [1, 3, H, W] float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(sample_image)).permute(2, 0, 1)[None].to(device).float().div_(255)


class PseudoLabeller:
    """One run's pseudo-labelling: the learner (registered on the run's supports), the support prototypes
    and the refinement options."""

    def __init__(self, options: dict[str, Any], labels: GfssLabelSpace, supports: GfssSupportSet, embed: Embed,
                 segment: Segment, segmenter, identity: dict[str, Any], store: SyntheticStore, cost: SynthesisCost,
                 quality: MaskQuality) -> None:
        self.options, self.space = options, labels
        self.embed, self.segment, self.segmenter = embed, segment, segmenter
        self.store, self.cost, self.quality = store, cost, quality
        self.novel = list(range(1 + len(labels.base), labels.size))
        self.stages = ["raw"] + [stage for stage in STAGES[1:] if options[stage]]
        self.identity = {"kind": "syn4seg-labels", "version": VERSION, **identity, "stages": self.stages,
                         **{name: options[name] for name in ("lambda", "beta", "delta", "apr_candidates")}}
        self.supports = supports
        self._prototypes: dict[int, torch.Tensor] | None = None
        self.free_fraction: dict[str, list[int]] = {stage: [0, 0] for stage in STAGES}

    def prototypes(self) -> dict[int, torch.Tensor]:
        """Eq. 2 over the supports (computed on first need: a run whose labels are all cached never embeds)."""
        if self._prototypes is None:
            images, labels = self.supports.images, self.supports.labels
            features = torch.cat([upsample(self.embed(images[i:i + 1])[0], labels.shape[-2:])[None]
                                  for i in range(len(images))])
            self._prototypes = support_prototypes(features, labels, self.novel)
        return self._prototypes

    def local_classes(self) -> list[int]:
        candidates = str(self.options["apr_candidates"])
        base = list(range(1, 1 + len(self.space.base)))
        return {"novel": [], "novel+base": base, "all": [0] + base}[candidates]

    def stage_masks(self, image: SyntheticImage) -> dict[str, torch.Tensor]:
        """The image's mask after each stage that is on (raw always), from the store or computed now."""
        key = {**self.identity, "sample": image.key, "image_sha256": image.image_sha256}

        def make() -> tuple[dict[str, bytes], dict[str, Any]]:
            masks = self.compute(image.sample.image)
            return {"stages.safetensors": tensor_bytes({k: v.to(torch.uint8) for k, v in masks.items()})}, {}

        stored = bytes_tensors(self.store.get_or_make(key, make)["stages.safetensors"])
        masks = {stage: stored[stage].long() for stage in self.stages}
        truth = image.sample.truth
        label = 1 + len(self.space.base) + self.space.novel.index(image.class_id)
        for stage, mask in masks.items():
            if truth is not None:
                self.quality.update(stage, image.class_id, mask == label, torch.from_numpy(truth))
            self.free_fraction[stage][0] += int((mask == FREE).sum())
            self.free_fraction[stage][1] += mask.numel()
        return masks

    def compute(self, picture: np.ndarray) -> dict[str, torch.Tensor]:
        image = image_tensor(picture, self.supports.images.device)
        with self.cost.timed("initial_masks"):
            mask = self.segment(image)[0].cpu()
            features = upsample(self.embed(image)[0], mask.shape)
        masks = {"raw": mask}
        if self.options["apf"]:
            with self.cost.timed("apf"):
                mask = masks["apf"] = apf(mask, features, self.prototypes(), float(self.options["lambda"]))
        if self.options["apr"]:
            with self.cost.timed("apr"):
                mask = masks["apr"] = apr(mask, features, self.prototypes(), float(self.options["beta"]),
                                          float(self.options["lambda"]), self.local_classes())
        if self.options["sabr"]:
            with self.cost.timed("sabr"):
                masks["sabr"] = sabr(picture, mask, self.segmenter, float(self.options["delta"]))
        return masks
