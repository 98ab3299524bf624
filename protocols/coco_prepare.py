"""`fssbench data prepare coco`: COCO-20i masks built from the instances JSON with pycocotools.

For users without HSNet's mask PNGs. Writes, once, for every image of `instances_<split>.json`:
- `COCO2014/annotations-pycocotools/<split>/<image>.png`: pixel = 0-based class id + 1 (class ids
  index the categories sorted by COCO id), the union of each class's annotations (crowd ones
  included); where annotations of two classes overlap, the one later in the JSON is kept;
- `COCO2014/instances-pycocotools/<split>/<image>.png` (16-bit): annotation number + 1, the instance
  maps box supports need.
These differ slightly from HSNet's PNGs, so the reader records which source it used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from fssbench.harness.errors import DataError
from fssbench.harness.extras import require
from fssbench.harness.files import atomic_write
from fssbench.protocols.coco import INSTANCES, LABELS


def prepare_coco_masks(root: Path, split: str = "val2014",
                       on_image: Callable[[int, int], None] = lambda done, total: None) -> int:
    """Write label and instance PNGs for every image of the split; returns how many were written."""
    require("pycocotools", "`fssbench data prepare coco`", "coco")
    from pycocotools.coco import COCO

    source = root / "COCO2014" / "annotations" / f"instances_{split}.json"
    if not source.is_file():
        raise DataError(f"{source} does not exist: download COCO 2014's annotations "
                        "(annotations_trainval2014.zip from cocodataset.org) and unpack it under COCO2014/annotations/")
    coco = COCO(str(source))
    if len(coco.getCatIds()) != 80:
        raise DataError(f"{source} defines {len(coco.getCatIds())} categories; COCO-20i's class ids index COCO's 80")
    class_of = {category: index for index, category in enumerate(sorted(coco.getCatIds()))}
    images = sorted(coco.getImgIds())
    for done, image_id in enumerate(images, start=1):
        info = coco.loadImgs(image_id)[0]
        labels = np.zeros((info["height"], info["width"]), dtype=np.uint8)
        instances = np.zeros((info["height"], info["width"]), dtype=np.uint16)
        for number, annotation in enumerate(coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None)), start=1):
            covered = coco.annToMask(annotation).astype(bool)
            labels[covered] = class_of[annotation["category_id"]] + 1
            instances[covered] = number
        name = Path(info["file_name"]).with_suffix(".png").name
        _save(labels, root / "COCO2014" / LABELS / split / name)
        _save(instances, root / "COCO2014" / INSTANCES / split / name)
        on_image(done, len(images))
    return len(images)


def _save(array: np.ndarray, path: Path) -> None:
    atomic_write(path, lambda staging: Image.fromarray(array).save(staging, format="PNG"))
