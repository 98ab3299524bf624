"""The Deepglobe, ISIC2018, Chest X-ray (PATNet), LVIS-92i (Matcher) and iSAID-5i (GF-SAM) readers on
tiny data trees in their real layouts: the oracle scores 100 on every episode, and the episodes equal
those of the reference loaders, transcribed below from their public code."""

from __future__ import annotations

import glob
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util

from fssbench.harness.errors import DataError, UsageError
from fssbench.protocols.chestxray import ChestXrayDataset
from fssbench.protocols.deepglobe import DeepglobeDataset
from fssbench.protocols.hsnet import sample_each_entry_episodes, sample_round_robin_episodes
from fssbench.protocols.isaid import IsaidDataset
from fssbench.protocols.isic import IsicDataset
from fssbench.protocols.lvis import Lvis92iFiveShot, Lvis92iOneShot, sample_lvis_episodes
from fssbench.protocols.safe_pickle import load_plain_pickle

# pycocotools 2.0 decodes through numpy 2 with a deprecation warning about __array__; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

WIDTH, HEIGHT = 13, 9  # not square, so the squash to the evaluation size is exercised


def write_image(path: Path, seed: int, size: tuple[int, int] = (WIDTH, HEIGHT)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def block_mask(value: int, corner: int = 0, size: tuple[int, int] = (WIDTH, HEIGHT)) -> np.ndarray:
    """`value` in a block, `corner` in the top-left corner, 0 elsewhere."""
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    mask[size[1] // 4: 3 * size[1] // 4 + 1, size[0] // 4: 3 * size[0] // 4 + 1] = value
    mask[0, :3] = corner
    return mask


def write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path)


def eval_fold0(cli, tmp_path: Path, protocol: str, root: Path, episodes: int) -> dict:
    result = cli("eval", "-m", "oracle", "-p", protocol, "--fold", "0", "--episodes", str(episodes),
                 "--data-root", str(root), "--json", "--out", str(tmp_path / "out"))
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)["results"][0]


def assert_every_episode_is_exact(fold_result: dict, episodes: int) -> None:
    assert fold_result["episodes"] == episodes and fold_result["metrics"]["miou"] == 100.0
    for index, class_id, *counts in fold_result["episode_scores"]:
        inter, union = counts[:2], counts[2:]
        assert inter == union and union[1] > 0, (index, class_id, counts)


def patnet_sample_episode(metadata_classwise: dict[str, list[str]], categories: list[str], shot: int,
                          idx: int) -> tuple[str, list[str], int]:
    """PATNet's sample_episode (data/deepglobe.py, isic.py, lung.py), verbatim but for names."""
    class_id = idx % len(categories)
    class_sample = categories[class_id]
    query_name = np.random.choice(metadata_classwise[class_sample], 1, replace=False)[0]
    support_names = []
    while True:
        support_name = np.random.choice(metadata_classwise[class_sample], 1, replace=False)[0]
        if query_name != support_name:
            support_names.append(support_name)
        if len(support_names) == shot:
            break
    return query_name, support_names, class_id


def patnet_episodes(metadata_classwise: dict[str, list[str]], categories: list[str], shot: int, num: int = 600):
    np.random.seed(0)  # test.py: utils.fix_randseed(0), then the DataLoader reads idx 0..num-1 in order
    return [patnet_sample_episode(metadata_classwise, categories, shot, idx) for idx in range(num)]


def glob_sorted(folder: str, extension: str) -> list[str]:
    """PATNet's `sorted(glob('%s/*' % folder))` filtered on `basename.split('.')[1] == extension`."""
    return [path for path in sorted(glob.glob('%s/*' % folder)) if os.path.basename(path).split('.')[1] == extension]


# Deepglobe -------------------------------------------------------------------------------------------

