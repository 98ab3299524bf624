"""iSAID-5i, as GF-SAM reads it (ANDYZAQ/GF-SAM, matcher/data/isaid.py; PROTOCOLS.md section 4).

15 aerial-image classes in 3 folds: fold i evaluates the 0-based classes 5i..5i+4 (GF-SAM's
DatasetISAID is a DatasetPASCAL with nfolds 3, nclass 15). Split lists are GF-SAM's
`matcher/data/splits/isaid/val/fold<i>.txt`, one `<patch name>__<1-based class>` line per (patch,
class) pair; the published lists have 3108, 3657 and 3298 lines. Each line is the query of one
episode (the `gfsam-list` sampler). Images are `iSAID_patches/val/images/<name>.png`, label maps
`iSAID_patches/val/semantic_png/<name>_instance_color_RGB.png` read as they are stored: one channel,
pixel = class id + 1, 255 = ignore (the PASCAL encoding GF-SAM's extract_ignore_idx expects).
Class names follow iSAID's category order (label values 1..15).
"""

from __future__ import annotations

from pathlib import Path

from fssbench.datasets import DatasetReader
from fssbench.errors import DataError
from fssbench.protocols.hsnet import read_list_lines

CLASSES = ("ship", "storage_tank", "baseball_diamond", "tennis_court", "basketball_court",
           "ground_track_field", "bridge", "large_vehicle", "small_vehicle", "helicopter",
           "swimming_pool", "roundabout", "soccer_ball_field", "plane", "harbor")
CLASSES_PER_FOLD = 5
PATCHES = "remote_sensing/iSAID_patches/val"


def parse_isaid_line(line: str, path: Path, number: int) -> tuple[str, int]:
    """GF-SAM's `[data.split('__')[0], int(data.split('__')[1]) - 1]`, refusing malformed lines."""
    name, separator, class_text = line.partition("__")
    if not separator or not name or not class_text.isdigit() or not 1 <= int(class_text) <= len(CLASSES):
        raise DataError(f"{path}:{number}: expected '<patch name>__<class 1..{len(CLASSES)}>', got {line!r}")
    return name, int(class_text) - 1


class IsaidDataset(DatasetReader):
    name = "isaid"
    layout = ("  <data root>/\n"
              f"    {PATCHES}/images/<name>.png\n"
              f"    {PATCHES}/semantic_png/<name>_instance_color_RGB.png   (one channel: class id + 1, 255 = ignore)\n"
              "    splits/isaid/val/fold<i>.txt   (GF-SAM's matcher/data/splits/isaid: lines <name>__<class>)")

    @property
    def class_names(self) -> list[str]:
        return list(CLASSES)

    def fold_classes(self, fold: int) -> list[int]:
        return list(range(fold * CLASSES_PER_FOLD, (fold + 1) * CLASSES_PER_FOLD))

    def split_files(self, fold: int) -> list[Path]:
        return [self._split_path("val", fold)]

    def split_list(self, split: str, fold: int) -> list[tuple[str, int]]:
        path = self._split_path(split, fold)
        return [parse_isaid_line(line, path, number) for number, line in enumerate(read_list_lines(path), start=1)]

    def image_path(self, image_id: str) -> Path:
        return self.inside_root(f"{PATCHES}/images/{image_id}.png", f"image id {image_id!r}")

    def label_path(self, image_id: str) -> Path:
        return self.inside_root(f"{PATCHES}/semantic_png/{image_id}_instance_color_RGB.png", f"image id {image_id!r}")

    def fingerprint(self) -> dict[str, str]:
        return {"masks": f"{PATCHES}/semantic_png (class id + 1, 255 = ignore)"}

    def _split_path(self, split: str, fold: int) -> Path:
        return self.root / "splits" / "isaid" / split / f"fold{fold}.txt"
