"""Benchmarks of loading overlapped with compute and of the per-episode batch and check costs
(run: pytest tests/benchmarks --benchmark-enable). Assertions are ratios, never absolute times: the
make_batch check only guards against a regression (on CPU it converts as before; on CUDA the gain is
the uint8 transfer from pinned memory).

Overlap: a load and a compute of 20 ms each (sleeps, so the machine's load matters little) over 30
batches take 1.2 s one after the other; with prefetching the total should approach max(load,
compute) = 0.6 s (plus the first load, which nothing hides): efficiency >= 0.8 (issue 14's target)."""

import time

import pytest
import torch

from fssbench.harness.fss import check_prediction, make_batch
from fssbench.harness.prefetch import Prefetcher

BATCHES, LOAD_S, COMPUTE_S = 30, 0.02, 0.02


def run(depth: int) -> float:
    def load(chunk):
        time.sleep(LOAD_S)
        return chunk

    started = time.perf_counter()
    with Prefetcher(load, depth) as prefetcher:
        for _, wait in prefetcher.over(range(BATCHES)):
            wait()
            time.sleep(COMPUTE_S)
    return time.perf_counter() - started


def test_prefetching_overlaps_loading_with_compute(benchmark):
    overlapped = benchmark.pedantic(run, args=(2,), rounds=1, iterations=1)
    serial = run(0)
    ideal = BATCHES * max(LOAD_S, COMPUTE_S) + LOAD_S
    assert serial >= BATCHES * (LOAD_S + COMPUTE_S)
    assert ideal / overlapped >= 0.8, f"overlap efficiency {ideal / overlapped:.2f} (total {overlapped:.3f} s)"


@pytest.fixture(scope="module")
def episode_tensors(demo_reader):
    from fssbench import registry
    from fssbench.harness.episodes import build_manifest
    from fssbench.harness.loading import EpisodeLoader

    spec = registry.protocols.get("demo-5shot")
    manifest = build_manifest(spec, demo_reader, registry.samplers.get(spec.sampler["name"]), 0, spec.seed, None)
    episode = manifest.episodes[0]
    return episode, EpisodeLoader(demo_reader, spec.resolution.size).load(episode), demo_reader.class_names


def test_check_prediction_in_one_pass_is_cheaper_than_three(median_seconds, episode_tensors):
    episode = episode_tensors[0]
    prediction = torch.rand(1, 400, 400)

    def three_passes():  # the former check: finiteness, then min, then max, then the threshold
        assert torch.isfinite(prediction).all()
        low, high = prediction.min().item(), prediction.max().item()
        assert 0 <= low and high <= 1
        return prediction > 0.5

    one, three = median_seconds(lambda: check_prediction(prediction, (1, 400, 400), [episode], "bench"),
                                three_passes, calls=50)
    torch.testing.assert_close(check_prediction(prediction, (1, 400, 400), [episode], "bench"), three_passes(), rtol=0, atol=0)
    assert one < three, f"one pass {one * 1e3:.2f} ms vs three passes {three * 1e3:.2f} ms"


def test_make_batch_costs_no_more_than_the_former_float_then_divide(median_seconds, episode_tensors):
    episode, loaded, names = episode_tensors
    cpu = torch.device("cpu")

    def former():  # the former make_batch's tensor work: .float() then .div_(255), masks .float()
        images = [torch.stack([loaded.query_image]).float().div_(255), torch.stack([loaded.support_images]).float().div_(255)]
        masks = [torch.stack([loaded.support_masks]).float(), torch.stack([loaded.support_labelled]).float()]
        return images + masks

    batched, reference = median_seconds(lambda: make_batch([episode], [loaded], names, cpu, with_truth=False),
                                        former, calls=30)
    batch = make_batch([episode], [loaded], names, cpu, with_truth=False)
    expected = former()
    for got, want in zip((batch.query_images, batch.support_images, batch.support_masks, batch.support_labelled),
                         expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)  # the same conversion, bit for bit
    assert batched < 3 * reference, f"make_batch {batched * 1e3:.2f} ms vs former {reference * 1e3:.2f} ms"