def make_deepglobe_root(root: Path) -> Path:
    """Three tiles per class folder, white-on-black RGB masks, and files PATNet's listing skips."""
    for folder in range(1, 7):
        base = root / "Deepglobe" / str(folder) / "test"
        for tile in range(3):
            name = f"{100 * folder + tile}_sat_{tile}{folder}"
            write_image(base / "origin" / f"{name}.jpg", 10 * folder + tile)
            write_mask(base / "groundtruth" / f"{name}.png", np.repeat(block_mask(255, 100)[:, :, None], 3, axis=2))
        (base / "origin" / "notes.txt").write_text("not an image")
        write_mask(base / "origin" / "preview.png", block_mask(255))
    return root


@pytest.mark.parametrize("protocol", ["deepglobe-1shot", "deepglobe-5shot"])
def test_deepglobe_oracle_scores_100_on_every_class(cli, tmp_path, protocol):
    root = make_deepglobe_root(tmp_path / "data")
    fold = eval_fold0(cli, tmp_path, protocol, root, episodes=6)
    assert_every_episode_is_exact(fold, 6)
    assert fold["class_names"] == {"0": "agriculture_land", "1": "urban_land", "2": "rangeland",
                                   "3": "forest_land", "4": "water", "5": "barren_land"}


def test_deepglobe_episodes_are_patnets(tmp_path):
    root = make_deepglobe_root(tmp_path / "data")
    reader = DeepglobeDataset(root)
    base = os.path.join(str(root), "Deepglobe")
    categories = ["1", "2", "3", "4", "5", "6"]
    classwise = {cat: glob_sorted(os.path.join(base, cat, "test", "origin"), "jpg") for cat in categories}
    reference = patnet_episodes(classwise, categories, shot=5)
    ours = sample_round_robin_episodes(reader, fold=0, shot=5, seed=0, episodes=600)
    assert [(str(reader.image_path(e.query)), [str(reader.image_path(s)) for s in e.supports], e.class_id)
            for e in ours] == [(q, s, c) for q, s, c in reference]
    query = reference[0][0]  # PATNet's load_frame: groundtruth/<id>.png in the query's class folder
    ann_path = os.path.join(base, query.split('/')[-4], 'test', 'groundtruth')
    assert str(reader.label_path(ours[0].query)) == os.path.join(ann_path, query.split('/')[-1].split('.')[0]) + '.png'


# ISIC2018 --------------------------------------------------------------------------------------------

ISIC_ROWS = [("ISIC_0000004", "melanoma"), ("ISIC_0000001", "nevus"), ("ISIC_0000000", "nevus"),
             ("ISIC_0000013", "melanoma"), ("ISIC_0000002", "seborrheic_keratosis"),
             ("ISIC_0000010", "seborrheic_keratosis"), ("ISIC_0000003", "nevus")]


def make_isic_root(root: Path) -> Path:
    """Seven images in three classes, a Windows-style class_id.csv, and masks of another size than their
    images (PATNet resizes both to 400x400 apart)."""
    csv_path = root / "splits" / "isic" / "class_id.csv"
    csv_path.parent.mkdir(parents=True)
    csv_path.write_bytes(("ID,Class\r\n" + "".join(f"{i},{c}\r\n" for i, c in ISIC_ROWS)).encode())
    for number, (image_id, _) in enumerate(ISIC_ROWS):
        write_image(root / "ISIC" / "ISIC2018_Task1-2_Training_Input" / f"{image_id}.jpg", number)
        write_mask(root / "ISIC" / "ISIC2018_Task1_Training_GroundTruth" / f"{image_id}_segmentation.png",
                   block_mask(255, 60, size=(2 * WIDTH, 2 * HEIGHT)))
    return root


@pytest.mark.parametrize("protocol", ["isic-1shot", "isic-5shot"])
def test_isic_oracle_scores_100_on_every_class(cli, tmp_path, protocol):
    root = make_isic_root(tmp_path / "data")
    fold = eval_fold0(cli, tmp_path, protocol, root, episodes=3)
    assert_every_episode_is_exact(fold, 3)
    assert fold["class_names"] == {"0": "nevus", "1": "melanoma", "2": "seborrheic_keratosis"}


