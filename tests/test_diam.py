"""DIaM GFSS rules (protocols/diam.py) against a re-implementation written the way DIaM's code is.

The reference below follows sinahmr/DIaM: src/util.py::setup_seed, src/dataset/utils.py::make_dataset /
process_image (on real label arrays) and src/dataset/dataset.py::MultiClassValData.generate_support,
driven like src/test.py::validate (one seeding, then n_runs support draws).
"""

import math
import random
from collections import defaultdict

import numpy as np
import pytest
import torch

from fssbench.harness.gfss_metrics import gfss_scores
from fssbench.protocols.diam import DiamRun, sample_diam_run

H = W = 136  # 18496 pixels, so an image can hold one class above 16*32*32 = 16384


def synthetic_labels(n_images=60, seed=7):
    """Label arrays with known class areas: 0 background, 255 ignore, classes 1..8."""
    gen = np.random.RandomState(seed)
    labels = {}
    for k in range(n_images):
        lab = np.zeros((H, W), dtype=np.uint8)
        kind = gen.randint(6)
        if k % 7 == 3:  # every class gets at least one clean support candidate
            kind, lab[: 124, :] = -1, (k // 7) % 8 + 1
        if kind == -1:
            pass
        elif kind == 0:  # one big class
            lab[: 124, :] = gen.randint(1, 9)
        elif kind == 1:  # one big class plus a small second class
            lab[: 124, :] = gen.randint(1, 9)
            lab[130:, :10] = gen.randint(1, 9)
        elif kind == 2:  # only small areas
            lab[:40, :40] = gen.randint(1, 9)
        elif kind == 3:  # background / ignore only: never a query
            lab[:5, :5] = 255
        elif kind == 4:  # big class with an ignore border
            lab[2:126, 2:134] = gen.randint(1, 9)
            lab[0, :] = 255
        else:  # two medium classes
            lab[:, : W // 2] = gen.randint(1, 9)
            lab[:, W // 2:] = gen.randint(1, 9)
        labels[f"img{k:03d}"] = lab
    return labels


# ---------------------------- reference, DIaM style ----------------------------
def setup_seed(seed):  # src/util.py
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def process_image(item, labels, class_list, keep_small_area_classes):  # src/dataset/utils.py
    label = labels[item]
    label_class = np.unique(label).tolist()
    if 0 in label_class:
        label_class.remove(0)
    if 255 in label_class:
        label_class.remove(255)
    new_label_class = []
    for c in label_class:
        if c in class_list:
            tmp_label = np.zeros_like(label)
            target_pix = np.where(label == c)
            tmp_label[target_pix[0], target_pix[1]] = 1
            if tmp_label.sum() >= 16 * 32 * 32 or keep_small_area_classes:
                new_label_class.append(c)
    image_label_list, class_file_dict = [], defaultdict(list)
    if len(new_label_class) > 0:
        image_label_list.append(item)
        for c in new_label_class:
            class_file_dict[c].append(item)
    return image_label_list, class_file_dict


def make_dataset(list_read, labels, class_list, keep_small_area_classes):
    image_label_list, class_file_dict = [], defaultdict(list)
    for sublist, subdict in map(lambda l: process_image(l, labels, class_list, keep_small_area_classes), list_read):
        image_label_list += sublist
        for k, v in subdict.items():
            class_file_dict[k] += v
    return image_label_list, class_file_dict


class RefMultiClassValData:  # src/dataset/dataset.py::MultiClassValData, paths only
    def __init__(self, list_read, labels, base_class_list, novel_class_list, shot):
        self.labels, self.shot = labels, shot
        self.base_class_list, self.novel_class_list = base_class_list, novel_class_list
        self.query_data_list, _ = make_dataset(list_read, labels, base_class_list + novel_class_list, True)
        self.complete_query_data_list = self.query_data_list.copy()
        _, self.support_sub_class_file_list = make_dataset(list_read, labels, novel_class_list, False)

    def generate_support(self, query_image_path_list, remove_them_from_query_data_list=False):
        chosen, support_image_path_list = {}, []
        for c in self.novel_class_list:
            file_class_chosen = self.support_sub_class_file_list[c]
            num_file = len(file_class_chosen)
            indices_list = list(range(num_file))
            random.shuffle(indices_list)
            current_path_list, image_list = [], []
            for idx in indices_list:
                if len(current_path_list) >= self.shot:
                    break
                image_path = file_class_chosen[idx]
                if image_path in (query_image_path_list + current_path_list):
                    continue
                label = self.labels[image_path]
                present_novel_classes = set(np.unique(label)) - {0, 255} - set(self.base_class_list)
                if len(present_novel_classes) > 1:
                    continue
                image_list.append(image_path)
                current_path_list.append(image_path)
                support_image_path_list.append(image_path)
            found_images_count = len(current_path_list)
            assert found_images_count > 0
            if found_images_count < self.shot:
                indices_to_repeat = random.choices(range(found_images_count), k=self.shot - found_images_count)
                image_list.extend([image_list[i] for i in indices_to_repeat])
            chosen[c] = tuple(image_list)
        if remove_them_from_query_data_list:
            self.query_data_list = self.complete_query_data_list.copy()
            for i in support_image_path_list:
                self.query_data_list.remove(i)
        return chosen


def reference_runs(list_read, labels, base, novel, shot, seed, n_runs):
    dataset = RefMultiClassValData(list_read, labels, base, novel, shot)
    setup_seed(seed)  # src/test.py::validate
    out = []
    for _ in range(n_runs):
        supports = dataset.generate_support([], remove_them_from_query_data_list=True)
        out.append((supports, tuple(dataset.query_data_list)))
    return out


def areas_of(labels):
    return {img: {int(v): int(n) for v, n in zip(*np.unique(lab, return_counts=True))} for img, lab in labels.items()}


# ---------------------------- tests ----------------------------
@pytest.mark.parametrize("shot", [1, 5])
@pytest.mark.parametrize("seed", [2023, 0, 321])
@pytest.mark.parametrize("novel", [[1, 2, 3], [5, 6, 7, 8]])
def test_sample_diam_run_matches_diam_style_reference(shot, seed, novel):
    labels = synthetic_labels()
    list_read = list(labels)  # val-list file order
    base = [c for c in range(1, 9) if c not in novel]
    ref = reference_runs(list_read, labels, base, novel, shot, seed, n_runs=5)
    areas = areas_of(labels)
    for run in range(5):
        got = sample_diam_run(list_read, areas, novel, shot, seed=seed, run=run)
        got_explicit = sample_diam_run(list_read, areas, novel, shot, seed=seed, run=run, base_classes=base)
        assert isinstance(got, DiamRun)
        assert got == got_explicit
        assert got.supports == ref[run][0]
        assert got.queries == ref[run][1]
        assert all(len(v) == shot for v in got.supports.values())


def test_runs_differ_and_rules_hold():
    labels = synthetic_labels()
    areas = areas_of(labels)
    novel = [1, 2, 3]
    runs = [sample_diam_run(list(labels), areas, novel, 1, run=r) for r in range(5)]
    assert len({tuple(sorted(r.supports.items())) for r in runs}) > 1
    for r in runs:
        for c, imgs in r.supports.items():
            for img in imgs:
                assert areas[img][c] >= 16 * 32 * 32
                assert not ({v for v in areas[img] if v not in (0, 255)} & set(novel)) - {c}
                assert img not in r.queries
    # background/ignore-only images are never queries
    assert all(set(areas[q]) - {0, 255} for q in runs[0].queries)


def test_gfss_scores_hand_computed():
    # classes: 0 bg, 1-2 base, 3 novel; rows = ground truth, cols = prediction
    conf = np.array([
        [50, 5, 0, 5],
        [10, 30, 0, 0],
        [0, 0, 20, 0],
        [10, 0, 0, 10],
    ])
    s = gfss_scores(conf, base=[1, 2], novel=[3])
    iou1 = 30 / (40 + 35 - 30)
    iou2 = 1.0
    iou3 = 10 / (20 + 15 - 10)
    b, n = 100 * (iou1 + iou2) / 2, 100 * iou3
    assert s["base"] == pytest.approx(b)
    assert s["novel"] == pytest.approx(n)
    assert s["mean"] == pytest.approx((b + n) / 2)
    assert s["harmonic"] == pytest.approx(2 * b * n / (b + n))


def test_gfss_scores_skips_classes_with_empty_union():
    conf = np.zeros((4, 4))
    conf[0, 0] = 10
    conf[1, 1] = 5
    conf[3, 0] = 5  # novel class 3 present but never predicted: IoU 0
    s = gfss_scores(conf, base=[1, 2], novel=[3])  # class 2 has union 0: skipped, not counted as 0
    assert s["base"] == pytest.approx(100.0)
    assert s["novel"] == 0.0
    assert s["harmonic"] == 0.0
    assert math.isnan(gfss_scores(np.eye(3), base=[1], novel=[])["novel"])
