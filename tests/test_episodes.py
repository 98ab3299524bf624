"""Manifests: HSNet's list sampler, canonical hashing, determinism and the cache."""

from pathlib import Path

import numpy as np
import pytest

from fssbench import registry
from fssbench.harness.datasets import DatasetReader
from fssbench.harness.episodes import Episode, Manifest, build_manifest
from fssbench.harness.errors import DataError
from fssbench.protocols.hsnet import sample_list_episodes


class ListReader(DatasetReader):
    """A reader over an in-memory split list (images are never touched by samplers)."""

    name = "list"
    layout = "(in memory)"

    def __init__(self, root: Path, pairs):
        super().__init__(root)
        self.pairs = pairs
        (root / "list.txt").write_text(repr(pairs))

    class_names = property(lambda self: [f"c{i}" for i in range(20)])

    def fold_classes(self, fold):
        return sorted({c for _, c in self.pairs})

    def split_list(self, split, fold):
        return list(self.pairs)

    def split_files(self, fold):
        return [self.root / "list.txt"]

    def image_path(self, image_id):
        raise AssertionError("samplers must not read images")

    label_path = image_path


def hsnet_reference(pairs, shot, episodes, seed):
    """HSNet's DatasetPASCAL.sample_episode, as its test loop calls it (global numpy generator)."""
    classwise = {}
    for name, cls in pairs:
        classwise.setdefault(cls, []).append(name)
    np.random.seed(seed)
    out = []
    for idx in range(episodes):
        idx %= len(pairs)
        query_name, class_sample = pairs[idx]
        support_names = []
        while True:
            support_name = np.random.choice(classwise[class_sample], 1, replace=False)[0]
            if query_name != support_name:
                support_names.append(support_name)
            if len(support_names) == shot:
                break
        out.append((class_sample, query_name, tuple(support_names)))
    return out


PAIRS = [(f"img{i:03d}", i % 3) for i in range(17)] + [("img000", 2), ("img005", 0)]


@pytest.mark.parametrize("shot", [1, 5])
def test_list_sampler_reproduces_hsnet_call_for_call(tmp_path, shot):
    episodes = sample_list_episodes(ListReader(tmp_path, PAIRS), fold=0, shot=shot, seed=0, episodes=45)
    expected = hsnet_reference(PAIRS, shot, 45, 0)
    assert [(e.class_id, e.query, e.supports) for e in episodes] == expected
    assert [e.index for e in episodes] == list(range(45))
    assert all(e.query not in e.supports for e in episodes)


def test_a_class_with_only_the_query_is_a_clear_error_not_an_endless_loop(tmp_path):
    with pytest.raises(DataError, match="img1"):
        sample_list_episodes(ListReader(tmp_path, [("img0", 0), ("img2", 0), ("img1", 1)]), 0, 1, 0, 3)


def test_manifest_hash_is_canonical():
    manifest = Manifest((Episode(0, 1, 2, "q", ("s1", "s2")),))
    assert manifest.lines() == ['{"class_id":2,"fold":1,"index":0,"query":"q","supports":["s1","s2"]}']
    import hashlib
    assert manifest.sha256 == hashlib.sha256(manifest.lines()[0].encode()).hexdigest()
    assert manifest.head(1).sha256 == manifest.sha256


def test_same_inputs_same_hash_other_seed_other_hash_and_the_cache(tmp_path, demo_reader):
    spec = registry.protocols.get("demo-1shot")
    sampler = registry.samplers.get("hsnet-list")
    cache = tmp_path / "cache"
    first = build_manifest(spec, demo_reader, sampler, 0, 0, cache)
    files = list((cache / "manifests").glob("*.jsonl"))
    assert len(files) == 1
    assert build_manifest(spec, demo_reader, sampler, 0, 0, cache).sha256 == first.sha256
    assert build_manifest(spec, demo_reader, sampler, 0, 0, None) == first  # uncached build agrees
    assert build_manifest(spec, demo_reader, sampler, 0, 1, cache).sha256 != first.sha256
    assert len(first) == spec.sampler["episodes"]
    files[0].write_text(files[0].read_text().replace("val_", "VAL_", 1))  # a damaged cache entry
    assert build_manifest(spec, demo_reader, sampler, 0, 0, cache).sha256 == first.sha256


def test_changed_split_lists_never_hit_a_stale_cache(tmp_path):
    spec = registry.protocols.get("demo-1shot")
    sampler = registry.samplers.get("hsnet-list")
    root = tmp_path / "root"
    root.mkdir()
    (root / "splits" / "demo" / "val").mkdir(parents=True)
    from fssbench.protocols.demo import DemoDataset

    reader = DemoDataset(root)
    split = root / "splits" / "demo" / "val" / "fold0.txt"
    split.write_text("a__01\nb__01\n")
    first = build_manifest(spec, reader, sampler, 0, 0, tmp_path / "cache")
    split.write_text("a__01\nc__01\n")
    second = build_manifest(spec, reader, sampler, 0, 0, tmp_path / "cache")
    assert first.episodes[0].supports == ("b",) and second.episodes[0].supports == ("c",)
