"""LVIS-92i, as Matcher reads it (aim-uofa/Matcher, matcher/data/lvis.py; PROTOCOLS.md section 1).

Matcher's annotations are a pickle, `LVIS/lvis_val.pkl`: a dict {class: {image name: {'annotations':
[{'segmentation': polygons or RLE}, ...]}}}, image names relative to `LVIS/coco/`. It is loaded with
an unpickler that refuses every global (protocols/safe_pickle.py). Matcher's rules:
- the val classes are the pickle's keys, in stored order, that have more than `shot` images, so fold
  membership differs between 1 and 5 shot: each shot is a dataset here (`lvis92i-1shot`,
  `lvis92i-5shot`), since a reader's fold classes cannot depend on the spec's shot;
- fold i = entries i, i+10, ... of that list, `len // 10` of them (the last few classes are in no fold);
- 2300 episodes per fold, episode j evaluates the fold's class j mod n (the `matcher-lvis` sampler);
- a mask is the union of the class's annotations in the image: polygons through detectron2's
  `polygons_to_bitmask` (pycocotools frPyObjects, merge, decode) at the image's size, RLE through
  `pycocotools.mask.decode`; image and mask are resized apart.
Class ids are positions in the pickle's key list. An image id is `<image name>#<class id>`, because an
image holds several classes whose masks may overlap; its mask is rendered once into the fssbench
cache (content-addressed, so edited annotations never reuse a stale mask).
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image

from fssbench.harness.cache import cache_dir
from fssbench.harness.datasets import DatasetReader
from fssbench.harness.episodes import Episode
from fssbench.harness.errors import DataError, UsageError
from fssbench.harness.extras import require
from fssbench.harness.files import atomic_write, open_image
from fssbench.protocols.hsnet import sample_round_robin_episodes
from fssbench.protocols.safe_pickle import load_plain_pickle

if TYPE_CHECKING:  # `fssbench episodes` reads the split lists without torch
    import torch

FOLDS = 10
VAL_SPLIT = "val"
ANNOTATIONS = "LVIS/lvis_val.pkl"
IMAGES = "LVIS/coco"
MASK_CACHE = "lvis92i-masks"
MASK_FORMAT_VERSION = 1  # part of every mask's cache key
CLASS_SEPARATOR = "#"

ClassAnnotations = dict[str, dict[str, Any]]  # image name -> {'annotations': [...]}


def coco_mask_api():
    """pycocotools.mask, imported on first use so that other datasets do not need it."""
    return require("pycocotools.mask", "LVIS-92i (its masks)", "coco")


def polygons_to_bitmask(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """detectron2's polygons_to_bitmask, which Matcher calls with `[np.asarray(p) for p in segm]`.
    pycocotools reads the list as boxes when its first entry has 4 numbers; that quirk is kept."""
    mask_util = coco_mask_api()
    if len(polygons) == 0:
        return np.zeros((height, width), dtype=bool)
    rles = mask_util.frPyObjects(polygons, height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def annotation_mask(segmentation: object, height: int, width: int) -> np.ndarray:
    """Matcher's get_mask for the two encodings a plain-data pickle can hold: polygons and RLE."""
    if isinstance(segmentation, list):
        return polygons_to_bitmask([np.asarray(polygon) for polygon in segmentation], height, width)
    if isinstance(segmentation, dict):
        return coco_mask_api().decode(segmentation).astype(bool)
    raise TypeError(f"a segmentation must be a polygon list or an RLE dict, not a {type(segmentation).__name__}")


def union_mask(segmentations: list[object], height: int, width: int, where: str) -> np.ndarray:
    """Matcher's `torch.cat(masks).sum(0) > 0` over the class's annotations in one image."""
    try:
        masks = [annotation_mask(segmentation, height, width) for segmentation in segmentations]
    except UsageError:
        raise
    except Exception as exc:  # pycocotools fails on malformed input with many exception types
        raise DataError(f"{where}: cannot decode an annotation ({type(exc).__name__}: {exc})") from None
    if len({mask.shape for mask in masks}) != 1:
        raise DataError(f"{where}: its annotations decode to masks of different sizes "
                        f"{sorted({mask.shape for mask in masks})}; Matcher cannot merge them either")
    return np.logical_or.reduce(masks)


