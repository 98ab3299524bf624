"""COCO-20i: the 80 COCO classes in 4 folds, read as HSNet reads them (PROTOCOLS.md sections 1-2).

Class ids are 0-based indices into the sorted COCO category list. Per-class image lists come from
HSNet's pickles `splits/coco/val/fold<i>.pkl` (Matcher keeps the same files in `COCO2014/splits/val/`):
a dict {class id: ['val2014/COCO_val2014_<id>.jpg', ...]} whose entries are this reader's image ids.
The pickles are loaded with an unpickler that refuses every global (protocols/safe_pickle.py).
Masks are HSNet-style PNGs, `COCO2014/annotations/<entry with .jpg replaced by .png>`, pixel = class
id + 1, with no ignore label; without them, the masks `fssbench data prepare coco` builds from the
instances JSON with pycocotools (protocols/coco_prepare.py), which also gives instance maps for box
supports. The record says which source was used.

Two fold conventions exist and their numbers are not comparable:
- `coco` (interleaved, HSNet's default): fold i = ids i, i+4, ..., i+76, in that order.
- `coco-contiguous` (PANet; PFENet with use_split_coco=False): fold i = ids 20i..20i+19. No
  published list exists for it, so each class's list is taken from the interleaved val pickle that
  evaluates it (fold id mod 4); in the published pickles each class has images in exactly that one.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from fssbench.harness.datasets import DatasetReader
from fssbench.harness.errors import DataError
from fssbench.protocols.diam import read_diam_list
from fssbench.protocols.safe_pickle import load_plain_pickle

if TYPE_CHECKING:  # `fssbench episodes` reads the split lists without torch
    import torch

LABELS = "annotations-pycocotools"  # where `fssbench data prepare coco` writes label maps
INSTANCES = "instances-pycocotools"  # and instance maps (box supports)

CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)
FOLDS = 4
CLASSES_PER_FOLD = len(CLASSES) // FOLDS

ClassLists = dict[int, list[str]]


class CocoDataset(DatasetReader):
    name = "coco"
    layout = ("  <data root>/\n"
              "    COCO2014/val2014/COCO_val2014_<id>.jpg\n"
              "    COCO2014/annotations/val2014/COCO_val2014_<id>.png   (HSNet-style masks: class id + 1 per pixel;\n"
              "      or COCO2014/annotations/instances_val2014.json and `fssbench data prepare coco`)\n"
              "    splits/coco/val/fold<i>.pkl   (HSNet's data/splits/coco; Matcher's COCO2014/splits/val/ also works)\n"
              "    lists/coco/val.txt            (generalized FSS only: DIaM's lists/coco/val.txt)")

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._class_lists: dict[tuple[str, int], ClassLists] = {}
        hsnet_masks = any((self.root / "COCO2014" / "annotations" / split).is_dir() for split in ("val2014", "train2014"))
        self.mask_folder = "annotations" if hsnet_masks or not (self.root / "COCO2014" / LABELS).is_dir() else LABELS

    @property
    def class_names(self) -> list[str]:
        return list(CLASSES)

    def fold_classes(self, fold: int) -> list[int]:
        """HSNet's `[fold + nfolds * v for v in range(nclass // nfolds)]`."""
        return [fold + FOLDS * k for k in range(CLASSES_PER_FOLD)]

    def split_files(self, fold: int) -> list[Path]:
        return [self.pickle_path("val", fold)]

    def image_list_files(self) -> list[Path]:
        return [self.root / "lists" / "coco" / "val.txt"]

    def image_list(self) -> list[str]:
        """DIaM's `<...>/val2014/<name>.jpg <label path>` lines, as `val2014/<name>.jpg` ids."""
        return read_diam_list(self.image_list_files()[0], lambda image: "/".join(PurePosixPath(image).parts[-2:]))

    def split_list(self, split: str, fold: int) -> list[tuple[str, int]]:
        """(entry, class id) pairs, classes and entries in the pickle's stored order."""
        return [(entry, class_id) for class_id, entries in self.class_lists(split, fold).items() for entry in entries]

    def pickle_path(self, split: str, fold: int) -> Path:
        hsnet = self.root / "splits" / "coco" / split
        matcher = self.root / "COCO2014" / "splits" / split
        folder = matcher if matcher.is_dir() and not hsnet.is_dir() else hsnet
        return folder / f"fold{fold}.pkl"

    def class_lists(self, split: str, fold: int) -> ClassLists:
        """The per-class image lists of one pickle, checked once and kept."""
        key = (split, fold)
        if key not in self._class_lists:
            path = self.pickle_path(split, fold)
            self._class_lists[key] = self._checked(load_plain_pickle(path), path)
        return self._class_lists[key]

    def image_path(self, image_id: str) -> Path:
        return self.inside_root(f"COCO2014/{image_id}", f"image id {image_id!r}")

    def label_path(self, image_id: str) -> Path:
        """HSNet's `mask_path[:mask_path.index('.jpg')] + '.png'` under COCO2014/annotations/."""
        stem, found, _ = image_id.partition(".jpg")
        if not found:
            raise DataError(f"image id {image_id!r} has no '.jpg' to turn into its mask's name")
        return self.inside_root(f"COCO2014/{self.mask_folder}/{stem}.png", f"image id {image_id!r}")

    def instance_path(self, image_id: str) -> Path | None:
        """Instance maps exist only where `fssbench data prepare coco` wrote them."""
        stem = image_id.partition(".jpg")[0]
        path = self.inside_root(f"COCO2014/{INSTANCES}/{stem}.png", f"image id {image_id!r}")
        return path if path.is_file() else None

    def ignore(self, label: torch.Tensor) -> torch.Tensor | None:
        return None  # HSNet-style COCO masks have no ignore label

    def fingerprint(self) -> dict[str, str]:
        if self.mask_folder == LABELS:
            return {"masks": f"pycocotools from instances JSON (COCO2014/{LABELS})"}
        return {"masks": "HSNet-style PNGs (COCO2014/annotations)"}

    def _checked(self, data: object, path: Path) -> ClassLists:
        if not isinstance(data, dict):
            raise DataError(f"{path} holds a {type(data).__name__}; expected a dict {{class id: [image, ...]}}")
        for class_id, entries in data.items():
            if type(class_id) is not int or not 0 <= class_id < len(CLASSES):
                raise DataError(f"{path}: key {class_id!r} is not a class id 0..{len(CLASSES) - 1}")
            if not isinstance(entries, list):
                raise DataError(f"{path}: class {class_id} maps to a {type(entries).__name__}, not a list of images")
            for entry in entries:
                self._check_entry(entry, path, class_id)
        return data

    def _check_entry(self, entry: object, path: Path, class_id: int) -> None:
        """An entry is a relative image path under COCO2014/ (HSNet joins it to that folder)."""
        where = f"{path}, class {class_id}, entry {entry!r}"
        if not isinstance(entry, str):
            raise DataError(f"{where} is a {type(entry).__name__}, not an image path")
        if os.path.isabs(entry):
            raise DataError(f"{where} is an absolute path, outside the data root {self.root}; refusing it")
        self.inside_root(f"COCO2014/{entry}", where)
        if ".jpg" not in entry:
            raise DataError(f"{where}: expected an image path like 'val2014/COCO_val2014_000000429717.jpg'")


class CocoContiguousDataset(CocoDataset):
    name = "coco-contiguous"
    layout = CocoDataset.layout + "\n  (contiguous folds derive their lists from the four interleaved val pickles)"

    def fold_classes(self, fold: int) -> list[int]:
        return list(range(fold * CLASSES_PER_FOLD, (fold + 1) * CLASSES_PER_FOLD))

    def split_files(self, fold: int) -> list[Path]:
        return [self.pickle_path("val", interleaved) for interleaved in range(FOLDS)]

    def split_list(self, split: str, fold: int) -> list[tuple[str, int]]:
        """Each class's list from the interleaved pickle of fold `class id mod 4`, the one that evaluates it."""
        if split != "val":
            raise DataError(f"dataset {self.name!r} derives only val lists (from the interleaved val pickles), "
                            f"not {split!r}")
        return [(entry, class_id) for class_id in self.fold_classes(fold)
                for entry in self.class_lists("val", class_id % FOLDS).get(class_id, [])]
