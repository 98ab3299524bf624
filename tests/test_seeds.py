"""Seeds: `eval --seeds N` runs N seeds, one record each, and the leaderboard aggregates runs that differ only
by seed into one row (mean ± sample std over seeds, a pooled interval), naming the seeds; which run fills a
cell when several could."""

import io
import json

import numpy as np
import pandas as pd
import pytest

from fssbench.harness.fss import FssTask, fold_statistics
from fssbench.harness.statistics import bootstrap_interval, seeds_bootstrap_interval
from fssbench.reports.leaderboard import build_tables, to_csv, to_markdown
from records_for_tests import CLASSES, episode_scores, fss_fold, make_record, with_changes

QUALITIES = {0: 0.40, 1: 0.42, 2: 0.44, 3: 0.46, 4: 0.48}  # seed -> every episode's foreground IoU


def exact_run(seed: int, quality: float, run_id: str | None = None, folds=(0, 1), method: str = "protonet",
              finished: str = "2026-11-01T00:00:00+00:00"):
    """A run of `seed` whose every episode has foreground IoU `quality` exactly: each fold's mIoU is 100 * quality."""
    results = [fss_fold(fold, [[i, CLASSES[fold][i % 4], 9000, int(quality * 1000), 10000, 1000] for i in range(40)],
                        f"seed{seed}-{fold}".ljust(64, "0")) for fold in folds]
    record = make_record(run_id or f"s{seed}", method, 0.5, seed=seed, folds=folds, finished=finished)
    return with_changes(record, results=results, metrics=FssTask().summarize(results))


def test_runs_that_differ_only_by_seed_are_one_row_with_mean_and_std():
    [table] = build_tables([exact_run(seed, quality) for seed, quality in QUALITIES.items()])
    assert table.title == "toy (fss), 400x400 (squash), mask supports, folds 0-1, seeds 0-4"
    [(row, by_shot)] = table.cells.items()
    cell = by_shot[1]
    assert cell.seeds == [0, 1, 2, 3, 4]
    # 40, 42, 44, 46, 48: mean 44, sample std sqrt((16 + 4 + 0 + 4 + 16) / 4) = sqrt(10)
    for stat in (cell.fold_values[0], cell.fold_values[1], cell.values["miou"]):
        assert stat.mean == pytest.approx(44.0, abs=1e-9) and stat.std == pytest.approx(10 ** 0.5, abs=1e-9)
    assert cell.values["fbiou"].std > 0
    markdown = to_markdown([table])
    assert "| protonet | toy-net | model:abababab | 44.0 ± 3.2 | 44.0 ± 3.2 | 44.0 ± 3.2 |" in markdown
    assert "1-shot: seeds 0-4 from runs s0, s1, s2, s3, s4" in markdown
    assert "mean ± sample standard deviation over the seeds" in markdown
    frame = pd.read_csv(io.StringIO(to_csv([table])))
    assert frame["seeds"][0] == "0-4" and frame["run_id"][0] == "s0 s1 s2 s3 s4"
    assert frame["mean_miou"][0] == pytest.approx(44.0) and frame["mean_miou_std"][0] == pytest.approx(3.1623)
    assert frame["fold0_std"][0] == pytest.approx(3.1623)
    # constant episodes: every bootstrap replicate gives 44 exactly, so does the pooled interval
    assert cell.intervals["miou"] == pytest.approx((44.0, 44.0), abs=1e-9)


def test_the_pooled_interval_is_the_seed_means_and_one_seed_gives_the_recorded_interval():
    runs = []
    for seed in range(5):
        results = [fss_fold(fold, episode_scores(fold, 0.5, episodes=200, seed=100 * seed), f"p{seed}-{fold}".ljust(64, "0"))
                   for fold in (0, 1)]
        runs.append(with_changes(make_record(f"p{seed}", "protonet", 0.5, seed=seed), results=results,
                                 metrics=FssTask().summarize(results)))
    single = [fold_statistics(result) for result in runs[0].results]
    assert seeds_bootstrap_interval([single]) == bootstrap_interval(single) == runs[0].primary.ci95
    [table] = build_tables(runs)
    low, high = table.cells[("protonet", "toy-net", "model:abababab")][1].intervals["miou"]
    assert (low, high) == seeds_bootstrap_interval([[fold_statistics(r) for r in run.results] for run in runs])
    mean = np.mean([run.mean_miou for run in runs])
    assert low < mean < high
    # five independent seeds: about 1/sqrt(5) of one seed's width
    single_width = np.mean([run.primary.ci95[1] - run.primary.ci95[0] for run in runs])
    assert 0.35 < (high - low) / single_width < 0.55


