"""The PASCAL-5i, COCO-20i and FSS-1000 readers on tiny data trees in their real layouts: the oracle
scores 100 on every episode, split lists are read as HSNet reads them, and hostile or broken split
files are refused with errors that name the file."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fssbench.harness.errors import DataError
from fssbench.protocols.coco import CocoContiguousDataset, CocoDataset
from fssbench.protocols.fss1000 import Fss1000Dataset
from fssbench.protocols.pascal import PascalDataset

IMAGE_SIZE = (13, 9)  # width x height: not square, so the 400x400 squash is exercised


def write_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.RandomState(seed).randint(0, 256, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_label(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label.astype(np.uint8), mode="L").save(path)


def label_with(value: int, other: int = 0) -> np.ndarray:
    """A label map holding `value` in a block and `other` in a corner (other classes or ignore)."""
    label = np.zeros((IMAGE_SIZE[1], IMAGE_SIZE[0]), dtype=np.uint8)
    label[2:7, 3:10] = value
    label[0, :4] = other
    return label


def eval_record(cli, tmp_path: Path, protocol: str, root: Path, episodes: int) -> dict:
    result = cli("eval", "-m", "oracle", "-p", protocol, "--fold", "0", "--episodes", str(episodes),
                 "--data-root", str(root), "--json", "--out", str(tmp_path / "out"))
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def assert_every_episode_is_exact(fold_result: dict) -> None:
    for index, class_id, *counts in fold_result["episode_scores"]:
        inter, union = counts[:2], counts[2:]
        assert inter == union and union[1] > 0, (index, class_id, counts)
    assert fold_result["metrics"]["fbiou"] == 100.0


# PASCAL-5i -------------------------------------------------------------------------------------------

def make_pascal_root(root: Path) -> Path:
    """Fold 0 (classes 1..5) with two images per class; the first five lines cover all five classes."""
    lines = []
    for number in range(10):
        image_id, class_number = f"2008_{number:06d}", number % 5 + 1
        write_image(root / "VOC2012" / "JPEGImages" / f"{image_id}.jpg", number)
        label = label_with(class_number, other=255 if number % 2 else 7)  # ignore pixels, or another class
        write_label(root / "VOC2012" / "SegmentationClassAug" / f"{image_id}.png", label)
        lines.append(f"{image_id}__{class_number:02d}\n")
    split = root / "splits" / "pascal" / "val" / "fold0.txt"
    split.parent.mkdir(parents=True)
    split.write_text("".join(lines))
    return root


@pytest.mark.parametrize("protocol", ["pascal5i-1shot", "pascal5i-5shot"])
def test_pascal_oracle_scores_100(cli, tmp_path, protocol):
    root = make_pascal_root(tmp_path / "data")
    record = eval_record(cli, tmp_path, protocol, root, episodes=5)
    fold = record["results"][0]
    assert fold["metrics"]["miou"] == 100.0 and fold["episodes"] == 5
    assert fold["class_names"] == {"0": "aeroplane", "1": "bicycle", "2": "bird", "3": "boat", "4": "bottle"}
    assert_every_episode_is_exact(fold)
    assert record["dataset"]["fingerprint"]["masks"].startswith("VOC2012/SegmentationClassAug")


def test_pascal_lists_are_read_line_by_line_and_refused_when_malformed(tmp_path):
    root = make_pascal_root(tmp_path / "data")
    reader = PascalDataset(root)
    split = root / "splits" / "pascal" / "val" / "fold0.txt"
    assert reader.split_list("val", 0)[:2] == [("2008_000000", 0), ("2008_000001", 1)]
    split.write_bytes(b"2008_000000__01\r\n2008_000001__02\r\n")  # Windows line ends read as HSNet does
    assert reader.split_list("val", 0) == [("2008_000000", 0), ("2008_000001", 1)]
    split.write_text("2008_000000__01\n2008_000001__02")
    with pytest.raises(DataError, match="does not end with a newline"):
        reader.split_list("val", 0)
    split.write_text("2008_000000__01\n2008_000001__21\n")
    with pytest.raises(DataError, match=r"fold0\.txt:2: expected"):
        reader.split_list("val", 0)


# COCO-20i --------------------------------------------------------------------------------------------

def coco_entry(number: int) -> str:
    return f"val2014/COCO_val2014_{number:012d}.jpg"


def make_coco_root(root: Path) -> Path:
    """Fold 0's 20 classes with two images each in HSNet's pickle; the other classes' lists are empty."""
    lists = {class_id: [] for class_id in range(80)}
    for number in range(40):
        class_id = number % 20 * 4
        entry = coco_entry(number)
        write_image(root / "COCO2014" / entry, number)
        write_label(root / "COCO2014" / "annotations" / entry.replace(".jpg", ".png"), label_with(class_id + 1, 3))
        lists[class_id].append(entry)
    write_pickle(root, lists)
    return root


