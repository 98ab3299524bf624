"""Benchmarks of the harness's hot paths at 400x400 (run: pytest tests/benchmarks --benchmark-enable).

Target: harness overhead per 5-shot episode (cached load + batch + prediction checks + scoring) under
10 ms on a 2-core machine. Every run asserts it, with torch on one thread (on a busy 2-core machine two
threads mostly wait for each other), timing alongside the conversion of the episode's six images to
float: where even that takes over 1 ms the machine is busy or slow, and the bound becomes 10 times the
conversion (the overhead measures about 4 times it). The other two benchmarks are smoke tests.
"""

import pytest
import torch

from fssbench import registry
from fssbench.harness.episodes import build_manifest
from fssbench.harness.fss import check_prediction, make_batch, score_episode
from fssbench.harness.loading import EpisodeLoader
from fssbench.harness.metrics import EpisodeScore, FssMetricState, episode_counts

OVERHEAD_TARGET_S = 0.010
OVERHEAD_PER_CONVERSION = 10  # about 4 measured, quiet or busy


@pytest.fixture
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def warm(demo_reader):
    spec = registry.protocols.get("demo-5shot")
    sampler = registry.samplers.get(spec.sampler["name"])
    manifest = build_manifest(spec, demo_reader, sampler, 0, spec.seed, None).head(20)
    loader = EpisodeLoader(demo_reader, spec.resolution.size)
    for episode in manifest.episodes:
        loader.load(episode)
    return loader, manifest, demo_reader


def test_cached_episode_load(benchmark, warm):
    loader, manifest, _ = warm
    benchmark(lambda: [loader.load(e) for e in manifest.episodes[:10]])


def test_metric_update(benchmark, warm):
    loader, manifest, _ = warm
    loaded = loader.load(manifest.episodes[0])
    prediction = torch.rand(400, 400) > 0.5
    state = FssMetricState((0, 1, 2, 3))

    def update():
        inter, union = episode_counts(prediction, loaded.query_mask, loaded.query_ignore)
        state.update(EpisodeScore(0, manifest.episodes[0].class_id, inter, union))

    benchmark(update)


def test_harness_overhead_per_episode(median_seconds, warm, one_torch_thread):
    loader, manifest, reader = warm
    cpu = torch.device("cpu")
    state = FssMetricState(tuple(reader.fold_classes(0)))
    probabilities = torch.rand(1, 400, 400)
    episode = manifest.episodes[3]
    cached = loader.load(episode)
    assert len(episode.supports) == 5

    def one_episode():
        loaded = loader.load(episode)
        make_batch([episode], [loaded], reader.class_names, cpu, with_truth=False)
        mask = check_prediction(probabilities, (1, 400, 400), [episode], "bench")[0]
        state.update(score_episode(episode, loaded, mask, probabilities[0], cpu, padded=False))

    def convert_images():  # the least any evaluation does with an episode's pixels
        torch.cat([cached.query_image[None], cached.support_images]).float().div_(255)

    overhead, conversion = median_seconds(one_episode, convert_images)
    bound = max(OVERHEAD_TARGET_S, OVERHEAD_PER_CONVERSION * conversion)
    assert overhead < bound, (f"harness overhead {overhead * 1e3:.2f} ms per 5-shot episode; target < 10 ms "
                              f"(image conversion took {conversion * 1e3:.2f} ms)")
