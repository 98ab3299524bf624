"""Generalized FSS: DIaM's resize, label space, confusion-matrix scoring, runs, resume and reports."""

import json

import numpy as np
import pytest
import torch

from fssbench import registry
from fssbench.harness.gfss import label_space
from fssbench.harness.gfss_metrics import GfssRunState, average_over_runs, gfss_scores, query_confusion
from fssbench.harness.record import parse_record
from fssbench.harness.loading import EpisodeLoader, pad_size
from fssbench.protocols.diam import SUPPORT_MIN_AREA, label_areas, sample_diam_manifest
from fssbench.reports.leaderboard import build_tables, to_markdown

from adapters_for_tests import GfssFirstNovel


@pytest.mark.parametrize("height, width, expected", [
    (375, 500, (312, 416)),  # long side 417 -> floored to 416; 375 * 0.834 = 312.75 -> 312
    (500, 333, (416, 272)),  # 333 * 0.834 = 277.7 -> 277 -> 272
    (417, 417, (416, 416)),
])
def test_pad_size_is_diams_find_new_hw(height, width, expected):
    assert pad_size(height, width, 417) == expected


def test_pad_mode_puts_the_image_top_left_and_ignores_the_padding(demo_reader):
    loader = EpisodeLoader(demo_reader, 417, mode="pad")
    image_id = demo_reader.image_list()[0]
    image, label = loader.image_and_label(image_id)
    original = demo_reader.decode_label(__import__("PIL.Image").Image.open(demo_reader.label_path(image_id)))
    height, width = pad_size(*original.shape, 417)
    assert image.shape == (3, 417, 417) and (image[:, height:, :] == 0).all() and (image[:, :, width:] == 0).all()
    assert loader.ignore(label)[height:, :].all() and not loader.ignore(label)[:height, :width].any()


def test_query_confusion_and_run_scores_by_hand():
    truth = torch.tensor([[0, 1, 2, 255]])
    prediction = torch.tensor([[0, 2, 2, 1]])
    cells = query_confusion(prediction, truth, truth == 255, 3)
    assert sorted(cells) == [(0, 0, 1), (1, 2, 1), (2, 2, 1)]
    state = GfssRunState(base=1, novel=1)
    state.update(cells)
    scores = state.scores()  # base class 1: I 0, U 1 -> 0; novel class 2: I 1, U 2 -> 50
    assert scores["base"] == pytest.approx(0.0) and scores["novel"] == pytest.approx(50.0, rel=1e-8)
    assert scores["mean"] == pytest.approx(25.0) and scores["harmonic"] == 0.0
    assert np.array_equal(state.merge(state).confusion, 2 * state.confusion)
    assert scores == pytest.approx(gfss_scores(state.confusion, [1], [2]))
    average = average_over_runs([{"base": 40.0, "novel": 20.0}, {"base": 60.0, "novel": 40.0}])
    assert average == pytest.approx({"base": 50.0, "novel": 30.0, "mean": 40.0, "harmonic": 37.5})


def test_label_space_is_background_then_base_then_novel(demo_reader):
    space = label_space(demo_reader, 1)
    assert space.novel == [4, 5, 6, 7] and space.base == [0, 1, 2, 3, *range(8, 16)]
    assert space.size == 17 and space.names[0] == "background" and len(space.names) == 17


def test_diam_manifest_on_the_demo(demo_reader):
    runs = sample_diam_manifest(demo_reader, fold=0, shot=1)
    assert [r.run for r in runs] == [0, 1, 2, 3, 4]
    assert len({r.supports for r in runs}) > 1  # runs continue one random stream, so they differ
    for run in runs:
        assert [c for c, _ in run.supports] == [0, 1, 2, 3]
        for class_id, (image_id,) in run.supports:
            assert label_areas(demo_reader, image_id)[class_id + 1] >= SUPPORT_MIN_AREA
            assert image_id not in run.queries
    assert sample_diam_manifest(demo_reader, fold=0, shot=1) == runs
    capped = sample_diam_manifest(demo_reader, fold=0, shot=1, queries=7)
    assert all(len(r.queries) == 7 for r in capped)