def write_pickle(root: Path, data: object, fold: int = 0) -> Path:
    path = root / "splits" / "coco" / "val" / f"fold{fold}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(data, protocol=3))
    return path


def episodes_until_every_class_is_queried(cli, protocol: str, root: Path, classes: int) -> int:
    result = cli("episodes", "-p", protocol, "--fold", "0", "--data-root", str(root))
    assert result.code == 0, result.stderr
    seen: set[int] = set()
    for count, line in enumerate(result.stdout.splitlines(), start=1):
        seen.add(json.loads(line)["class_id"])
        if len(seen) == classes:
            return count
    raise AssertionError(f"only {len(seen)} classes were queried")


@pytest.mark.parametrize("protocol", ["coco20i-1shot", "coco20i-5shot"])
def test_coco_oracle_scores_100_once_every_class_is_queried(cli, tmp_path, protocol):
    root = make_coco_root(tmp_path / "data")
    episodes = episodes_until_every_class_is_queried(cli, protocol, root, classes=20)
    fold = eval_record(cli, tmp_path, protocol, root, episodes)["results"][0]
    assert fold["metrics"]["miou"] == 100.0 and fold["episodes"] == episodes
    assert fold["class_names"]["0"] == "person" and fold["class_names"]["76"] == "scissors"
    assert_every_episode_is_exact(fold)


def test_coco_contiguous_folds_take_each_class_from_the_interleaved_pickle_that_evaluates_it(tmp_path):
    root = tmp_path / "data"
    for interleaved in range(4):
        lists = {class_id: [] for class_id in range(80)}
        for class_id in range(interleaved, 80, 4):
            lists[class_id] = [coco_entry(100 * class_id + k) for k in range(2)]
        write_pickle(root, lists, interleaved)
    reader = CocoContiguousDataset(root)
    assert reader.fold_classes(1) == list(range(20, 40))
    pairs = reader.split_list("val", 1)
    assert [class_id for _, class_id in pairs] == [c for c in range(20, 40) for _ in range(2)]
    assert pairs[:3] == [(coco_entry(2000), 20), (coco_entry(2001), 20), (coco_entry(2100), 21)]
    assert len(reader.split_files(1)) == 4


class NotPlainData:
    def __init__(self) -> None:
        self.images = [coco_entry(0)]


class RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")  # unpickling would call open(marker, "w")


@pytest.mark.parametrize("payload", ["call", "function", "object"])
def test_a_pickle_carrying_a_global_is_refused_without_running_it(cli, tmp_path, payload):
    root = make_coco_root(tmp_path / "data")
    marker = tmp_path / "was-executed"
    hostile = {"call": RunsCodeWhenUnpickled(marker), "function": os.system, "object": NotPlainData()}[payload]
    path = write_pickle(root, {0: hostile})
    result = cli("episodes", "-p", "coco20i-1shot", "--fold", "0", "--data-root", str(root))
    assert result.code == 1
    assert str(path) in result.stderr.replace("\n", "") and "plain data only" in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("entry", ["../../etc/passwd", "../../../tmp/outside.jpg", "/etc/passwd.jpg"])
