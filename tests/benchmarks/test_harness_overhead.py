"""Benchmarks of the harness's hot paths at 400x400 (run: pytest tests/benchmarks --benchmark-enable).

Target: harness overhead per episode (cached load + batch + prediction checks + scoring) under 10 ms
on a 2-core machine. The default test run executes each benchmark once, untimed, as a smoke test.
"""

import pytest
import torch

from fssbench import registry
from fssbench.harness.loading import EpisodeLoader
from fssbench.harness.metrics import EpisodeScore, FssMetricState, episode_counts
from fssbench.harness.runner import check_prediction, make_batch


@pytest.fixture(scope="module")
def warm(demo_reader):
    spec = registry.protocols.get("demo-5shot")
    from fssbench.harness.evaluation import protocol_manifests

    manifest = protocol_manifests(spec, demo_reader, [0], 0, 20)[0]
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


def test_harness_overhead_per_episode(benchmark, warm):
    loader, manifest, reader = warm
    cpu = torch.device("cpu")
    state = FssMetricState(tuple(reader.fold_classes(0)))
    probabilities = torch.rand(1, 400, 400)

    def one_episode(episode=manifest.episodes[3]):
        loaded = loader.load(episode)
        make_batch([episode], [loaded], reader.class_names, cpu, with_truth=False)
        mask = check_prediction(probabilities, (1, 400, 400), [episode], "bench")[0]
        inter, union = episode_counts(mask, loaded.query_mask, loaded.query_ignore)
        state.update(EpisodeScore(episode.index, episode.class_id, inter, union))

    benchmark(one_episode)