def test_isic_classes_come_from_class_id_csv_in_gfsam_order(tmp_path):
    reader = IsicDataset(make_isic_root(tmp_path / "data"))
    assert reader.split_list("test", 0) == [
        ("ISIC_0000000", 0), ("ISIC_0000001", 0), ("ISIC_0000003", 0), ("ISIC_0000004", 1), ("ISIC_0000013", 1),
        ("ISIC_0000002", 2), ("ISIC_0000010", 2)]
    assert reader.label_path("ISIC_0000002").name == "ISIC_0000002_segmentation.png"
    with pytest.raises(DataError, match="only the 'test' split"):
        reader.split_list("val", 0)


def test_isic_episodes_are_patnets_over_the_csv_classes(tmp_path):
    root = make_isic_root(tmp_path / "data")
    reader = IsicDataset(root)
    folder = root / "ISIC" / "ISIC2018_Task1-2_Training_Input"
    cls_dict = {"nevus": "1", "melanoma": "2", "seborrheic_keratosis": "3"}  # GF-SAM's data/isic.py
    classwise = {cat: [] for cat in ["1", "2", "3"]}
    for path in glob_sorted(str(folder), "jpg"):
        classwise[cls_dict[dict(ISIC_ROWS)[os.path.basename(path).split('.')[0]]]] += [path]
    reference = patnet_episodes(classwise, ["1", "2", "3"], shot=1)
    ours = sample_round_robin_episodes(reader, fold=0, shot=1, seed=0, episodes=600)
    assert [(str(reader.image_path(e.query)), [str(reader.image_path(s)) for s in e.supports], e.class_id)
            for e in ours] == [(q, s, c) for q, s, c in reference]


@pytest.mark.parametrize("content, problem", [
    ("Id,Class\r\nISIC_0000000,nevus\r\n", "must start with the header line"),
    ("ID,Class\r\nISIC_0000000,naevus\r\n", r"class_id\.csv:2: expected"),
    ("ID,Class\r\n../../etc/passwd,nevus\r\n", r"class_id\.csv:2: '../../etc/passwd' is not an ISIC image id"),
    ("ID,Class\r\nISIC_0000000,nevus\r\nISIC_0000000,melanoma\r\n", r"class_id\.csv:3: ISIC_0000000 is listed twice"),
])
def test_a_malformed_isic_class_list_is_refused_naming_the_line(tmp_path, content, problem):
    root = make_isic_root(tmp_path / "data")
    (root / "splits" / "isic" / "class_id.csv").write_text(content)
    with pytest.raises(DataError, match=problem):
        IsicDataset(root).split_list("test", 0)


# Chest X-ray -----------------------------------------------------------------------------------------

def make_chestxray_root(root: Path) -> Path:
    for number, name in enumerate(["CHNCXR_0002_0", "CHNCXR_0001_0", "CHNCXR_0003_1"]):
        write_image(root / "LungSegmentation" / "CXR_png" / f"{name}.png", number)
        write_mask(root / "LungSegmentation" / "masks" / f"{name}_mask.png", block_mask(255, 90))
    return root


@pytest.mark.parametrize("protocol", ["chestxray-1shot", "chestxray-5shot"])
def test_chestxray_oracle_scores_100(cli, tmp_path, protocol):
    root = make_chestxray_root(tmp_path / "data")
    fold = eval_fold0(cli, tmp_path, protocol, root, episodes=4)
    assert_every_episode_is_exact(fold, 4)
    assert fold["class_names"] == {"0": "lung"}


def test_chestxray_episodes_are_patnets(tmp_path):
    root = make_chestxray_root(tmp_path / "data")
    reader = ChestXrayDataset(root)
    base = os.path.join(str(root), "LungSegmentation")
    reference = patnet_episodes({"1": glob_sorted(os.path.join(base, "masks"), "png")}, ["1"], shot=5)
    ours = sample_round_robin_episodes(reader, fold=0, shot=5, seed=0, episodes=600)
    assert [(str(reader.label_path(e.query)), [str(reader.label_path(s)) for s in e.supports], e.class_id)
            for e in ours] == [(q, s, c) for q, s, c in reference]
    query = reference[0][0]  # PATNet's load_frame: query_name[:-9] + '.png' in CXR_png
    assert str(reader.image_path(ours[0].query)) == os.path.join(base, "CXR_png", os.path.basename(query[:-9] + '.png'))


