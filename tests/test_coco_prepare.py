"""COCO masks and instance maps built from an instances JSON (polygon and RLE annotations)."""

import json

import numpy as np
import pytest
from PIL import Image

from fssbench.harness.episodes import Episode
from fssbench.harness.loading import EpisodeLoader
from fssbench.protocols.coco import CocoDataset

MISSING_COCO_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
CATEGORY_IDS = [i for i in range(1, 91) if i not in MISSING_COCO_IDS]  # COCO's 80 category ids


def entry(number: int) -> str:
    return f"val2014/COCO_val2014_{number:012d}.jpg"


@pytest.fixture
def coco_root(tmp_path):
    from pycocotools import mask as mask_utils

    root = tmp_path / "data"
    images, annotations = [], []
    for number in (1, 2):
        path = root / "COCO2014" / entry(number)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 30, 3), 40 * number, np.uint8)).save(path)
        images.append({"id": number, "file_name": path.name, "height": 20, "width": 30})
    crowd = np.zeros((20, 30), np.uint8, order="F")
    crowd[10:20, 20:30] = 1
    rle = mask_utils.encode(crowd)
    rle["counts"] = rle["counts"].decode()
    annotations += [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 40.0, "bbox": [2, 2, 8, 5],
         "segmentation": [[2, 2, 10, 2, 10, 7, 2, 7]]},  # person (class 0): a polygon
        {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 4.0, "bbox": [14, 2, 2, 2],
         "segmentation": [[14, 2, 16, 2, 16, 4, 14, 4]]},  # a second, smaller person
        {"id": 3, "image_id": 1, "category_id": 5, "iscrowd": 1, "area": 100.0, "bbox": [20, 10, 10, 10],
         "segmentation": rle},  # airplane (class 4): crowd RLE
        {"id": 4, "image_id": 2, "category_id": 1, "iscrowd": 0, "area": 40.0, "bbox": [2, 2, 8, 5],
         "segmentation": [[2, 2, 10, 2, 10, 7, 2, 7]]},
    ]
    categories = [{"id": i, "name": f"c{i}", "supercategory": "x"} for i in CATEGORY_IDS]
    source = root / "COCO2014" / "annotations" / "instances_val2014.json"
    source.parent.mkdir(parents=True)
    source.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root


def test_prepare_writes_class_and_instance_maps_and_the_reader_uses_them(cli, coco_root):
    result = cli("data", "prepare", "coco", "--data-root", str(coco_root))
    assert result.code == 0, result.stderr
    reader = CocoDataset(coco_root)
    assert reader.fingerprint()["masks"].startswith("pycocotools")
    labels = np.asarray(Image.open(reader.label_path(entry(1))))
    assert set(np.unique(labels)) == {0, 1, 5}  # person = class 0 -> 1, airplane = class 4 -> 5
    assert (labels[10:20, 20:30] == 5).all() and labels[3, 3] == 1 and labels[15, 5] == 0
    instances = np.asarray(Image.open(reader.instance_path(entry(1))))
    assert set(np.unique(instances)) == {0, 1, 2, 3}

    loader = EpisodeLoader(reader, 60, support="box")
    loaded = loader.load(Episode(0, 0, 0, entry(2), (entry(1),)))
    box, labelled = loaded.support_masks[0], loaded.support_labelled[0]
    assert box.any() and labelled.any() and not labelled.all()  # the small person's box is left unlabelled


def test_prepare_names_the_missing_json(cli, tmp_path):
    (tmp_path / "COCO2014").mkdir()
    result = cli("data", "prepare", "coco", "--data-root", str(tmp_path))
    assert result.code == 1 and "instances_val2014.json" in result.stderr
