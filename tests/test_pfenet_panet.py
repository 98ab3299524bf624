"""PFENet's and PANet's episode samplers (protocols/pfenet.py, protocols/panet.py) against
re-implementations written the way their reference code is.

PFENet: `util/dataset.py::make_dataset` and `SemData.__getitem__` (module-level `random.randint`),
served by a real torch DataLoader (`shuffle=False`, batch 1, worker processes) and driven by
`test.py::validate`'s loop (`torch.manual_seed` / `random.seed(321)`, `for e in range(20)`, its break
test). PANet: `test.py` (`set_seed(1234 + run)`), `voc_fewshot` and `PairedDataset.__init__`'s list
comprehension over the global `random`. Both run on small data trees in the layouts fssbench reads.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fssbench.harness.errors import DataError
from fssbench.protocols.coco import CocoDataset
from fssbench.protocols.panet import sample_panet_episodes
from fssbench.protocols.pascal import PascalDataset
from fssbench.protocols.pfenet import MIN_AREA, loader_base_seeds, pfenet_lists, sample_pfenet_episodes

SIDE = 64  # 4096 px: one class block can pass the 2*32*32 = 2048 px filter, a small one cannot
BIG, SMALL = (slice(0, 48), slice(0, 48)), (slice(54, 60), slice(54, 60))  # 2304 px, 36 px


def write_label(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label, mode="L").save(path)


def synthetic_label(number: int, gen: np.random.RandomState, values: list[int], other: int) -> np.ndarray:
    """Background 0 and a 255 border; image n holds values[n mod len] over BIG unless n = 1 mod 4 (so it
    is no PFENet query), a random one of `values` in a small patch unless n = 2 mod 4, and `other` (a
    class outside the fold) in a corner when n = 3 mod 4."""
    label = np.zeros((SIDE, SIDE), dtype=np.uint8)
    label[-1, :] = 255
    if number % 4 != 1:
        label[BIG] = values[number % len(values)]
    if number % 4 != 2:  # often another class than the big one: drawn as the episode class below 2048 px
        label[SMALL] = values[gen.randint(len(values))]
    if number % 4 == 3:
        label[60:62, 0:4] = other
    return label


def make_pfenet_pascal_root(root: Path, images: int = 60, values: tuple[int, ...] = (1, 2, 3, 4, 5)) -> PascalDataset:
    """PFENet's list format (`JPEGImages/<id>.jpg SegmentationClassAug/<id>.png`, paths under VOC2012/)."""
    gen = np.random.RandomState(3)
    lines = []
    for number in range(images):
        image_id = f"2007_{number:06d}"
        label = synthetic_label(number, gen, list(values), other=gen.randint(6, 21))
        write_label(root / "VOC2012" / "SegmentationClassAug" / f"{image_id}.png", label)
        lines.append(f"JPEGImages/{image_id}.jpg SegmentationClassAug/{image_id}.png\n")
    (root / "lists" / "pascal").mkdir(parents=True)
    (root / "lists" / "pascal" / "val.txt").write_text("".join(lines))
    return PascalDataset(root)


# ---------------------------- PFENet reference, as its code is written ----------------------------
def make_dataset(data_root: Path, data_list: Path, sub_list: list[int]):  # util/dataset.py
    image_label_list, sub_class_file_list = [], {sub_c: [] for sub_c in sub_list}
    for line in open(data_list).readlines():
        line_split = line.strip().split(" ")
        item = (str(data_root / line_split[0]), str(data_root / line_split[1]))
        label = np.asarray(Image.open(item[1]))
        label_class = [c for c in np.unique(label).tolist() if c not in (0, 255)]
        label_class = [c for c in label_class if c in sub_list and (label == c).sum() >= 2 * 32 * 32]
        if len(label_class) > 0:
            image_label_list.append(item)
            for c in label_class:
                sub_class_file_list[c].append(item)
    return image_label_list, sub_class_file_list


class SemData(Dataset):  # util/dataset.py, mode='val', without the image loading and transforms
    def __init__(self, shot, data_root, data_list, sub_val_list):
        self.shot, self.sub_val_list = shot, sub_val_list
        self.data_list, self.sub_class_file_list = make_dataset(data_root, data_list, sub_val_list)

    def __len__(self):
        return len(self.data_list)

    def __getitem__(self, index):
        image_path, label_path = self.data_list[index]
        label = np.asarray(Image.open(label_path))
        label_class = [c for c in np.unique(label).tolist() if c not in (0, 255) and c in self.sub_val_list]
        class_chosen = label_class[random.randint(1, len(label_class)) - 1]
        file_class_chosen = self.sub_class_file_list[class_chosen]
        num_file = len(file_class_chosen)
        support_image_path_list, support_idx_list = [], []
        for k in range(self.shot):
            support_idx = random.randint(1, num_file) - 1
            support_image_path, support_label_path = image_path, label_path
            while ((support_image_path == image_path and support_label_path == label_path)
                   or support_idx in support_idx_list):
                support_idx = random.randint(1, num_file) - 1
                support_image_path, support_label_path = file_class_chosen[support_idx]
            support_idx_list.append(support_idx)
            support_image_path_list.append(support_image_path)
        return "|".join([image_path, str(class_chosen)] + support_image_path_list)