def test_chestxray_masks_patnet_cannot_pair_are_refused_with_the_fix(tmp_path):
    root = make_chestxray_root(tmp_path / "data")
    write_mask(root / "LungSegmentation" / "masks" / "MCUCXR_0001_0.png", block_mask(255))
    with pytest.raises(DataError, match=r"MCUCXR_0001_0\.png and 0 other masks .* Delete them"):
        ChestXrayDataset(root).split_list("test", 0)


# LVIS-92i --------------------------------------------------------------------------------------------

LVIS_IMAGES = [f"val2017/{number:012d}.jpg" for number in range(1, 7)] + ["train2017/000000000007.jpg"]


def rle_of(mask: np.ndarray, counts_as_text: bool) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode() if counts_as_text else rle["counts"]}


def lvis_annotations(class_number: int, image_number: int) -> list[dict]:
    """Two overlapping annotations, a polygon and an RLE (counts as bytes or text), placed per class."""
    left = (class_number + image_number) % 5
    polygon = [float(v) for v in (left, 1, left + 6, 1, left + 6, 6, left, 6)]
    blob = np.zeros((HEIGHT, WIDTH), dtype=bool)
    blob[4:8, left + 4: left + 8] = True
    return [{"segmentation": [polygon], "category_id": class_number},
            {"segmentation": rle_of(blob, counts_as_text=image_number % 2 == 0), "category_id": class_number}]


def make_lvis_root(root: Path) -> tuple[Path, list[int]]:
    """22 classes in Matcher's pickle layout: the 12 keyed 1000+ hold all 7 images, the 10 keyed 2000+
    only 2, interleaved so that the 1- and 5-shot fold lists differ. Returns the pickle's key order."""
    for number, image in enumerate(LVIS_IMAGES):
        write_image(root / "LVIS" / "coco" / image, number)
    keys = [key for pair in zip(range(1000, 1012), range(2000, 2010)) for key in pair] + [1010, 1011]
    data = {key: {image: {"annotations": lvis_annotations(key, number)}
                  for number, image in enumerate(LVIS_IMAGES if key < 2000 else LVIS_IMAGES[:2])}
            for key in keys}
    write_lvis_pickle(root, data)
    return root, keys


def write_lvis_pickle(root: Path, data: object) -> Path:
    path = root / "LVIS" / "lvis_val.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(data, protocol=4))
    return path


@pytest.mark.parametrize("protocol, classes", [("lvis92i-1shot", 2), ("lvis92i-5shot", 1)])
def test_lvis_oracle_scores_100_on_every_fold_class(cli, tmp_path, protocol, classes):
    root, _ = make_lvis_root(tmp_path / "data")
    fold = eval_fold0(cli, tmp_path, protocol, root, episodes=2 * classes)
    assert_every_episode_is_exact(fold, 2 * classes)
    assert len(fold["class_names"]) == classes


def test_lvis_fold_lists_depend_on_the_shot_as_in_matcher(tmp_path):
    root, keys = make_lvis_root(tmp_path / "data")
    one, five = Lvis92iOneShot(root), Lvis92iFiveShot(root)
    val_1shot = list(range(len(keys)))  # every class has more than 1 image
    val_5shot = [i for i, key in enumerate(keys) if key < 2000]
    assert [one.fold_classes(f) for f in (0, 3)] == [[val_1shot[0], val_1shot[10]], [val_1shot[3], val_1shot[13]]]
    assert [five.fold_classes(f) for f in (0, 9)] == [[val_5shot[0]], [val_5shot[9]]]
    assert one.class_names[1] == "category 2000"
    assert one.split_list("val", 0)[:2] == [(f"{LVIS_IMAGES[0]}#0", 0), (f"{LVIS_IMAGES[1]}#0", 0)]


