"""Deepglobe, as PATNet reads it (slei109/PATNet, data/deepglobe.py; PROTOCOLS.md section 4).

PATNet's data/preprocess.py cuts the 2448x2448 land-cover images into 408x408 tiles and writes, for
each of 6 classes, the tiles holding that class as `Deepglobe/<1..6>/test/origin/<tile>.jpg` with a
white-on-black mask `Deepglobe/<1..6>/test/groundtruth/<tile>.png`. Its class order is the BGR
colour list `[0,255,255], [255,255,0], [255,0,255], [0,255,0], [255,0,0], [255,255,255]` (cv2 reads
BGR), i.e. agriculture, urban, rangeland, forest, water and barren land.

Image ids are `<class folder>/<tile file name>`; a class's images are its origin folder's `.jpg`
files in sorted order. Episode j evaluates class j mod 6 (the `patnet` sampler).
"""

from __future__ import annotations

from pathlib import Path

from fssbench.harness.errors import DataError
from fssbench.protocols.crossdomain import TEST_SPLIT, PatnetMaskReader, listing_file, patnet_listing

CLASSES = ("agriculture_land", "urban_land", "rangeland", "forest_land", "water", "barren_land")
FOLDERS = ("1", "2", "3", "4", "5", "6")  # PATNet's categories, in class-id order


class DeepglobeDataset(PatnetMaskReader):
    name = "deepglobe"
    layout = ("  <data root>/\n"
              "    Deepglobe/<1..6>/test/origin/<tile>.jpg\n"
              "    Deepglobe/<1..6>/test/groundtruth/<tile>.png   (PATNet's data/preprocess.py output: white = class)")

    @property
    def class_names(self) -> list[str]:
        return list(CLASSES)

    def split_list(self, split: str, fold: int) -> list[tuple[str, int]]:
        """PATNet's build_img_metadata_classwise: each class folder's sorted `.jpg` files."""
        self.require_test_split(split)
        return [(f"{folder}/{file_name}", class_id)
                for class_id, folder in enumerate(FOLDERS)
                for file_name in patnet_listing(self.root / "Deepglobe" / folder / "test" / "origin", "jpg",
                                                self.layout)]

    def split_files(self, fold: int) -> list[Path]:
        return [listing_file(self.name, self.root, [image for image, _ in self.split_list(TEST_SPLIT, fold)])]

    def image_path(self, image_id: str) -> Path:
        folder, file_name = self._parts(image_id)
        return self.inside_root(f"Deepglobe/{folder}/test/origin/{file_name}", f"image id {image_id!r}")

    def label_path(self, image_id: str) -> Path:
        """PATNet's `groundtruth/<name.split('.')[0]>.png` in the image's class folder."""
        folder, file_name = self._parts(image_id)
        stem = file_name.split(".")[0]
        return self.inside_root(f"Deepglobe/{folder}/test/groundtruth/{stem}.png", f"image id {image_id!r}")

    def fingerprint(self) -> dict[str, str]:
        return {"masks": "Deepglobe/<class>/test/groundtruth (PATNet's tiles, >= 128 is foreground)"}

    def _parts(self, image_id: str) -> tuple[str, str]:
        folder, _, file_name = image_id.partition("/")
        if folder not in FOLDERS or not file_name or "/" in file_name:
            raise DataError(f"image id {image_id!r} is not '<class folder 1..6>/<tile file name>'")
        return folder, file_name
