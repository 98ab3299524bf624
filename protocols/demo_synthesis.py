"""The `demo` image source: new labelled composites of the demo dataset's classes, with true masks.

It lets the whole synthesis pipeline (AlignDiff, Syn4Seg) run and be measured on this machine, where no
diffusion weights exist. A sample of class c is composed exactly as the demo's images are (an object of
c's texture pasted as a random smooth shape or the horse silhouette onto a background photograph,
sometimes with a second class), but from its own generator, seeded by sha256("demo-synthesis", class,
seed): never the evaluation split's images (tests/test_synthesis.py checks a set against them).

The demo has no diffusion model, hence no cross-attention maps. Its coarse mask is a stated degradation
of the true mask that imitates their failure modes (blobby, blurred boundary, responses leaking onto the
background): the true mask area-averaged to 16x16 (the grid of SD's cross-attention maps used for coarse
masks at 512x512), plus seeded smooth noise (a 4x4 Gaussian field of standard deviation `coarse_noise`,
bicubically upsampled), upsampled bicubically to the image, clipped at 0 and divided by its maximum. It
is not a cross-attention mask; numbers measured with it say how Algorithm 1 repairs masks of that kind.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fssbench.harness.image_sources import ImageSource, Sample, SampleRequest, SourceSettings
from fssbench.harness.errors import UsageError
from fssbench.protocols import demo

VERSION = 1
ATTENTION_GRID = 16
NOISE_GRID = 4
DEFAULT_COARSE_NOISE = 0.35


def sample_seed(class_id: int, seed: int) -> int:
    digest = hashlib.sha256(f"demo-synthesis/{demo.SEED}/{class_id}/{seed}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def degraded_mask(truth: np.ndarray, rng: np.random.RandomState, noise: float) -> np.ndarray:
    """The demo's coarse mask (module docstring): HxW bool -> HxW float32 in [0, 1]."""
    size = truth.shape
    mask = torch.from_numpy(truth.astype(np.float32))[None, None]
    coarse = F.interpolate(mask, (ATTENTION_GRID, ATTENTION_GRID), mode="area")
    field = torch.from_numpy(rng.normal(0, noise, (1, 1, NOISE_GRID, NOISE_GRID)).astype(np.float32))
    coarse = coarse + F.interpolate(field, (ATTENTION_GRID, ATTENTION_GRID), mode="bicubic", align_corners=False)
    coarse = F.interpolate(coarse, size, mode="bicubic", align_corners=False).clamp(min=0)[0, 0]
    return (coarse / coarse.max().clamp(min=1e-6)).numpy()


class DemoSource(ImageSource):
    name = "demo"
    description = "new composites of the demo's classes with exact masks and a stated degraded coarse mask"
    gives_coarse_masks = True
    gives_true_masks = True

    def __init__(self, class_names: list[str], coarse_noise: float) -> None:
        unknown = [name for name in class_names if name not in demo.CLASSES]
        if unknown:
            raise UsageError(f"the demo image source makes only the demo's classes ({', '.join(demo.CLASSES)}); "
                             f"this dataset's {unknown[0]!r} is not one of them: use the diffusers or folder source")
        self.coarse_noise = coarse_noise
        self.photos = {name: demo._photo(name) for name in (*demo.CLASSES, *demo.BACKGROUNDS)}
        self.horse = demo._horse()

    @classmethod
    def open(cls, settings: SourceSettings) -> DemoSource:
        return cls(settings.class_names, float(settings.settings.get("coarse_noise", DEFAULT_COARSE_NOISE)))

    def identity(self) -> dict[str, Any]:
        code = hashlib.sha256(Path(__file__).read_bytes() + Path(demo.__file__).read_bytes()).hexdigest()
        return {"name": self.name, "version": VERSION, "demo_version": demo.VERSION, "code_sha256": code,
                "coarse_noise": self.coarse_noise}

    def generate(self, request: SampleRequest) -> Sample:
        class_id = demo.CLASSES.index(request.class_name)
        rng = np.random.RandomState(sample_seed(class_id, request.seed))
        image, label = demo._compose(rng, self.photos, self.horse, primary=class_id)
        truth = label == class_id + 1
        return Sample(image=image, coarse=degraded_mask(truth, rng, self.coarse_noise), truth=truth)
