"""The bounded decode cache: least recently used entries go first, the budget is never exceeded, an
image decoded again equals the one that was cached, concurrent loads of one image decode it once, and
with the uses to come announced it keeps exactly the images that will be asked for again. Label maps
are resized by indexing exactly as torch's nearest interpolation does."""

import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fssbench.harness.episodes import Episode
from fssbench.harness.loading import DecodeCache, EpisodeLoader, default_cache_mb, kept_apart, resize_nearest

MB = 2**20


def entry(byte_count: int) -> tuple[torch.Tensor]:
    return (torch.zeros(byte_count, dtype=torch.uint8),)


def test_least_recently_used_entry_is_evicted_at_the_budget():
    cache = DecodeCache(budget_bytes=100)
    made = []

    def get(key):
        return cache.get(("image", key), lambda: made.append(key) or entry(40))

    get("a"), get("b"), get("a")  # a is now the most recently used
    get("c")  # 120 bytes would exceed 100: b goes
    assert made == ["a", "b", "c"] and cache.evictions == 1 and cache.bytes == 80
    get("a")
    assert made == ["a", "b", "c"]  # still cached
    get("b")
    assert made == ["a", "b", "c", "b"] and cache.evictions == 2  # c was the least recently used
    assert cache.hits == 2 and cache.misses["image"] == 4 and cache.peak_bytes == 80 <= cache.budget_bytes


def test_an_entry_larger_than_the_budget_is_returned_but_not_kept():
    cache = DecodeCache(budget_bytes=10)
    assert cache.get(("image", "big"), lambda: entry(11))[0].numel() == 11
    assert len(cache) == 0 and cache.bytes == cache.peak_bytes == 0
    zero = DecodeCache(budget_bytes=0)
    zero.get(("image", "x"), lambda: entry(1))
    zero.get(("image", "x"), lambda: entry(1))
    assert zero.misses["image"] == 2 and len(zero) == 0


def test_concurrent_requests_for_one_image_decode_it_once():
    cache = DecodeCache(budget_bytes=MB)
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.05)
        return entry(8)

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(("image", "x"), slow))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 4 and all(result is results[0] for result in results)
    assert cache.misses["image"] == 1 and cache.hits == 3


def test_a_failed_decode_is_not_cached_and_raises_for_every_waiter():
    cache = DecodeCache(budget_bytes=MB)

    def broken():
        raise OSError("unreadable")

    for _ in range(2):
        try:
            cache.get(("image", "x"), broken)
        except OSError as exc:
            assert str(exc) == "unreadable"
        else:
            raise AssertionError("the decode error was swallowed")
    assert len(cache) == 0 and cache.misses["image"] == 2


def test_loader_stays_within_its_budget_and_re_decodes_identically(demo_reader):
    ids = list(dict.fromkeys(image for image, _ in demo_reader.split_list("val", 0)))[:6]
    per_image = 3 * 400 * 400 + 400 * 400  # uint8 RGB + the label map kept as uint8 at 400x400
    loader = EpisodeLoader(demo_reader, 400, cache_mb=2)  # room for three images
    first = loader.image_and_label(ids[0])
    assert first[1].dtype == torch.int16  # handed out widened
    for image_id in ids[1:]:
        loader.image_and_label(image_id)
    assert loader.decoded == 6 and len(loader.cache) == 3 == (2 * MB) // per_image
    assert loader.cache.evictions == 3 and loader.cache.peak_bytes <= 2 * MB
    again = loader.image_and_label(ids[0])  # evicted: decoded again, to the same tensors
    assert loader.decoded == 7 and again is not first
    torch.testing.assert_close(again, first, rtol=0, atol=0)  # uint8 image, int16 label map
    assert loader.cache_statistics() == {"cache_budget_mb": 2, "cache_peak_mb": 3 * per_image / MB,
                                         "cache_hits": 0, "cache_evictions": 4}


@pytest.mark.parametrize("size", [400, 473, 64])
def test_images_are_pils_bilinear_resize_exactly(demo_reader, size):
    """HSNet's torchvision Resize on a PIL image is PIL's bilinear resize: the loader's uint8 [3, S, S]
    must hold the same values (it copies them out of PIL another way)."""
    from PIL import Image

    image_id = demo_reader.split_list("val", 0)[0][0]
    with Image.open(demo_reader.image_path(image_id)) as image:
        expected = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR)).transpose(2, 0, 1)
    image, _ = EpisodeLoader(demo_reader, size).image_and_label(image_id)
    assert image.dtype == torch.uint8
    torch.testing.assert_close(image, torch.from_numpy(expected.copy()), rtol=0, atol=0)


def test_original_labels_count_against_the_budget(demo_reader):
    image_id = demo_reader.split_list("val", 0)[0][0]
    loader = EpisodeLoader(demo_reader, 400, original_resolution=True)
    _, _, original = loader.decoded_image(image_id)
    assert original.dtype == torch.int16
    assert loader.cache.bytes == 4 * 400 * 400 + 2 * original.numel()