def test_seeds_share_columns_but_one_seed_on_other_manifests_gets_its_own_table():
    runs = [exact_run(0, 0.4), exact_run(1, 0.5)]
    made = exact_run(0, 0.6, run_id="other")
    other_lists = with_changes(made, results=[r.model_copy(update={"manifest_sha256": "x" * 64}) for r in made.results])
    first, second = build_tables([*runs, other_lists])
    assert first.title.endswith("seeds 0-1") and second.title.endswith("seed 0 [other manifests #2]")


def test_which_run_fills_a_cell_is_stated_with_the_others():
    full_old = exact_run(0, 0.40, "full-old", finished="2026-01-01T00:00:00+00:00")
    full_new = exact_run(0, 0.42, "full-new", finished="2026-01-02T00:00:00+00:00")
    smoke = exact_run(0, 0.90, "smoke", folds=(0,), finished="2026-01-03T00:00:00+00:00")  # newest, one fold
    partial_seed = exact_run(1, 0.90, "partial", folds=(0,), finished="2026-01-04T00:00:00+00:00")
    [table] = build_tables([full_old, full_new, smoke, partial_seed])
    cell = table.cells[("protonet", "toy-net", "model:abababab")][1]
    assert [run.run_id for run in cell.runs] == ["full-new"] and cell.values["miou"].mean == pytest.approx(42.0)
    assert table.title.endswith("folds 0-1, seed 0")
    note = ("- protonet / toy-net / model:abababab, 1-shot: run full-new; not shown: full-old (seed 0, older), "
            "smoke (seed 0, fewer folds), partial (seed 1 covers fold 0 only, the cell folds 0-1)")
    assert note in to_markdown([table])


def test_rows_with_different_seeds_get_a_seeds_column():
    records = [exact_run(0, 0.4), exact_run(1, 0.4), exact_run(0, 0.9, "oracle-0", method="oracle")]
    [table] = build_tables(records)
    assert table.title.endswith("folds 0-1")
    markdown = to_markdown([table])
    assert "| method | backbone | weights | seeds | 1-shot fold0 |" in markdown
    assert "| oracle | toy-net | model:abababab | 0 | 90.0 |" in markdown
    assert "| protonet | toy-net | model:abababab | 0-1 | 40.0 ± 0.0 |" in markdown


@pytest.mark.slow
def test_eval_seeds_runs_one_resumable_record_per_seed_and_the_leaderboard_aggregates_them(cli, tmp_path):
    out = str(tmp_path / "results")
    args = ("eval", "-m", "oracle", "-p", "demo-1shot", "--fold", "0", "--episodes", "3", "--out", out)
    result = cli(*args, "--seeds", "3", "--seed", "4", "--json")
    assert result.code == 0, result.stderr
    decoder, text, records = json.JSONDecoder(), result.stdout, []
    while text.strip():  # a stream of records, one per seed
        record, end = decoder.raw_decode(text.lstrip())
        records.append(record)
        text = text.lstrip()[end:]
    assert [record["seed"] for record in records] == [4, 5, 6]
    assert len({record["results"][0]["manifest_sha256"] for record in records}) == 3
    again = cli(*args, "--seeds", "3", "--seed", "4", "--json")  # each seed resumes its own journal
    assert again.code == 0 and again.stdout.count('"resumed_episodes": 3') == 3
    board = cli("leaderboard", "--results", out)
    assert "fold 0 only, seeds 4-6, first 3 episodes/fold" in board.stdout
    assert cli(*args, "--seeds", "0").code == 2