def write_mask_png(path: Path, mask: np.ndarray) -> None:
    """Save a boolean mask as a 0/255 grey PNG, atomically (concurrent runs may render the same mask)."""
    atomic_write(path, lambda staging: Image.fromarray(mask.astype(np.uint8) * 255).save(staging, format="PNG"))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header."""
    with open_image(path) as image:
        return image.size


class LvisDataset(DatasetReader):
    """Matcher's LVIS-92i with the fold lists of `shot` (subclasses fix the shot)."""

    shot: ClassVar[int]
    labels_match_images = False
    layout = ("  <data root>/\n"
              f"    {IMAGES}/val2017/<id>.jpg and {IMAGES}/train2017/<id>.jpg   (COCO 2017 images)\n"
              f"    {ANNOTATIONS}   (Matcher's LVIS-92i annotations, from its lvis.zip)")

    @property
    def annotations_path(self) -> Path:
        return self.root / ANNOTATIONS

    @cached_property
    def annotations(self) -> dict[Any, ClassAnnotations]:
        return self._checked(load_plain_pickle(self.annotations_path))

    @cached_property
    def class_keys(self) -> list[Any]:
        return list(self.annotations)

    @property
    def class_names(self) -> list[str]:
        return [f"category {key}" for key in self.class_keys]

    def fold_classes(self, fold: int) -> list[int]:
        """Matcher's `[val_cat_ids[fold + nfolds * v] for v in range(val_nclass // nfolds)]`."""
        if not 0 <= fold < FOLDS:
            raise DataError(f"LVIS-92i has folds 0..{FOLDS - 1}, not {fold}")
        eligible = [class_id for class_id, key in enumerate(self.class_keys)
                    if len(self.annotations[key]) > self.shot]
        return [eligible[fold + FOLDS * v] for v in range(len(eligible) // FOLDS)]

    def split_list(self, split: str, fold: int) -> list[tuple[str, int]]:
        """Each fold class's images in the pickle's order (Matcher draws from `list(dict.keys())`)."""
        if split != VAL_SPLIT:
            raise DataError(f"dataset {self.name!r} reads only the {VAL_SPLIT!r} annotations, not {split!r}")
        return [(f"{image}{CLASS_SEPARATOR}{class_id}", class_id) for class_id in self.fold_classes(fold)
                for image in self.annotations[self.class_keys[class_id]]]

    def split_files(self, fold: int) -> list[Path]:
        return [self.annotations_path]

    def image_path(self, image_id: str) -> Path:
        image, _ = self._parts(image_id)
        return self.inside_root(f"{IMAGES}/{image}", f"image id {image_id!r}")

    def label_path(self, image_id: str) -> Path:
        """The class's union mask in this image, rendered into the fssbench cache on first use."""
        image, class_id = self._parts(image_id)
        annotations = self.annotations[self.class_keys[class_id]][image]["annotations"]
        segmentations = [annotation["segmentation"] for annotation in annotations]
        width, height = image_size(self.image_path(image_id))
        key = repr((MASK_FORMAT_VERSION, height, width, segmentations)).encode()
        digest = hashlib.sha256(key).hexdigest()
        path = cache_dir() / MASK_CACHE / digest[:2] / f"{digest}.png"
        if not path.is_file():
            where = f"{self.annotations_path}, {self.class_names[class_id]}, image {image!r}"
            write_mask_png(path, union_mask(segmentations, height, width, where))
        return path

    def foreground(self, label: torch.Tensor, class_id: int) -> torch.Tensor:
        return label > 0  # each rendered mask holds one class

    def ignore(self, label: torch.Tensor) -> torch.Tensor | None:
        return None

    def fingerprint(self) -> dict[str, str]:
        return {"annotations": f"{ANNOTATIONS} (Matcher's LVIS-92i)",
                "fold_classes": f"classes with more than {self.shot} images",
                "masks": "union of the class's polygons and RLEs (pycocotools)"}

    def _parts(self, image_id: str) -> tuple[str, int]:
        image, separator, class_text = image_id.rpartition(CLASS_SEPARATOR)
        if not separator or not class_text.isdigit() or int(class_text) >= len(self.class_keys):
            raise DataError(f"image id {image_id!r} is not '<image name>{CLASS_SEPARATOR}<class id>'")
        class_id = int(class_text)
        if image not in self.annotations[self.class_keys[class_id]]:
            raise DataError(f"image id {image_id!r}: {self.annotations_path} has no image {image!r} "
                            f"for {self.class_names[class_id]}")
        return image, class_id

    def _checked(self, data: object) -> dict[Any, ClassAnnotations]:
        path = self.annotations_path
        if not isinstance(data, dict):
            raise DataError(f"{path} holds a {type(data).__name__}; expected Matcher's dict "
                            "{class: {image name: {'annotations': [...]}}}")
        for key, images in data.items():
            if not isinstance(images, dict):
                raise DataError(f"{path}: class {key!r} maps to a {type(images).__name__}, not a dict of images")
            for image, info in images.items():
                self._check_image(image, info, f"{path}, class {key!r}")
        return data

    def _check_image(self, image: object, info: object, where: str) -> None:
        if not isinstance(image, str):
            raise DataError(f"{where}: image name {image!r} is not a string")
        self.inside_root(f"{IMAGES}/{image}", f"{where}, image {image!r}")
        annotations = info.get("annotations") if isinstance(info, dict) else None
        if not isinstance(annotations, list) or not annotations:
            raise DataError(f"{where}, image {image!r}: expected {{'annotations': [...]}} with at least one annotation")
        if not all(isinstance(annotation, dict) and "segmentation" in annotation for annotation in annotations):
            raise DataError(f"{where}, image {image!r}: every annotation must be a dict with a 'segmentation'")


class Lvis92iOneShot(LvisDataset):
    name = "lvis92i-1shot"
    shot = 1


class Lvis92iFiveShot(LvisDataset):
    name = "lvis92i-5shot"
    shot = 5


def sample_lvis_episodes(reader: DatasetReader, fold: int, shot: int, seed: int, episodes: int) -> list[Episode]:
    """Matcher's LVIS-92i episodes: PATNet's round-robin draw over the fold classes of the reader's shot."""
    if not isinstance(reader, LvisDataset) or reader.shot != shot:
        raise UsageError(f"sampler 'matcher-lvis' draws {shot}-shot episodes, so it needs dataset "
                         f"'lvis92i-{shot}shot' (its fold classes depend on the shot), not {reader.name!r}")
    return sample_round_robin_episodes(reader, fold, shot, seed, episodes, split=VAL_SPLIT)