def test_large_entries_are_kept_in_a_mapping_of_their_own_with_equal_values():
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 400, 400), dtype=torch.uint8, generator=generator)
    label = torch.randint(-1, 300, (400, 400), dtype=torch.int16, generator=generator)
    kept = kept_apart((image, label, None))
    assert kept[2] is None
    for copy, tensor in zip(kept, (image, label)):
        torch.testing.assert_close(copy, tensor, rtol=0, atol=0)  # same dtype, shape and values
        assert copy.data_ptr() != tensor.data_ptr()
    # one mapping for the entry, each tensor 64-byte aligned, apart from the heap's buffers
    assert kept[1].data_ptr() - kept[0].data_ptr() == image.numel() and kept[0].data_ptr() % 64 == 0
    small = (torch.zeros(8, 8, dtype=torch.uint8),)
    assert kept_apart(small) is small  # small entries stay as they are


def test_cache_hands_out_what_it_decoded_and_keeps_an_equal_copy():
    cache = DecodeCache(budget_bytes=10 * MB)
    cache.expect([("image", "a"), ("image", "a")])
    decoded = (torch.arange(3 * 400 * 400, dtype=torch.int32).to(torch.uint8).view(3, 400, 400),)
    first = cache.get(("image", "a"), lambda: decoded)
    second = cache.get(("image", "a"), lambda: pytest.fail("decoded twice"))
    assert first is decoded and second[0].data_ptr() != decoded[0].data_ptr()
    torch.testing.assert_close(second[0], decoded[0], rtol=0, atol=0)


def test_default_budget_is_a_quarter_of_memory_at_most_4_gb():
    assert 0 < default_cache_mb() <= 4096
    assert EpisodeLoader.__init__.__defaults__[-1] is None  # None means the default budget


def test_announced_uses_keep_an_image_until_its_last_use_and_never_store_single_uses():
    cache = DecodeCache(budget_bytes=MB)
    made = []

    def get(key):
        return cache.get(("image", key), lambda: made.append(key) or entry(10))

    cache.expect([("image", "a"), ("image", "b"), ("image", "a"), ("image", "a")])
    get("b")
    assert len(cache) == 0  # b is used once: never stored
    get("a")
    assert len(cache) == 1 and cache.bytes == 10  # a is needed twice more
    get("a")
    assert len(cache) == 1
    get("a")  # its last use: dropped
    assert len(cache) == 0 and cache.bytes == 0 and made == ["b", "a"] and cache.hits == 2
    get("c")  # never announced: kept as before (LRU)
    assert len(cache) == 1 and made == ["b", "a", "c"]
    cache.expect([("image", "a")])  # announced again (the next fold): counted afresh
    get("a")
    assert made == ["b", "a", "c", "a"] and len(cache) == 1


def test_at_the_budget_the_entry_used_farthest_in_the_future_goes_not_the_least_recent():
    cache = DecodeCache(budget_bytes=100)  # room for two 40-byte entries
    made = []

    def get(key):
        return cache.get(("image", key), lambda: made.append(key) or entry(40))

    cache.expect([("image", key) for key in "abaccba"])
    for key in "abacc":
        get(key)
    assert made == ["a", "b", "c"] and cache.evictions == 1  # c came in: a (next use 6) went, not b (5)
    get("b"), get("a")
    assert made == ["a", "b", "c", "a"] and len(cache) == 0  # LRU would have evicted b and decoded it again


def test_a_waiter_taking_the_last_use_leaves_nothing_cached():
    cache = DecodeCache(budget_bytes=MB)
    cache.expect([("image", "x")] * 2)
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(5)
        return entry(8)

    owner = threading.Thread(target=lambda: cache.get(("image", "x"), slow))
    owner.start()
    started.wait(5)
    waiter = threading.Thread(target=lambda: cache.get(("image", "x"), slow))
    waiter.start()
    while not cache.hits:  # the waiter has taken its use and waits for the owner's decode
        time.sleep(0.001)
    release.set()
    owner.join(), waiter.join()
    assert cache.misses["image"] == 1 and len(cache) == 0 and cache.bytes == 0


def test_a_loaded_fold_holds_only_images_still_to_be_used(demo_reader):
    pairs = list(dict(demo_reader.split_list("val", 0)).items())  # distinct images, each with a class
    images = [image for image, _ in pairs]
    episodes = [Episode(index, 0, pairs[index][1], images[index], (images[index + 1],)) for index in range(5)]
    loader = EpisodeLoader(demo_reader, 64)
    loader.expect(episodes)
    held = []
    for episode in episodes:
        loader.load(episode)
        held.append(len(loader.cache))
    # each episode's support is the next one's query: exactly that image is held between episodes
    assert held == [1, 1, 1, 1, 0] and loader.decoded == 6 and loader.cache.hits == 4


@pytest.mark.parametrize("source", [(375, 500), (480, 640), (400, 400), (200, 200), (17, 1031), (1, 3)])
@pytest.mark.parametrize("target", [(400, 400), (473, 473), (96, 128), (1, 1)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_label_maps_resize_exactly_as_torch_nearest_interpolation(source, target, dtype):
    label = np.random.default_rng(sum(source + target)).integers(0, 1204, size=source).astype(dtype)
    expected = F.interpolate(torch.from_numpy(label.astype(np.float32))[None, None], target, mode="nearest")[0, 0]
    kept = torch.uint8 if dtype == np.uint8 else torch.int16  # uint8 maps stay uint8, wider ones become int16
    torch.testing.assert_close(resize_nearest(label, target), expected.to(kept), rtol=0, atol=0)