def test_a_pickle_entry_leaving_the_data_root_is_refused(tmp_path, entry):
    root = make_coco_root(tmp_path / "data")
    path = write_pickle(root, {0: [coco_entry(0), entry]})
    with pytest.raises(DataError, match="outside the data root") as error:
        CocoDataset(root).split_list("val", 0)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("data, problem", [
    ([coco_entry(0)], "holds a list"),
    ({"0": [coco_entry(0)]}, "not a class id"),
    ({80: [coco_entry(0)]}, "not a class id"),
    ({0: coco_entry(0)}, "not a list of images"),
    ({0: [coco_entry(0), "val2014/COCO_val2014_1.png"]}, "expected an image path"),
    ({0: [coco_entry(0), 7]}, "is a int, not an image path"),
])
def test_a_pickle_of_the_wrong_shape_is_refused(tmp_path, data, problem):
    root = make_coco_root(tmp_path / "data")
    write_pickle(root, data)
    with pytest.raises(DataError, match=problem):
        CocoDataset(root).split_list("val", 0)


def test_a_damaged_pickle_is_a_data_error_naming_the_file(tmp_path):
    root = make_coco_root(tmp_path / "data")
    path = write_pickle(root, {})
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match="not a readable pickle") as error:
        CocoDataset(root).split_list("val", 0)
    assert str(path) in str(error.value)


def test_matchers_coco_split_folder_is_accepted(tmp_path):
    root = make_coco_root(tmp_path / "data")
    (root / "COCO2014" / "splits").mkdir()
    (root / "splits" / "coco").rename(root / "COCO2014" / "splits" / "coco")
    (root / "COCO2014" / "splits" / "coco" / "val").rename(root / "COCO2014" / "splits" / "val")
    reader = CocoDataset(root)
    assert reader.split_files(0) == [root / "COCO2014" / "splits" / "val" / "fold0.pkl"]
    assert len(reader.split_list("val", 0)) == 40


# FSS-1000 --------------------------------------------------------------------------------------------

def write_fss_splits(folder: Path) -> list[str]:
    """Full-size split lists (520 / 240 / 240 names); returns the test names as written (unsorted)."""
    folder.mkdir(parents=True)
    test_names = [f"test_class_{i:03d}" for i in reversed(range(240))]
    for split, names in (("trn", [f"trn_class_{i}" for i in range(520)]),
                         ("val", [f"val_class_{i}" for i in range(240)]), ("test", test_names)):
        (folder / f"{split}.txt").write_bytes("".join(f"{name}\r\n" for name in names).encode())
    return test_names


def make_fss_root(root: Path, layout: str) -> Path:
    """Split lists and the 10 images of the first test class (by name) in HSNet's or Matcher's layout."""
    splits = root / "splits" / "fss" if layout == "hsnet" else root / "FSS-1000" / "splits"
    first_class = min(write_fss_splits(splits))
    images = root / "FSS-1000" / ("" if layout == "hsnet" else "data") / first_class
    for number in range(1, 11):
        write_image(images / f"{number}.jpg", number)
        write_label(images / f"{number}.png", label_with(255 - number, other=127))  # >= 128 is foreground
    return root


@pytest.mark.parametrize("layout", ["hsnet", "matcher"])
def test_fss1000_oracle_scores_100_on_every_episode(cli, tmp_path, layout):
    root = make_fss_root(tmp_path / "data", layout)
    record = eval_record(cli, tmp_path, "fss1000-5shot", root, episodes=10)
    fold = record["results"][0]
    assert_every_episode_is_exact(fold)
    assert fold["per_class_iou"]["760"] == 100.0 and fold["class_names"]["760"] == "test_class_000"
    assert fold["metrics"]["miou"] == pytest.approx(100 / 240)  # HSNet averages over all 240 classes; 239 were not queried
    assert record["timing"]["images_decoded"] == 10


