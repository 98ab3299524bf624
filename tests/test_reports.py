"""The results store, leaderboards (golden files) and the regression gate's exit codes."""

import json
from pathlib import Path

import pandas as pd
import pytest

from fssbench.harness.journal import JournaledEpisode
from fssbench.harness.metrics import EpisodeScore
from fssbench.reports.leaderboard import build_tables, to_csv, to_markdown
from fssbench.harness.store import ResultsStore
from records_for_tests import make_record, with_changes

GOLDEN = Path(__file__).parent / "golden"


def board_records():
    return [
        make_record("r1", "protonet", 0.45, shot=1),
        make_record("r2", "protonet", 0.55, shot=5),
        make_record("r3", "oracle", 1.0, shot=1),
        make_record("r4", "protonet", 0.0, shot=1, timing_only=True, compute_ms=80),
        make_record("r5", "protonet", 0.5, shot=1, manifest_tag="other"),  # other split lists: own table
        with_changes(make_record("r6", "protonet", 0.2, shot=1), status="failed"),  # never shown
    ]


def test_leaderboard_markdown_matches_the_golden_file():
    assert to_markdown(build_tables(board_records())) == (GOLDEN / "leaderboard.md").read_text()


def test_leaderboard_csv_matches_the_golden_file_and_loads_with_typed_columns(tmp_path):
    text = to_csv(build_tables(board_records()))
    assert text == (GOLDEN / "leaderboard.csv").read_text()
    frame = pd.read_csv(GOLDEN / "leaderboard.csv")
    assert frame["shot"].dtype == "int64" and frame["timing_only"].dtype == "bool"
    assert frame["fold0"].dtype == "float64" and frame["mean_miou"].dtype == "float64"
    assert frame.loc[frame["timing_only"], "mean_miou"].isna().all()


def test_runs_on_different_manifests_never_share_a_column():
    tables = build_tables(board_records())
    assert len(tables) == 2 and "[other manifests #2]" in tables[1].title
    assert [key[0] for key in tables[1].rows] == ["protonet"]


def test_store_round_trip_and_episode_export(tmp_path):
    record = make_record("20260101T000000Z-protonet-toy-abc123", "protonet", 0.4)
    episodes = [JournaledEpisode(r["fold"], EpisodeScore(row[0], row[1], (row[2], row[3]), (row[4], row[5])),
                                 (1.0, 2.0, 0.5), row[0] < 2)
                for r in record["results"] for row in r["episode_scores"]]
    with ResultsStore(tmp_path / "store.sqlite") as store:
        store.save(record, episodes)
        store.save(record, episodes)  # saving again replaces, never duplicates
    with ResultsStore(tmp_path / "store.sqlite") as store:
        assert store.record("20260101") == record
        [summary] = store.runs(method="protonet")
        assert summary["mean_miou"] == record["mean_miou"] and store.runs(method="oracle") == []
        frame = store.episode_frame(record["run_id"])
    assert len(frame) == len(episodes) and frame["inter_fg"].dtype == "int64" and frame["warmup"].sum() == 4


@pytest.fixture
def record_files(tmp_path):
    def write(record):
        path = tmp_path / f"{record['run_id']}.json"
        path.write_text(json.dumps(record))
        return str(path)
    return write


def test_compare_exit_codes(cli, record_files):
    base = make_record("base", "protonet", 0.5)
    assert cli("compare", record_files(base), record_files(base)).code == 0
    worse = make_record("worse", "protonet", 0.3)
    result = cli("compare", record_files(base), record_files(worse), "--json")
    verdict = json.loads(result.stdout)
    assert result.code == 1 and verdict["verdict"] == "regression" and verdict["difference"] < -10
    assert cli("compare", record_files(base), record_files(worse), "--max-drop", "50").code == 0
    other = make_record("other", "protonet", 0.5, protocol="toy-2shot")
    assert cli("compare", record_files(base), record_files(other)).code == 3
    resized = with_changes(base, run_id="resized", evaluation_resolution="512x512 (squash)")
    assert cli("compare", record_files(base), record_files(resized)).code == 3
    assert cli("compare", record_files(base), record_files(make_record("m", "p", 0.5, manifest_tag="x"))).code == 3
    missing = cli("compare", "no-such-baseline.json", record_files(base))
    assert missing.code == 3 and "missing baseline" in missing.stdout
    assert cli("compare", record_files(base), "no-such-current.json").code == 2
    assert cli("compare", record_files(base)).code == 2


