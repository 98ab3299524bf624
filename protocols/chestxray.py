"""Chest X-ray lung segmentation, as PATNet reads it (slei109/PATNet, data/lung.py; PROTOCOLS.md section 4).

One class (lung). PATNet lists the masks, `sorted(glob('LungSegmentation/masks/*'))` keeping `.png`
names, draws queries and supports among them, and finds each mask's image by cutting the last 9
characters: `masks/<name>_mask.png` -> `CXR_png/<name>.png`. Image ids here are the mask file names.

The Kaggle download ("chest-xray-masks-and-labels") also holds 138 Montgomery masks named
`MCUCXR_<k>.png`, without `_mask`; PATNet maps them to images that do not exist and fails (PATNet
issue #9). Since the episodes depend on which masks are listed, such a tree is refused with the
fix spelled out rather than silently filtered.
"""

from __future__ import annotations

from pathlib import Path

from fssbench.harness.errors import DataError
from fssbench.protocols.crossdomain import TEST_SPLIT, PatnetMaskReader, listing_file, patnet_listing

CLASSES = ("lung",)
MASK_SUFFIX = "_mask.png"


class ChestXrayDataset(PatnetMaskReader):
    name = "chestxray"
    layout = ("  <data root>/\n"
              "    LungSegmentation/CXR_png/<name>.png\n"
              "    LungSegmentation/masks/<name>_mask.png   (the Kaggle 'Lung Segmentation' folder, renamed)")

    @property
    def class_names(self) -> list[str]:
        return list(CLASSES)

    def split_list(self, split: str, fold: int) -> list[tuple[str, int]]:
        """PATNet's build_img_metadata_classwise: the sorted `.png` names of the mask folder."""
        self.require_test_split(split)
        masks = self.root / "LungSegmentation" / "masks"
        names = patnet_listing(masks, "png", self.layout)
        unpaired = [name for name in names if not name.endswith(MASK_SUFFIX)]
        if unpaired:
            raise DataError(
                f"{masks / unpaired[0]} and {len(unpaired) - 1} other masks do not end in '{MASK_SUFFIX}'. PATNet "
                f"finds the image of masks/<name>{MASK_SUFFIX} at CXR_png/<name>.png and fails on these (the "
                "Montgomery MCUCXR_* masks of the Kaggle download). Delete them (the usual fix) or rename them "
                f"to <name>{MASK_SUFFIX}; the episodes depend on which you do, so say which in your results.")
        return [(name, 0) for name in names]

    def split_files(self, fold: int) -> list[Path]:
        return [listing_file(self.name, self.root, [image for image, _ in self.split_list(TEST_SPLIT, fold)])]

    def image_path(self, image_id: str) -> Path:
        """PATNet's `os.path.basename(mask)[:-9] + '.png'` in CXR_png."""
        self._check(image_id)
        return self.inside_root(f"LungSegmentation/CXR_png/{image_id[:-len(MASK_SUFFIX)]}.png",
                                f"image id {image_id!r}")

    def label_path(self, image_id: str) -> Path:
        self._check(image_id)
        return self.inside_root(f"LungSegmentation/masks/{image_id}", f"image id {image_id!r}")

    def fingerprint(self) -> dict[str, str]:
        return {"masks": "LungSegmentation/masks (>= 128 is foreground)"}

    def _check(self, image_id: str) -> None:
        if not image_id.endswith(MASK_SUFFIX) or "/" in image_id:
            raise DataError(f"image id {image_id!r} is not a mask file name '<name>{MASK_SUFFIX}'")
