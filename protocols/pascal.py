"""PASCAL-5i: the 20 VOC classes in 4 folds, read as HSNet reads them (PROTOCOLS.md sections 1-2).

Fold i evaluates the 0-based classes 5i..5i+4. Episodes come from HSNet's split lists
(`splits/pascal/val/fold<i>.txt`, one `<VOC id>__<1-based class, 2 digits>` line per (image, class)
pair). Masks are the SBD-augmented `SegmentationClassAug` PNGs: pixel = class id + 1, 255 = ignore,
which is the base reader's default encoding.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import ClassVar

from fssbench.harness.datasets import DatasetReader
from fssbench.harness.errors import DataError
from fssbench.protocols.diam import read_diam_list
from fssbench.protocols.hsnet import read_list_lines

CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle",
           "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person",
           "pottedplant", "sheep", "sofa", "train", "tvmonitor")


class PairListDataset(DatasetReader):
    """Datasets read as HSNet's DatasetPASCAL reads them: split lists `splits/<list folder>/<split>/
    fold<i>.txt` of `<image id>__<1-based class>` lines, fold i = classes i*n..i*n+n-1."""

    classes: ClassVar[tuple[str, ...]]
    list_folder: ClassVar[str]
    classes_per_fold: ClassVar[int] = 5

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    def fold_classes(self, fold: int) -> list[int]:
        return list(range(fold * self.classes_per_fold, (fold + 1) * self.classes_per_fold))

    def split_files(self, fold: int) -> list[Path]:
        return [self.split_path("val", fold)]

    def split_list(self, split: str, fold: int) -> list[tuple[str, int]]:
        path = self.split_path(split, fold)
        return [self.parse_line(line, path, number) for number, line in enumerate(read_list_lines(path), start=1)]

    def split_path(self, split: str, fold: int) -> Path:
        return self.root / "splits" / self.list_folder / split / f"fold{fold}.txt"

    def parse_line(self, line: str, path: Path, number: int) -> tuple[str, int]:
        """HSNet's `[data.split('__')[0], int(data.split('__')[1]) - 1]`, refusing malformed lines."""
        image_id, separator, class_text = line.partition("__")
        if not separator or not image_id or not class_text.isdigit() or not 1 <= int(class_text) <= len(self.classes):
            raise DataError(f"{path}:{number}: expected '<image id>__<class 1..{len(self.classes)}>', got {line!r}")
        return image_id, int(class_text) - 1


class PascalDataset(PairListDataset):
    name = "pascal"
    classes = CLASSES
    list_folder = "pascal"
    layout = ("  <data root>/\n"
              "    VOC2012/JPEGImages/<id>.jpg\n"
              "    VOC2012/SegmentationClassAug/<id>.png   (SBD-augmented: class id + 1 per pixel, 255 = ignore)\n"
              "    splits/pascal/val/fold<i>.txt           (HSNet's data/splits/pascal: lines <id>__<class>)\n"
              "    lists/pascal/val.txt                    (generalized FSS only: DIaM's lists/pascal/val.txt)")

    def image_list_files(self) -> list[Path]:
        return [self.root / "lists" / "pascal" / "val.txt"]

    def image_list(self) -> list[str]:
        """DIaM's `JPEGImages/<id>.jpg SegmentationClassAug/<id>.png` lines, as VOC ids."""
        return read_diam_list(self.image_list_files()[0], lambda image: PurePosixPath(image).stem)

    def image_path(self, image_id: str) -> Path:
        return self.inside_root(f"VOC2012/JPEGImages/{image_id}.jpg", f"image id {image_id!r}")

    def label_path(self, image_id: str) -> Path:
        return self.inside_root(f"VOC2012/SegmentationClassAug/{image_id}.png", f"image id {image_id!r}")

    def instance_path(self, image_id: str) -> Path:
        """VOC's instance maps (only VOC2012's segmentation images have them; SBD-only images do not)."""
        return self.inside_root(f"VOC2012/SegmentationObject/{image_id}.png", f"image id {image_id!r}")

    def fingerprint(self) -> dict[str, str]:
        return {"masks": "VOC2012/SegmentationClassAug (SBD-augmented)"}
