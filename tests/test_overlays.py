"""--save-predictions and `fssbench show`: predictions saved as 1-bit PNGs that the precomputed method
re-scores to the same counts, episodes picked by the record's IoU, drawn after their saved prediction is
checked against the data, and clear errors when predictions were not saved or no longer match."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fssbench.cli.evaluate import EvalRequest, evaluate
from fssbench.harness.store import STORE_NAME, ResultsStore
from fssbench.reports.overlays import episode_ious, pick_episodes
from records_for_tests import make_record

EPISODES = 4


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, isolated_cache):
    """A protonet run on demo-1shot fold 0 (first 4 episodes) with its predictions saved."""
    out = tmp_path_factory.mktemp("saved")
    record, _ = evaluate(EvalRequest(method="protonet", protocol="demo-1shot", fold="0", out=out, device="cpu",
                                     episodes=EPISODES, save_predictions=True))
    return out, record


@pytest.mark.slow
def test_predictions_are_saved_as_1_bit_pngs_that_precomputed_rescores_exactly(saved_run, tmp_path):
    out, record = saved_run
    assert record.predictions == f"predictions/{record.run_id}"
    with ResultsStore(out / STORE_NAME) as store:
        assert store.record(record.run_id).predictions == record.predictions
    files = sorted((out / record.predictions / "fold0").iterdir())
    assert [path.name for path in files] == [f"{index}.png" for index in range(EPISODES)]
    for path in files:
        with Image.open(path) as image:
            assert image.mode == "1" and image.size == (400, 400)
    rescored, _ = evaluate(EvalRequest(method="precomputed", protocol="demo-1shot", fold="0", out=tmp_path,
                                       device="cpu", episodes=EPISODES,
                                       weights=[f"predictions={out / record.predictions}"]))
    assert rescored.results[0].episode_scores == record.results[0].episode_scores  # counts: exact
    assert rescored.results[0].metrics == record.results[0].metrics
    assert 0 < record.mean_miou < 100  # a real method's masks, not a trivial all-right or all-wrong one


@pytest.mark.slow
def test_show_draws_the_worst_and_best_episodes_and_a_chosen_one(saved_run, cli, tmp_path):
    out, record = saved_run
    result = cli("show", record.run_id, "--worst", "2", "--best", "1", "--results", str(out),
                 "--out", str(tmp_path / "grid.png"))
    assert result.code == 0, result.stderr
    with Image.open(tmp_path / "grid.png") as image:
        image.load()
        assert image.format == "PNG" and image.height > image.width  # three rows of three panels
    result = cli("show", record.run_id[:20], "--episode", "2", "--results", str(out))  # one fold: no --fold needed
    assert result.code == 0, result.stderr
    assert (out / "plots" / f"{record.run_id}-fold0-episode2.png").is_file()
    result = cli("show", record.run_id, "--episode", "9", "--results", str(out))
    assert result.code == 2 and "no episode 9 in fold 0" in result.stderr


@pytest.mark.slow
def test_a_prediction_that_no_longer_matches_its_record_is_refused(saved_run, cli, tmp_path):
    out, record = saved_run
    copy = tmp_path / "results"
    shutil.copytree(out, copy)
    path = copy / record.predictions / "fold0" / "1.png"
    with Image.open(path) as image:
        flipped = ~np.asarray(image, dtype=bool)
    Image.fromarray(flipped).save(path)
    result = cli("show", record.run_id, "--episode", "1", "--results", str(copy))
    assert result.code == 1 and "changed since the run" in result.stderr
    shutil.rmtree(copy / record.predictions)
    result = cli("show", record.run_id, "--episode", "1", "--results", str(copy))
    assert result.code == 1 and "saved predictions are not in" in result.stderr


def test_show_explains_a_run_without_saved_predictions(cli, tmp_path):
    result = cli("eval", "-m", "oracle", "-p", "demo-1shot", "--fold", "0", "--episodes", "2", "--out", str(tmp_path))
    assert result.code == 0, result.stderr
    with ResultsStore(tmp_path / STORE_NAME) as store:
        (record,) = store.records()
    assert record.predictions is None and not (tmp_path / "predictions").exists()
    shown = cli("show", record.run_id, "--worst", "1", "--results", str(tmp_path))
    assert shown.code == 2 and "did not save its predictions" in shown.stderr and "--save-predictions" in shown.stderr
    # the same command again with the flag resumes the finished journal: nothing is predicted, and it says so
    again = cli("eval", "-m", "oracle", "-p", "demo-1shot", "--fold", "0", "--episodes", "2", "--out", str(tmp_path),
                "--save-predictions")
    assert again.code == 0 and "2 episodes" in again.stderr and "--no-resume" in again.stderr


@pytest.mark.parametrize("args, needle", [
    (("-p", "gfss-demo-1shot", "-m", "oracle"), "saves episodic FSS predictions"),
    (("-p", "demo-1shot", "-m", "oracle", "--original-resolution"), "drop one"),
])
def test_save_predictions_is_refused_where_it_cannot_rescore_exactly(cli, tmp_path, args, needle):
    result = cli("eval", *args, "--save-predictions", "--episodes", "1", "--out", str(tmp_path))
    assert result.code == 2 and needle in result.stderr


def test_episodes_are_picked_by_the_records_foreground_iou():
    record = make_record("r", "alpha", 0.6, folds=(0, 1))
    ious = episode_ious(record)
    expected = sorted(((100 * row[3] / row[5], result.fold, row[0]) for result in record.results
                       for row in result.episode_scores))
    assert [(item.iou, item.fold, item.index) for item in ious] == expected
    worst, best = pick_episodes(record, worst=3), pick_episodes(record, best=2)
    assert worst == ious[:3] and best == ious[::-1][:2]
    everything = pick_episodes(record, worst=len(ious), best=5)
    assert everything == ious  # no episode twice


def test_show_needs_one_way_of_choosing_episodes(cli, tmp_path):
    result = cli("show", "some-run", "--results", str(tmp_path))
    assert result.code == 2 and "--episode N" in result.stderr
