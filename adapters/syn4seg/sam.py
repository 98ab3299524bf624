"""SABR's box-prompt segmenter: segment-anything's SamPredictor with one box, single-mask output.

`load_sam_segmenter(path)` reads SAM ViT-H from a local `sam_vit_h_4b8939.pth` (`--weights sam=`,
loaded with weights_only=True); `tiny_sam_segmenter(seed)` builds the tiny random SAM of affinity-sam
for tests and timing-only runs (its masks mean nothing)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from fssbench.harness.errors import UsageError
from fssbench.harness.extras import require


class SamBoxSegmenter:
    """A BoxSegmenter: image [H, W, 3] uint8 RGB and box [x0, y0, x1, y1] -> bool foreground [H, W]. The
    image embedding is computed once per image (SABR prompts it once per class)."""

    def __init__(self, sam: torch.nn.Module) -> None:
        segment_anything = require("segment_anything", "Syn4Seg's SAM boundary refinement (SABR)", "sam")
        self.predictor = segment_anything.SamPredictor(sam)
        self.image_key: bytes | None = None

    def __call__(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        key = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()
        if key != self.image_key:
            self.predictor.set_image(np.ascontiguousarray(image), image_format="RGB")
            self.image_key = key
        masks, _, _ = self.predictor.predict(box=np.asarray(box, dtype=np.float32), multimask_output=False)
        return masks[0].astype(bool)


def load_sam_segmenter(path: Path, device: torch.device | str = "cpu") -> SamBoxSegmenter:
    require("segment_anything", "Syn4Seg's SAM boundary refinement (SABR)", "sam")
    from fssbench.adapters.affinity_sam import ARCHITECTURES, SAM_SOURCE, load_sam

    if not Path(path).is_file():
        raise UsageError(f"--weights sam={path}: no such file; SABR needs SAM ViT-H's sam_vit_h_4b8939.pth "
                         f"({SAM_SOURCE})")
    return SamBoxSegmenter(load_sam(ARCHITECTURES["full"], Path(path)).to(device))


def tiny_sam_segmenter(seed: int = 0, device: torch.device | str = "cpu") -> SamBoxSegmenter:
    require("segment_anything", "Syn4Seg's SAM boundary refinement (SABR)", "sam")
    from fssbench.adapters.affinity_sam import ARCHITECTURES, build_sam

    torch.manual_seed(seed)
    return SamBoxSegmenter(build_sam(ARCHITECTURES["tiny"]).to(device))
