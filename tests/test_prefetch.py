"""Prefetching: batches come out in order, load ahead of the consumer, surface a loading error at the
batch that raised it, and a run with prefetching journals exactly what the synchronous run journals."""

import sqlite3
import threading

import pytest
import torch

from fssbench import registry
from fssbench.cli.evaluate import EvalRequest, evaluate
from fssbench.harness.contract import FssAdapter
from fssbench.harness.prefetch import Prefetcher


class SupportAware(FssAdapter):
    """Deterministic and sensitive to every input: query pixels brighter than the support's annotated
    foreground (on labelled pixels), as probabilities."""

    description = "test adapter"
    support_annotations = frozenset({"mask", "scribble", "box"})

    def setup(self, context):
        pass

    def predict(self, batch):
        green = batch.support_images[:, :, 1]
        weight = batch.support_masks * batch.support_labelled
        reference = (green * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3)).clamp(min=1)
        return torch.sigmoid(20 * (batch.query_images[:, 1] - reference[:, None, None]))


def test_batches_come_out_in_order_with_any_depth():
    chunks = [[index] for index in range(7)]
    for depth in (0, 1, 3, 10):
        with Prefetcher(lambda chunk: chunk[0] * 10, depth) as prefetcher:
            assert [(chunk, wait()) for chunk, wait in prefetcher.over(chunks)] == [(c, c[0] * 10) for c in chunks]


def test_later_batches_load_while_the_consumer_holds_one():
    loaded = {index: threading.Event() for index in range(4)}

    def load(chunk):
        loaded[chunk].set()
        return chunk

    with Prefetcher(load, 2) as prefetcher:
        batches = prefetcher.over(range(4))
        chunk, wait = next(batches)
        assert wait() == 0
        assert loaded[1].wait(5) and loaded[2].wait(5)  # both loaded before the consumer asks for them
        assert not loaded[3].is_set()  # no deeper than `depth`
        assert [wait() for _, wait in batches] == [1, 2, 3]


def test_a_loading_error_surfaces_at_its_batch_after_the_earlier_ones():
    def load(chunk):
        if chunk == 3:
            raise ValueError("batch 3 is unreadable")
        return chunk

    received = []
    with pytest.raises(ValueError, match="batch 3"):
        with Prefetcher(load, 2) as prefetcher:
            for chunk, wait in prefetcher.over(range(6)):
                received.append(wait())
    assert received == [0, 1, 2]


def journaled(out):
    [path] = (out / "journals").glob("*.sqlite")
    with sqlite3.connect(path) as connection:
        return sorted(connection.execute("SELECT fold, unit, payload FROM units").fetchall())


@pytest.mark.parametrize("protocol", ["demo-1shot-scribble", "demo-5shot"])
def test_prefetching_journals_exactly_what_the_synchronous_loop_does(protocol, tmp_path):
    registry.methods.register("test-SupportAware", "test_prefetch:SupportAware", "test adapter")
    records = {}
    for prefetch, cache_mb in ((0, None), (3, 1)):  # 1 MB: one image, so threads evict and re-decode
        request = EvalRequest(method="test-SupportAware", protocol=protocol, fold="all", episodes=5, device="cpu",
                              batch_size=2, out=tmp_path / str(prefetch))
        request.prefetch, request.cache_mb = prefetch, cache_mb
        records[prefetch], _ = evaluate(request)
    synchronous, prefetched = records[0], records[3]
    assert journaled(tmp_path / "0") == journaled(tmp_path / "3")
    assert [r.model_dump() for r in synchronous.results] == [r.model_dump() for r in prefetched.results]
    assert 0 < synchronous.results[0].metrics["miou"] < 100
    assert synchronous.loading.prefetch == 0 and prefetched.loading.prefetch == 3
    assert prefetched.loading.cache_budget_mb == 1 and prefetched.loading.cache_evictions > 0
    assert prefetched.timing.images_decoded > synchronous.timing.images_decoded
