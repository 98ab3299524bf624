"""ISIC2018 (task 1), as the cross-domain benchmark reads it (PROTOCOLS.md section 4).

The 2594 training images are split into 3 classes by PATNet's `class_id.csv` (1867 nevus, 519
melanoma, 208 seborrheic keratosis). PATNet (data/isic.py) reads class folders
`ISIC/ISIC2018_Task1-2_Training_Input/<1|2|3>/` but ships no code saying which class goes where;
GF-SAM (data/isic.py) reads the csv itself with `{'nevus': '1', 'melanoma': '2',
'seborrheic_keratosis': '3'}` over the flat image folder. This reader follows GF-SAM: class ids
0, 1, 2 = nevus, melanoma, seborrheic keratosis, each class's images sorted by file name, taken from
the csv (a missing image is an error, not a smaller class). Masks are
`ISIC/ISIC2018_Task1_Training_GroundTruth/<id>_segmentation.png`, PATNet's path.
"""

from __future__ import annotations

import csv
from pathlib import Path

from fssbench.harness.errors import DataError
from fssbench.protocols.crossdomain import PatnetMaskReader

CLASSES = ("nevus", "melanoma", "seborrheic_keratosis")
CSV_HEADER = ["ID", "Class"]


def read_class_csv(path: Path) -> list[tuple[str, int]]:
    """(ISIC id, class id) rows of `class_id.csv`, refusing rows that are not `<id>,<class name>`."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            rows = list(csv.reader(file))
    except OSError as exc:
        raise DataError(f"cannot read the ISIC class list {path}: {exc.strerror}; copy PATNet's "
                        "data/isic/class_id.csv there") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path} is not a readable csv file ({exc}); "
                        "copy PATNet's data/isic/class_id.csv there") from None
    if not rows or rows[0] != CSV_HEADER:
        raise DataError(f"{path} must start with the header line 'ID,Class' (PATNet's data/isic/class_id.csv)")
    parsed = [_parse_row(row, path, number) for number, row in enumerate(rows[1:], start=2)]
    seen: set[str] = set()
    for number, (image_id, _) in enumerate(parsed, start=2):
        if image_id in seen:
            raise DataError(f"{path}:{number}: {image_id} is listed twice; each image has one class")
        seen.add(image_id)
    return parsed


def _parse_row(row: list[str], path: Path, number: int) -> tuple[str, int]:
    if len(row) != 2 or row[1] not in CLASSES:
        raise DataError(f"{path}:{number}: expected '<ISIC id>,<{'|'.join(CLASSES)}>', got {','.join(row)!r}")
    image_id = row[0]
    if not image_id or "." in image_id or "/" in image_id or "\\" in image_id:
        raise DataError(f"{path}:{number}: {image_id!r} is not an ISIC image id like 'ISIC_0000000'")
    return image_id, CLASSES.index(row[1])


def image_file_name(image_id: str) -> str:
    return f"{image_id}.jpg"


class IsicDataset(PatnetMaskReader):
    name = "isic"
    layout = ("  <data root>/\n"
              "    ISIC/ISIC2018_Task1-2_Training_Input/<id>.jpg\n"
              "    ISIC/ISIC2018_Task1_Training_GroundTruth/<id>_segmentation.png\n"
              "    splits/isic/class_id.csv   (PATNet's data/isic/class_id.csv: lines <id>,<class name>)")

    @property
    def class_names(self) -> list[str]:
        return list(CLASSES)

    @property
    def class_csv(self) -> Path:
        return self.root / "splits" / "isic" / "class_id.csv"

    def split_list(self, split: str, fold: int) -> list[tuple[str, int]]:
        """Each class's ids in the order GF-SAM lists their images: sorted by file name `<id>.jpg`."""
        self.require_test_split(split)
        ids_by_class: dict[int, list[str]] = {class_id: [] for class_id in range(len(CLASSES))}
        for image_id, class_id in read_class_csv(self.class_csv):
            ids_by_class[class_id].append(image_id)
        return [(image_id, class_id) for class_id, image_ids in ids_by_class.items()
                for image_id in sorted(image_ids, key=image_file_name)]

    def split_files(self, fold: int) -> list[Path]:
        return [self.class_csv]

    def image_path(self, image_id: str) -> Path:
        return self.inside_root(f"ISIC/ISIC2018_Task1-2_Training_Input/{image_file_name(image_id)}",
                                f"image id {image_id!r}")

    def label_path(self, image_id: str) -> Path:
        return self.inside_root(f"ISIC/ISIC2018_Task1_Training_GroundTruth/{image_id}_segmentation.png",
                                f"image id {image_id!r}")

    def fingerprint(self) -> dict[str, str]:
        return {"classes": "splits/isic/class_id.csv (GF-SAM's order: nevus, melanoma, seborrheic_keratosis)"}
