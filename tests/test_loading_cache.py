"""The bounded decode cache: least recently used entries go first, the budget is never exceeded, an
image decoded again equals the one that was cached, and concurrent loads of one image decode it once."""

import threading
import time

import torch

from fssbench.harness.loading import DecodeCache, EpisodeLoader, default_cache_mb

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
    per_image = 3 * 400 * 400 + 2 * 400 * 400  # uint8 RGB + int16 labels at 400x400
    loader = EpisodeLoader(demo_reader, 400, cache_mb=2)  # room for two images
    first = loader.image_and_label(ids[0])
    for image_id in ids[1:]:
        loader.image_and_label(image_id)
    assert loader.decoded == 6 and len(loader.cache) == 2 == (2 * MB) // per_image
    assert loader.cache.evictions == 4 and loader.cache.peak_bytes <= 2 * MB
    again = loader.image_and_label(ids[0])  # evicted: decoded again, to the same tensors
    assert loader.decoded == 7 and again is not first
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    assert loader.cache_statistics() == {"cache_budget_mb": 2, "cache_peak_mb": 2 * per_image / MB,
                                         "cache_hits": 0, "cache_evictions": 5}


def test_original_labels_count_against_the_budget(demo_reader):
    image_id = demo_reader.split_list("val", 0)[0][0]
    loader = EpisodeLoader(demo_reader, 400, original_resolution=True)
    _, _, original = loader.decoded_image(image_id)
    assert original.dtype == torch.int16
    assert loader.cache.bytes == 5 * 400 * 400 + 2 * original.numel()


def test_default_budget_is_a_quarter_of_memory_at_most_4_gb():
    assert 0 < default_cache_mb() <= 4096
    assert EpisodeLoader.__init__.__defaults__[-1] is None  # None means the default budget