def test_lvis_episodes_are_matchers(tmp_path):
    root, _ = make_lvis_root(tmp_path / "data")
    reader = Lvis92iFiveShot(root)
    val_anno = load_plain_pickle(root / "LVIS" / "lvis_val.pkl")
    val_cat_ids = [i for i in list(val_anno.keys()) if len(val_anno[i]) > 5]  # build_img_metadata_classwise
    class_ids_ori = [val_cat_ids[1 + 10 * v] for v in range(len(val_cat_ids) // 10)]  # fold 1
    np.random.seed(0)
    reference = []
    for idx in range(2300):  # __getitem__ and load_frame
        idx %= len(class_ids_ori)
        class_sample = class_ids_ori[idx]
        query_name = np.random.choice(list(val_anno[class_sample].keys()), 1, replace=False)[0]
        support_names = []
        while True:
            support_name = np.random.choice(list(val_anno[class_sample].keys()), 1, replace=False)[0]
            if query_name != support_name:
                support_names.append(support_name)
            if len(support_names) == 5:
                break
        reference.append((class_sample, query_name, support_names))
    ours = sample_lvis_episodes(reader, fold=1, shot=5, seed=0, episodes=2300)
    assert [(reader.class_keys[e.class_id], e.query.split("#")[0], [s.split("#")[0] for s in e.supports])
            for e in ours] == reference


def test_lvis_mask_is_the_union_of_the_class_annotations(tmp_path):
    root, keys = make_lvis_root(tmp_path / "data")
    reader = Lvis92iOneShot(root)
    image_id = f"{LVIS_IMAGES[3]}#{keys.index(1004)}"
    mask = np.asarray(Image.open(reader.label_path(image_id))) > 0
    polygon, rle = (annotation["segmentation"] for annotation in lvis_annotations(1004, 3))
    from_polygon = mask_util.decode(mask_util.merge(mask_util.frPyObjects([np.asarray(polygon[0])], HEIGHT, WIDTH)))
    from_rle = mask_util.decode(rle)
    assert mask.shape == (HEIGHT, WIDTH) and mask.any()
    assert np.array_equal(mask, (from_polygon > 0) | (from_rle > 0))
    assert reader.label_path(image_id) == reader.label_path(image_id)  # rendered once, then reused


def test_an_lvis_annotation_that_does_not_decode_is_a_data_error_naming_it(tmp_path):
    root, _ = make_lvis_root(tmp_path / "data")
    path = write_lvis_pickle(root, {1000: {LVIS_IMAGES[0]: {"annotations": [{"segmentation": 7}]}}})
    with pytest.raises(DataError, match=r"category 1000, image 'val2017/000000000001.jpg': cannot decode") as error:
        Lvis92iOneShot(root).label_path(f"{LVIS_IMAGES[0]}#0")
    assert str(path) in str(error.value)


def test_an_lvis_fold_without_classes_is_a_data_error(tmp_path):
    root, _ = make_lvis_root(tmp_path / "data")
    write_lvis_pickle(root, {1000: {image: {"annotations": lvis_annotations(1000, 0)} for image in LVIS_IMAGES}})
    with pytest.raises(DataError, match="fold 0 of dataset 'lvis92i-1shot' .* has no classes"):
        sample_lvis_episodes(Lvis92iOneShot(root), fold=0, shot=1, seed=0, episodes=10)


def test_lvis_sampler_refuses_a_dataset_of_another_shot(tmp_path):
    root, _ = make_lvis_root(tmp_path / "data")
    with pytest.raises(UsageError, match="needs dataset 'lvis92i-5shot'"):
        sample_lvis_episodes(Lvis92iOneShot(root), fold=0, shot=5, seed=0, episodes=10)


class RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")  # unpickling would call open(marker, "w")


def test_an_lvis_pickle_carrying_a_global_is_refused_without_running_it(cli, tmp_path):
    root, _ = make_lvis_root(tmp_path / "data")
    marker = tmp_path / "was-executed"
    path = write_lvis_pickle(root, {1000: {LVIS_IMAGES[0]: {"annotations": [RunsCodeWhenUnpickled(marker)]}}})
    result = cli("episodes", "-p", "lvis92i-1shot", "--fold", "0", "--data-root", str(root))
    assert result.code == 1
    assert str(path) in result.stderr.replace("\n", "") and "plain data only" in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("data, problem", [
    ([1, 2], "holds a list"),
    ({1000: [LVIS_IMAGES[0]]}, "not a dict of images"),
    ({1000: {"../../../etc/passwd": {"annotations": [{"segmentation": []}]}}}, "outside the data root"),
    ({1000: {LVIS_IMAGES[0]: {"annotations": []}}}, "at least one annotation"),
    ({1000: {LVIS_IMAGES[0]: {"annotations": [{"bbox": [0, 0, 1, 1]}]}}}, "must be a dict with a 'segmentation'"),
])
def test_an_lvis_pickle_of_the_wrong_shape_is_refused(tmp_path, data, problem):
    root, _ = make_lvis_root(tmp_path / "data")
    path = write_lvis_pickle(root, data)
    with pytest.raises(DataError, match=problem) as error:
        Lvis92iOneShot(root).split_list("val", 0)
    assert str(path) in str(error.value)


# iSAID-5i --------------------------------------------------------------------------------------------

def make_isaid_root(root: Path) -> Path:
    """Fold 0 (classes 1..5): ten lines, two per class, masks with another class and ignore pixels."""
    patches = root / "remote_sensing" / "iSAID_patches" / "val"
    lines = []
    for number in range(10):
        name, class_number = f"P{number:04d}_0_800_0_800", number % 5 + 1
        write_image(patches / "images" / f"{name}.png", number)
        write_mask(patches / "semantic_png" / f"{name}_instance_color_RGB.png",
                   block_mask(class_number, corner=255 if number % 2 else 9))
        lines.append(f"{name}__{class_number}\n")
    split = root / "splits" / "isaid" / "val" / "fold0.txt"
    split.parent.mkdir(parents=True)
    split.write_text("".join(lines))
    return root


@pytest.mark.parametrize("protocol", ["isaid5i-1shot", "isaid5i-5shot"])
def test_isaid_oracle_scores_100_on_every_fold_class(cli, tmp_path, protocol):
    root = make_isaid_root(tmp_path / "data")
    fold = eval_fold0(cli, tmp_path, protocol, root, episodes=5)  # lines 1..5 hold classes 1..5
    assert_every_episode_is_exact(fold, 5)
    assert fold["class_names"] == {"0": "ship", "1": "storage_tank", "2": "baseball_diamond",
                                   "3": "tennis_court", "4": "basketball_court"}


def test_isaid_episodes_are_gfsams(tmp_path):
    root = make_isaid_root(tmp_path / "data")
    reader = IsaidDataset(root)
    with open(root / "splits" / "isaid" / "val" / "fold0.txt") as f:  # DatasetISAID.build_img_metadata
        img_metadata = [[data.split('__')[0], int(data.split('__')[1]) - 1] for data in f.read().split('\n')[:-1]]
    classwise = {class_id: [] for class_id in range(15)}
    for img_name, img_class in img_metadata:
        classwise[img_class] += [img_name]
    np.random.seed(0)
    reference = []
    for idx in range(len(img_metadata)):  # DatasetPASCAL.sample_episode
        query_name, class_sample = img_metadata[idx]
        support_names = []
        while True:
            support_name = np.random.choice(classwise[class_sample], 1, replace=False)[0]
            if query_name != support_name:
                support_names.append(support_name)
            if len(support_names) == 5:
                break
        reference.append((query_name, support_names, class_sample))
    ours = sample_each_entry_episodes(reader, fold=0, shot=5, seed=0, episodes=3657)
    assert [(e.query, list(e.supports), e.class_id) for e in ours] == reference
    with pytest.raises(DataError, match="lists 10 entries, more than the 9 episodes"):
        sample_each_entry_episodes(reader, fold=0, shot=5, seed=0, episodes=9)


def test_isaid_lists_are_read_line_by_line_and_refused_when_malformed(tmp_path):
    root = make_isaid_root(tmp_path / "data")
    (root / "splits" / "isaid" / "val" / "fold0.txt").write_text("P0000_0_800_0_800__16\n")
    with pytest.raises(DataError, match=r"fold0\.txt:1: expected '<image id>__<class 1\.\.15>'"):
        IsaidDataset(root).split_list("val", 0)