def pfenet_validate(dataset: SemData, workers: int, test_num: int, manual_seed: int = 321):
    """test.py::validate's seeding and loop (batch_size_val 1), collecting what each step scores."""
    torch.manual_seed(manual_seed)
    np.random.seed(manual_seed)
    random.seed(manual_seed)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers)
    scored, iter_num = [], 0
    for e in range(20):
        for i, batch in enumerate(loader):
            if (iter_num - 1) * 1 >= test_num:
                break
            iter_num += 1
            scored.append(batch[0])
        if len(scored) > test_num:  # later passes only start workers that score nothing: skipped for speed
            break
    return scored


def as_ids(scored: list[str], id_of) -> list[tuple[str, int, tuple[str, ...]]]:
    """The reference's `query|value|supports` paths as fssbench (query id, label value, support ids)."""
    rows = [item.split("|") for item in scored]
    return [(id_of(query), int(value), tuple(map(id_of, supports))) for query, value, *supports in rows]


def episode_ids(episodes) -> list[tuple[str, int, tuple[str, ...]]]:
    return [(e.query, e.class_id + 1, e.supports) for e in episodes]


def voc_id(path: str) -> str:
    return Path(path).stem


@pytest.fixture
def pfenet_pascal(tmp_path):
    return make_pfenet_pascal_root(tmp_path / "data")


def reference_dataset(reader: PascalDataset, shot: int, fold: int = 0) -> SemData:
    values = list(range(5 * fold + 1, 5 * fold + 6))
    return SemData(shot, reader.root / "VOC2012", reader.root / "lists" / "pascal" / "val.txt", values)


@pytest.mark.parametrize("shot, workers, episodes", [(1, 2, 61), (5, 2, 45), (1, 0, 50), (5, 0, 30)])
def test_pfenet_matches_reference_loop(pfenet_pascal, shot, workers, episodes):
    reference = pfenet_validate(reference_dataset(pfenet_pascal, shot), workers, test_num=episodes - 1)
    ours = sample_pfenet_episodes(pfenet_pascal, fold=0, shot=shot, seed=321, episodes=episodes, workers=workers)
    assert len(reference) == episodes  # test_num + 1 episodes are scored
    assert episode_ids(ours) == as_ids(reference, voc_id)
    assert [e.index for e in ours] == list(range(episodes)) and {e.fold for e in ours} == {0}


def test_pfenet_fixture_exercises_the_rules(pfenet_pascal):
    """The list has queries left out by the area filter and queries drawn for a class below it."""
    dataset = reference_dataset(pfenet_pascal, 1)
    assert len(dataset) == 45  # the 15 images with no fold class of >= 2048 px are left out
    episodes = sample_pfenet_episodes(pfenet_pascal, fold=0, shot=1, seed=321, episodes=200, workers=0)
    pools = {value: {Path(item[0]).stem for item in items} for value, items in dataset.sub_class_file_list.items()}
    assert any(e.query not in pools[e.class_id + 1] for e in episodes)  # class chosen from a small area
    assert all(s != e.query and s in pools[e.class_id + 1] for e in episodes for s in e.supports)


def test_pfenet_stops_after_twenty_passes(tmp_path):
    reader = make_pfenet_pascal_root(tmp_path / "data", images=12, values=(1, 2, 3))
    dataset = reference_dataset(reader, 1)
    episodes = sample_pfenet_episodes(reader, fold=0, shot=1, seed=321, episodes=10_000, workers=0)
    reference = pfenet_validate(dataset, 0, test_num=9_999)
    assert len(episodes) == 20 * len(dataset) == len(reference)
    assert episode_ids(episodes) == as_ids(reference, voc_id)


def test_pfenet_is_deterministic_and_seeded(pfenet_pascal):
    def draw(seed, workers=8):
        return sample_pfenet_episodes(pfenet_pascal, fold=0, shot=5, seed=seed, episodes=100, workers=workers)
    assert draw(321) == draw(321)
    assert draw(321) != draw(322)
    assert draw(321) != draw(321, workers=4)  # another worker count is another episode set