def test_compare_paired_and_slowdown(cli, record_files):
    base = make_record("base", "protonet", 0.5)
    slightly = with_changes(base, run_id="slightly")
    slightly["results"] = [dict(r, episode_scores=[[i, c, ib, f - 5, ub, uf] for i, c, ib, f, ub, uf in r["episode_scores"]])
                           for r in base["results"]]
    slightly["mean_miou"] = base["mean_miou"] - 0.6
    # unpaired: a 0.6 drop exceeds the 0.5 tolerance; paired: the interval [-0.6, -0.5] is not all below -0.5
    assert cli("compare", record_files(base), record_files(slightly)).code == 1
    paired = cli("compare", record_files(base), record_files(slightly), "--paired", "--json")
    assert json.loads(paired.stdout)["paired"]["ci95"][1] < 0
    worse = make_record("worse", "protonet", 0.3)
    assert cli("compare", record_files(base), record_files(worse), "--paired").code == 1
    slow = with_changes(base, run_id="slow", timing=dict(base["timing"], compute_ms_median=130.0))
    assert cli("compare", record_files(base), record_files(slow), "--max-slowdown", "20").code == 1
    assert cli("compare", record_files(base), record_files(slow), "--max-slowdown", "40").code == 0
    elsewhere = with_changes(slow, run_id="elsewhere", environment={"device_name": "Other GPU"})
    assert cli("compare", record_files(base), record_files(elsewhere), "--max-slowdown", "40").code == 3
    timing_only = make_record("t", "protonet", 0.0, timing_only=True)
    assert cli("compare", record_files(base), record_files(timing_only)).code == 3


def test_runs_leaderboard_and_compare_on_real_runs(cli, tmp_path):
    out = str(tmp_path / "results")
    ids = {}
    for method, protocol in (("oracle", "demo-1shot"), ("protonet", "demo-1shot"), ("oracle", "demo-5shot")):
        result = cli("eval", "-m", method, "-p", protocol, "--fold", "0", "--episodes", "4", "--json", "--out", out)
        ids[method, protocol] = json.loads(result.stdout)["run_id"]
    listed = cli("runs", "list", "--results", out, "--method", "oracle")
    assert listed.code == 0 and ids["oracle", "demo-1shot"] in listed.stdout
    assert ids["protonet", "demo-1shot"] not in listed.stdout
    shown = cli("runs", "show", ids["protonet", "demo-1shot"][:-2], "--results", out, "--json")
    assert json.loads(shown.stdout)["run_id"] == ids["protonet", "demo-1shot"]
    csv = tmp_path / "episodes.csv"
    assert cli("runs", "export", ids["protonet", "demo-1shot"], "--results", out, "--csv", str(csv)).code == 0
    assert len(pd.read_csv(csv)) == 4
    board = cli("leaderboard", "--results", out)
    assert board.code == 0 and "| oracle | - | none |" in board.stdout and "95% CI" in board.stdout
    assert cli("leaderboard", "--results", out, "--format", "csv", "--out", str(tmp_path / "b.csv")).code == 0
    assert set(pd.read_csv(tmp_path / "b.csv")["method"]) == {"oracle", "protonet"}
    oracle, protonet = ids["oracle", "demo-1shot"], ids["protonet", "demo-1shot"]
    assert cli("compare", oracle, oracle, "--results", out).code == 0
    assert cli("compare", oracle, protonet, "--results", out).code == 1
    assert cli("compare", oracle, protonet, "--results", out, "--paired").code == 1
    assert cli("compare", ids["oracle", "demo-5shot"], protonet, "--results", out).code == 3
    assert cli("runs", "show", "nope", "--results", out).code == 2
    assert cli("runs", "list", "--results", str(tmp_path / "empty")).code == 2


def test_an_ablation_gets_a_row_of_its_own_named_by_its_changed_options():
    records = [make_record("g1", "gsm+protonet", 0.5), with_changes(make_record("g2", "gsm+protonet", 0.4),
                                                                    variant="qsm=off")]
    [table] = build_tables(records)
    assert sorted(key[0] for key in table.rows) == ["gsm+protonet", "gsm+protonet [qsm=off]"]