def test_fss1000_reads_an_rgb_mask_of_another_size_as_hsnet_does(cli, tmp_path):
    # the published peregine_falcon/8.png is RGB and not the size of its photo
    root = make_fss_root(tmp_path / "data", "hsnet")
    mask = next((root / "FSS-1000").glob("*/8.png"))
    grey = np.asarray(Image.open(mask))
    rgb = np.repeat(np.kron(grey, np.ones((2, 2), np.uint8))[:, :, None], 3, axis=2)  # twice the size, 3 channels
    Image.fromarray(rgb).save(mask)
    fold = eval_record(cli, tmp_path, "fss1000-1shot", root, episodes=10)["results"][0]
    assert_every_episode_is_exact(fold)


def test_fss1000_queries_follow_hsnet_sorted_paths_and_ids(tmp_path):
    reader = Fss1000Dataset(make_fss_root(tmp_path / "data", "hsnet"))
    queries = reader.split_list("test", 0)
    assert len(queries) == 2400 and reader.fold_classes(0) == list(range(760, 1000))
    assert [image for image, _ in queries[:10]] == [f"test_class_000/{k}.jpg" for k in (1, 10, 2, 3, 4, 5, 6, 7, 8, 9)]
    assert queries[10] == ("test_class_001/1.jpg", 761) and queries[-1][1] == 999
    assert reader.class_names[0] == "trn_class_0" and reader.class_names[520] == "val_class_0"
    assert reader.label_path("test_class_000/10.jpg") == tmp_path / "data" / "FSS-1000" / "test_class_000" / "10.png"
    label = torch.tensor([[0, 127, 128, 255]])
    assert reader.foreground(label, 760).tolist() == [[False, False, True, True]] and reader.ignore(label) is None


def test_fss1000_split_lists_of_the_wrong_size_are_refused(tmp_path):
    root = make_fss_root(tmp_path / "data", "hsnet")
    test_list = root / "splits" / "fss" / "test.txt"
    test_list.write_text("".join(f"class{i}\n" for i in range(239)))
    with pytest.raises(DataError, match=r"test\.txt lists 239 distinct classes in 239 lines; .* has 240"):
        Fss1000Dataset(root).split_list("test", 0)


# All readers -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol, layout_fragment", [
    ("pascal5i-1shot", "VOC2012/SegmentationClassAug/<id>.png"),
    ("coco20i-1shot", "splits/coco/val/fold<i>.pkl"),
    ("coco20i-contiguous-1shot", "COCO2014/annotations/val2014"),
    ("fss1000-1shot", "FSS-1000/<class>/<k>.jpg"),
    ("deepglobe-1shot", "Deepglobe/<1..6>/test/origin/<tile>.jpg"),
    ("isic-1shot", "splits/isic/class_id.csv"),
    ("chestxray-1shot", "LungSegmentation/masks/<name>_mask.png"),
    ("lvis92i-1shot", "LVIS/lvis_val.pkl"),
    ("isaid5i-1shot", "splits/isaid/val/fold<i>.txt"),
])
def test_a_missing_data_root_names_the_expected_layout(cli, tmp_path, protocol, layout_fragment):
    result = cli("eval", "-m", "oracle", "-p", protocol, "--data-root", str(tmp_path / "nowhere"))
    assert result.code == 1
    assert "does not exist" in result.stderr and layout_fragment in result.stderr


@pytest.mark.parametrize("protocol, missing", [
    ("pascal5i-1shot", "splits/pascal/val/fold0.txt"),
    ("coco20i-1shot", "splits/coco/val/fold0.pkl"),
    ("fss1000-1shot", "splits/fss/test.txt"),
    ("deepglobe-1shot", "Deepglobe/1/test/origin"),
    ("isic-1shot", "splits/isic/class_id.csv"),
    ("chestxray-1shot", "LungSegmentation/masks"),
    ("lvis92i-5shot", "LVIS/lvis_val.pkl"),
    ("isaid5i-5shot", "splits/isaid/val/fold0.txt"),
])
def test_a_missing_split_list_is_named(cli, tmp_path, protocol, missing):
    (tmp_path / "data").mkdir()
    result = cli("episodes", "-p", protocol, "--fold", "0", "--data-root", str(tmp_path / "data"))
    assert result.code == 1 and missing in result.stderr.replace("\n", "")