def test_pfenet_area_filter_boundary():
    areas = {"a": {0: 9, 1: MIN_AREA - 1}, "b": {1: MIN_AREA, 2: 1, 255: 5000}, "c": {3: 10_000}, "d": {2: MIN_AREA}}
    lists = pfenet_lists(["a", "b", "c", "d"], areas, [1, 2])
    assert lists.queries == ("b", "d")  # a: below 2048 px; c: class of another fold
    assert lists.class_files == {1: ("b",), 2: ("d",)}
    assert lists.query_values == {"b": (1, 2), "d": (2,)}  # any area counts for the class draw


def test_torch_base_seeds_are_mt19937_pairs():
    """torch's int64 `random_()` is (hi << 32 | lo) mod 2**63 of two MT19937 outputs seeded like init_genrand:
    the DataLoader's base seeds do not depend on the torch version as long as that holds."""
    raw = np.random.RandomState(321).randint(0, 2**32, size=6, dtype=np.uint32).tolist()
    expected = [((raw[2 * i] << 32) | raw[2 * i + 1]) % 2**63 for i in range(3)]
    assert loader_base_seeds(321, 3) == expected


def test_pfenet_on_coco_interleaved_fold(tmp_path):
    """COCO: fold 1 = label values 2, 6, ..., 78 (PFENet's use_split_coco `range(2, 79, 4)`)."""
    root, gen, lines = tmp_path / "data", np.random.RandomState(5), []
    values = list(range(2, 79, 4))
    for number in range(30):
        name = f"COCO_val2014_{number:012d}"
        write_label(root / "COCO2014" / "annotations" / "val2014" / f"{name}.png",
                    synthetic_label(number, gen, values[:5], other=3))  # value 3 is a fold-2 class
        lines.append(f"val2014/{name}.jpg annotations/val2014/{name}.png\n")
    (root / "lists" / "coco").mkdir(parents=True)
    (root / "lists" / "coco" / "val.txt").write_text("".join(lines))
    dataset = SemData(1, root / "COCO2014", root / "lists" / "coco" / "val.txt", values)
    reference = pfenet_validate(dataset, 0, test_num=39)
    ours = sample_pfenet_episodes(CocoDataset(root), fold=1, shot=1, seed=321, episodes=40, workers=0)
    assert episode_ids(ours) == as_ids(reference, lambda path: Path(path).relative_to(root / "COCO2014").as_posix())
    assert {e.class_id for e in ours} == {value - 1 for value in values[:5]}


def test_pfenet_refuses_a_class_without_enough_supports(tmp_path):
    root = tmp_path / "data"
    for number, value in enumerate([1, 1, 2]):
        label = np.zeros((SIDE, SIDE), dtype=np.uint8)
        label[BIG] = value
        write_label(root / "VOC2012" / "SegmentationClassAug" / f"2007_{number:06d}.png", label)
    (root / "lists" / "pascal").mkdir(parents=True)
    (root / "lists" / "pascal" / "val.txt").write_text(
        "".join(f"JPEGImages/2007_{n:06d}.jpg SegmentationClassAug/2007_{n:06d}.png\n" for n in range(3)))
    reader = PascalDataset(root)
    assert len(sample_pfenet_episodes(reader, fold=0, shot=1, seed=321, episodes=1, workers=0)) == 1
    with pytest.raises(DataError, match="label value 1 has 1 support candidates"):
        sample_pfenet_episodes(reader, fold=0, shot=2, seed=321, episodes=2, workers=0)


def test_pfenet_names_the_missing_list(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match="val_fixed.txt"):
        sample_pfenet_episodes(PascalDataset(tmp_path / "data"), fold=0, shot=1, seed=321, episodes=1, workers=0)


# ---------------------------- PANet ----------------------------
POOL_SIZES = {1: 30, 2: 7, 3: 90, 4: 12, 5: 25}  # 90 > 85 and 25 > 21: random.sample's set branch for 5 and 1 shot


def make_panet_root(root: Path) -> PascalDataset:
    folder = root / "VOC2012" / "ImageSets" / "Segmentation"
    (folder / "trainaug").mkdir(parents=True)
    gen = np.random.RandomState(0)
    everything = [f"2008_{number:06d}" for number in range(200)]
    (folder / "trainaug.txt").write_text("".join(f"{image}\n" for image in everything))
    for value, size in POOL_SIZES.items():
        pool = gen.choice(everything, size, replace=False)
        (folder / "trainaug" / f"class{value}.txt").write_text("".join(f"{image}\n" for image in pool))
    return PascalDataset(root)


