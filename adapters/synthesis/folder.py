"""The `folder` image source: samples a user generated elsewhere (e.g. on a cluster), one folder per class.

Layout (`--weights images=DIR`):

    DIR/<class name>/<name>.{png,jpg,jpeg}     the images, taken in sorted order
    DIR/<class name>/masks/<name>.png          optional true masks (nonzero = foreground)
    DIR/<class name>/coarse/<name>.png         optional coarse masks (grey levels = foreground score)

The sample with seed s is the class's s-th image (seeds count samples from 0, as the authors' generator
seeds image i with i). A class folder that is missing, or holds fewer images than asked for, is named in
the error. The source's identity hashes the listing (relative names, sizes, modification times) once per
run, so a changed folder never reuses samples stored from the old one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from fssbench.harness.errors import UsageError
from fssbench.harness.files import open_image
from fssbench.harness.image_sources import ImageSource, Sample, SampleRequest, SourceSettings

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LAYOUT = "DIR/<class name>/<name>.png|jpg, optional DIR/<class name>/masks/<name>.png and coarse/<name>.png"


class FolderSource(ImageSource):
    name = "folder"
    description = "images (and optional true or coarse masks) generated elsewhere, one folder per class"
    gives_coarse_masks = True  # where coarse/ holds them
    gives_true_masks = True  # where masks/ holds them

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise UsageError(f"--weights images={root}: no such folder (expected {LAYOUT})")
        self.root = root
        listing = sorted((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                         for p in root.rglob("*") if p.is_file())
        self.listing_sha256 = hashlib.sha256(repr(listing).encode()).hexdigest()

    @classmethod
    def open(cls, settings: SourceSettings) -> FolderSource:
        if "images" not in settings.weights:
            raise UsageError(f"the folder image source needs --weights images=DIR ({LAYOUT})")
        return cls(Path(settings.weights["images"]))

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "root": str(self.root.resolve()), "listing_sha256": self.listing_sha256}

    def images(self, class_name: str) -> list[Path]:
        folder = self.root / class_name
        if not folder.is_dir():
            raise UsageError(f"folder image source: class {class_name!r} has no folder {folder} (expected {LAYOUT})")
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    def generate(self, request: SampleRequest) -> Sample:
        images = self.images(request.class_name)
        if request.seed >= len(images):
            raise UsageError(f"folder image source: {self.root / request.class_name} holds {len(images)} images; "
                             f"sample {request.seed} was asked for (ask the method for fewer samples or add images)")
        path = images[request.seed]
        with open_image(path) as image:
            rgb = np.asarray(image.convert("RGB")).copy()
        return Sample(rgb, coarse=self._grey(path.parent / "coarse" / f"{path.stem}.png", rgb.shape[:2]),
                      truth=self._mask(path.parent / "masks" / f"{path.stem}.png", rgb.shape[:2]))

    @staticmethod
    def _read(path: Path, size: tuple[int, int]) -> np.ndarray | None:
        if not path.is_file():
            return None
        with open_image(path) as image:
            grey = np.asarray(image.convert("L"))
        if grey.shape != size:
            raise UsageError(f"{path} is {grey.shape[1]}x{grey.shape[0]}, its image {size[1]}x{size[0]}")
        return grey

    def _grey(self, path: Path, size: tuple[int, int]) -> np.ndarray | None:
        grey = self._read(path, size)
        return None if grey is None else grey.astype(np.float32) / 255

    def _mask(self, path: Path, size: tuple[int, int]) -> np.ndarray | None:
        grey = self._read(path, size)
        return None if grey is None else grey > 0
