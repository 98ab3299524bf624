"""What PATNet's cross-domain readers share (PROTOCOLS.md section 4): Deepglobe, ISIC2018 and Chest X-ray.

PATNet (slei109/PATNet, data/deepglobe.py, isic.py, lung.py) reads every mask as
`Image.open(path).convert('L')`, sets values < 128 to 0 and >= 128 to 1, and resizes image and mask
to 400x400 separately; its batches carry no `query_ignore_idx`, so no pixel is ignored. Per-class
image lists come from folder listings, `sorted(glob(folder/*))` keeping the names whose
`basename.split('.')[1]` is the wanted extension. These datasets have one fold (0) and one split
("test", the split PATNet's test.py asks for).
"""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path

from fssbench.harness.cache import cache_dir
from fssbench.harness.datasets import GreyMaskReader
from fssbench.harness.errors import DataError
from fssbench.harness.files import atomic_write_text

TEST_SPLIT = "test"


class PatnetMaskReader(GreyMaskReader):
    """PATNet's read_mask: grey masks binarized at 128, no ignore label, image and mask resized apart."""

    def fold_classes(self, fold: int) -> list[int]:
        """Every class: these datasets have a single fold."""
        return list(range(len(self.class_names)))

    def require_test_split(self, split: str) -> None:
        if split != TEST_SPLIT:
            raise DataError(f"dataset {self.name!r} has only the {TEST_SPLIT!r} split, not {split!r}")


def patnet_listing(folder: Path, extension: str, layout: str) -> list[str]:
    """The file names PATNet takes from `folder`: `sorted(glob('%s/*' % folder))`, keeping a name when
    `basename.split('.')[1] == extension` (a name without a dot, which would crash PATNet, is skipped)."""
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist or is not a folder. Expected layout:\n{layout}")
    paths = sorted(glob.glob(os.path.join(glob.escape(str(folder)), "*")))
    names = [os.path.basename(path) for path in paths]
    return [name for name in names if name.split(".")[1:2] == [extension]]


def listing_file(dataset: str, root: Path, image_ids: list[str]) -> Path:
    """A cache file holding the image ids a manifest is drawn from. PATNet's lists are folder listings,
    not files, and manifests are cached by the content of their split files: this file stands in for
    them, so that adding or removing an image builds a new manifest."""
    root_key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    path = cache_dir() / "listings" / f"{dataset}-{root_key}.txt"
    atomic_write_text(path, "".join(f"{image_id}\n" for image_id in image_ids))
    return path
