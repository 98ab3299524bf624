"""`fssbench bench` and what it measures against: the HSNet-style loop's histc metric agrees with
fssbench's counts, the fixtures have the real lists' shape, a tiny benchmark runs end to end, and the
commands that need no torch do not import it."""

import json
import os
import subprocess
import sys

import pytest
import torch

from fssbench.harness.hsnet_loop import EpisodeDataset, classify_prediction
from fssbench.harness.metrics import episode_counts


def test_hsnet_histc_areas_equal_fssbench_counts():
    generator = torch.Generator().manual_seed(0)
    truth = torch.rand(1, 50, 60, generator=generator) > 0.6
    prediction = torch.rand(1, 50, 60, generator=generator) > 0.5
    ignore = torch.zeros(1, 50, 60)
    ignore[0, :5] = 1
    truth[0, :5] = False  # HSNet asserts ignored pixels are not foreground
    inter, union = classify_prediction(prediction.float(), {"query_mask": truth.float(), "query_ignore_idx": ignore})
    counts = episode_counts(prediction[0], truth[0], ignore[0].bool())
    assert [inter[:, 0].tolist(), union[:, 0].tolist()] == [list(counts[0]), list(counts[1])]
    inter, union = classify_prediction(prediction.float(), {"query_mask": truth.float()})  # COCO: no ignore
    counts = episode_counts(prediction[0], truth[0], None)
    assert [inter[:, 0].tolist(), union[:, 0].tolist()] == [list(counts[0]), list(counts[1])]


def test_coco_like_fixture_has_the_published_list_shape(isolated_cache):
    from fssbench import registry
    from fssbench.harness.episodes import build_manifest
    from fssbench.protocols.bench_fixtures import COCO_FOLD0_CLASS_SIZES, prepare_fixture

    root = prepare_fixture("coco", (1,), 3)
    reader = registry.datasets.get("coco")(root)
    assert sum(len(images) for _, images in reader.class_lists("val", 0).items()) == sum(COCO_FOLD0_CLASS_SIZES)
    spec = registry.protocols.get("coco20i-1shot")
    manifest = build_manifest(spec, reader, registry.samplers.get("hsnet-coco"), 0, spec.seed, None).head(3)
    for episode in manifest.episodes:
        assert reader.image_path(episode.query).is_file() and reader.label_path(episode.supports[0]).is_file()
    # HSNet's COCO reader has no ignore boundary (its PASCAL reader does: the demo's layout)
    assert "query_ignore_idx" not in EpisodeDataset(reader, list(manifest.episodes), 32)[0]


def test_hsnet_style_pascal_episodes_carry_the_ignore_boundary(demo_reader):
    from fssbench.harness.episodes import Episode

    [(query, class_id), (support, _)] = demo_reader.split_list("val", 0)[:2]
    item = EpisodeDataset(demo_reader, [Episode(0, 0, class_id, query, (support,))], 32)[0]
    assert item["query_ignore_idx"].shape == item["query_mask"].shape == (32, 32)


@pytest.mark.slow
def test_a_tiny_benchmark_runs_and_both_loops_agree(cli, tmp_path):
    table = tmp_path / "bench.md"
    result = cli("bench", "--fixture", "pascal", "--shot", "1", "--episodes", "3", "--overlap-episodes", "3",
                 "--json", "--markdown", str(table))
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    [row] = report["rows"]
    assert row["miou"][0] == pytest.approx(row["miou"][1], abs=1e-5) and row["miou"][0] > 0  # HSNet: float32
    assert row["loads"] == 6 and 0 < row["decoded"] <= 6 and row["ratio"] > 0
    assert report["overlap"]["efficiency"] > 0 and "| pascal-like | pascal5i-1shot | 3 |" in table.read_text()


@pytest.mark.slow
def test_commands_that_read_lists_or_records_import_no_torch(demo_reader, tmp_path):
    from fssbench.cli.evaluate import EvalRequest, evaluate

    results = tmp_path / "results"
    first, _ = evaluate(EvalRequest(method="oracle", protocol="demo-1shot", fold="0", episodes=2, device="cpu",
                                    out=results))
    second, _ = evaluate(EvalRequest(method="oracle", protocol="demo-1shot", fold="1", episodes=2, device="cpu",
                                     out=results))
    commands = [["episodes", "--protocol", "demo-1shot", "--fold", "0"], ["list", "methods"],
                ["protocols", "show", "coco20i-1shot"], ["runs", "list", "--results", str(results)],
                ["runs", "show", first.run_id, "--results", str(results)], ["leaderboard", "--results", str(results)],
                ["compare", first.run_id, second.run_id, "--results", str(results)]]
    code = ("import sys\nfrom fssbench.cli import app\n"
            f"for args in {commands!r}:\n"
            "    try:\n        app(args)\n    except SystemExit:\n        pass\n"
            "    assert 'torch' not in sys.modules, args\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "FSSBENCH_CACHE": os.environ["FSSBENCH_CACHE"]})
    assert done.returncode == 0, done.stderr[-2000:]


def test_episodes_of_coco20i_read_a_cached_manifest_without_torch_or_numpy(tmp_path):
    import pickle

    lists = {class_id: [f"val2014/COCO_val2014_{class_id:06d}{n}.jpg" for n in range(3)] for class_id in range(0, 80, 4)}
    (tmp_path / "splits" / "coco" / "val").mkdir(parents=True)
    (tmp_path / "splits" / "coco" / "val" / "fold0.pkl").write_bytes(pickle.dumps(lists))
    command = ["episodes", "--protocol", "coco20i-1shot", "--fold", "0", "--data-root", str(tmp_path)]
    code = ("import sys\nfrom fssbench.cli import app\n"
            f"try:\n    app({command!r})\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "print(sorted({'torch', 'numpy'} & set(sys.modules)), file=sys.stderr)\n")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "FSSBENCH_CACHE": os.environ["FSSBENCH_CACHE"]}) for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr[-2000:]
    assert runs[0].stdout == runs[1].stdout and len(runs[1].stdout.splitlines()) == 1000
    assert runs[0].stderr.splitlines()[-1] == "['numpy']"  # the first run samples (numpy's legacy RNG)
    assert runs[1].stderr.splitlines()[-1] == "[]"  # the second reads the cached manifest