@pytest.fixture
def gfss_adapter():
    registry.methods.register("test-GfssFirstNovel", "adapters_for_tests:GfssFirstNovel", "test adapter")
    GfssFirstNovel.calls, GfssFirstNovel.interrupt_at = 0, None


def gfss_run(cli, out, method="oracle", *flags):
    return cli("eval", "-m", method, "-p", "gfss-demo-1shot", "--fold", "0", "--episodes", "6", "--json",
               "--out", str(out), *flags)


def test_oracle_scores_100_and_the_record_has_diams_figures(cli, tmp_path):
    result = gfss_run(cli, tmp_path)
    assert result.code == 0, result.stderr
    record = json.loads(result.stdout)
    fold = record["results"][0]
    assert record["task"] == "gfss" and len(fold["runs"]) == 5 and fold["episodes"] == 30
    assert {m["name"]: m["value"] for m in record["metrics"]} == pytest.approx(
        {"base": 100.0, "novel": 100.0, "miou": 100.0, "harmonic": 100.0})  # DIaM: I / (U + 1e-10)
    assert set(fold["adapt_ms"]) == {"0", "1", "2", "3", "4"}
    assert record["evaluation_resolution"] == "417x417 (pad)" and record["seed"] == 2023


def test_an_imperfect_method_is_scored_by_the_confusion_matrix_and_resumes_exactly(cli, tmp_path, gfss_adapter):
    whole = json.loads(gfss_run(cli, tmp_path / "whole", "test-GfssFirstNovel").stdout)
    GfssFirstNovel.calls, GfssFirstNovel.interrupt_at = 0, 17
    assert gfss_run(cli, tmp_path / "resumed", "test-GfssFirstNovel").code == 130
    GfssFirstNovel.interrupt_at = None
    resumed = json.loads(gfss_run(cli, tmp_path / "resumed", "test-GfssFirstNovel").stdout)
    assert resumed["resumed_episodes"] == 16
    assert resumed["results"][0]["confusion"] == whole["results"][0]["confusion"]
    for run in whole["results"][0]["runs"]:
        confusion = np.array(whole["results"][0]["confusion"][str(run["run"])])
        assert run["base"] == pytest.approx(gfss_scores(confusion, list(range(1, 13)), [13, 14, 15, 16])["base"])
        assert run["base"] == 0.0 and 0 < run["novel"] < 100  # base pixels all went to the first novel class


def test_fss_methods_are_refused_and_original_resolution_too(cli, tmp_path):
    result = gfss_run(cli, tmp_path, "protonet")
    assert result.code == 2 and "does not do task 'gfss'" in result.stderr
    result = gfss_run(cli, tmp_path, "oracle", "--original-resolution")
    assert result.code == 2 and "--original-resolution" in result.stderr


def test_leaderboard_shows_base_novel_mean_harmonic(cli, tmp_path):
    record = parse_record(json.loads(gfss_run(cli, tmp_path).stdout), "stdout")
    markdown = to_markdown(build_tables([record]))
    assert "| 1-shot base | novel | mean | harmonic | s/query |" in markdown
    assert "| oracle | - | none | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 |" in markdown


def test_episodes_prints_each_run_header_then_its_queries(cli):
    lines = [json.loads(line) for line in cli("episodes", "-p", "gfss-demo-1shot", "--fold", "0").stdout.splitlines()]
    headers = [line for line in lines if "supports" in line]
    assert [h["run"] for h in headers] == [0, 1, 2, 3, 4] and "supports" in lines[0]
    assert [c for c, _ in headers[0]["supports"]] == [0, 1, 2, 3]
    assert lines[1] == {"run": 0, "index": 0, "query": lines[1]["query"]}


def test_pad_mode_pads_instance_maps_like_labels(demo_reader):
    loader = EpisodeLoader(demo_reader, 417, mode="pad")
    image_id = demo_reader.image_list()[0]
    _, label = loader.image_and_label(image_id)
    torch.testing.assert_close(loader.instances(image_id), label, rtol=0, atol=0)  # the demo's instance map is its label map