def panet_reference(root: Path, label_sets: int, shot: int, run: int, n_steps: int):
    """test.py's run loop body and voc_fewshot / PairedDataset(same=False) over the global random."""
    random.seed(1234 + run)
    torch.manual_seed(1234 + run)
    labels = set(range(1, 21)) - (set(range(1, 21)) - set(range(5 * label_sets + 1, 5 * label_sets + 6)))
    id_dir = root / "VOC2012" / "ImageSets" / "Segmentation"
    sub_ids = [(id_dir / "trainaug" / f"class{label}.txt").read_text().splitlines() for label in labels]
    cnt_query = np.bincount(random.choices(population=range(1), k=1), minlength=1)
    n_elements = [shot + x for x in cnt_query]
    n_data = [len(ids) for ids in sub_ids]
    indices = [[(dataset_idx, data_idx)
                for i, dataset_idx in enumerate(random.sample(range(len(sub_ids)), k=len(n_elements)))
                for data_idx in random.sample(range(n_data[dataset_idx]), k=n_elements[i])]
               for i_iter in range(n_steps)]
    label_list = list(labels)
    episodes = []
    for pair in indices:  # fewShot: supports are the first n_shots, the query the last element
        images = [sub_ids[d][i] for d, i in pair]
        episodes.append((label_list[pair[0][0]] - 1, images[shot], tuple(images[:shot])))
    return episodes


@pytest.mark.parametrize("shot", [1, 5])
def test_panet_runs_match_reference(tmp_path, shot):
    reader = make_panet_root(tmp_path / "data")
    ours = sample_panet_episodes(reader, fold=0, shot=shot, seed=1234, episodes=200, runs=5)
    assert [e.index for e in ours] == list(range(1000))
    for run in range(5):
        expected = panet_reference(reader.root, 0, shot, run, 200)
        assert [(e.class_id, e.query, e.supports) for e in ours[run * 200:(run + 1) * 200]] == expected
    assert all(len({e.query, *e.supports}) == shot + 1 for e in ours)  # K+1 distinct images
    assert ours[:200] != ours[200:400]


def test_panet_run_seeds_follow_the_base_seed(tmp_path):
    reader = make_panet_root(tmp_path / "data")
    five = sample_panet_episodes(reader, fold=0, shot=1, seed=1234, episodes=50, runs=5)
    third = sample_panet_episodes(reader, fold=0, shot=1, seed=1236, episodes=50, runs=1)
    key = [(e.class_id, e.query, e.supports) for e in five[100:150]]
    assert key == [(e.class_id, e.query, e.supports) for e in third]  # run 2 is seed 1234 + 2
    assert five == sample_panet_episodes(reader, fold=0, shot=1, seed=1234, episodes=50, runs=5)


def test_panet_refuses_broken_lists(tmp_path):
    reader = make_panet_root(tmp_path / "data")
    folder = reader.root / "VOC2012" / "ImageSets" / "Segmentation"
    with pytest.raises(DataError, match="class2.txt lists 7 images"):
        sample_panet_episodes(reader, fold=0, shot=7, seed=1234, episodes=1, runs=1)
    (folder / "trainaug" / "class4.txt").write_text("not_in_trainaug\n")
    with pytest.raises(DataError, match="'not_in_trainaug'"):
        sample_panet_episodes(reader, fold=0, shot=1, seed=1234, episodes=1, runs=1)
    with pytest.raises(DataError, match="kaixin96/PANet"):
        sample_panet_episodes(reader, fold=1, shot=1, seed=1234, episodes=1, runs=1)


def test_manifests_hash_the_lists_each_sampler_reads_without_hsnets_lists(tmp_path):
    from fssbench import registry
    from fssbench.harness.episodes import build_manifest, input_files

    pfenet_reader = make_pfenet_pascal_root(tmp_path / "pfenet")
    panet_reader = make_panet_root(tmp_path / "panet")
    for protocol, reader in (("pascal5i-pfenet-1shot", pfenet_reader), ("pascal5i-panet-1shot", panet_reader)):
        spec = registry.protocols.get(protocol)
        assert not reader.split_files(0)[0].exists()  # no HSNet split list in these roots
        sampler = registry.samplers.get(spec.sampler["name"])
        params = {k: v for k, v in spec.sampler.items() if k not in ("name", "seed")}
        assert all(path.is_file() for path in input_files(sampler, reader, 0, params))
        spec = dataclasses.replace(spec, sampler={**spec.sampler, "episodes": 20})
        manifest = build_manifest(spec, reader, sampler, 0, spec.seed, tmp_path / "cache")
        assert len(manifest) > 0
        assert build_manifest(spec, reader, sampler, 0, spec.seed, tmp_path / "cache") == manifest  # from the cache
