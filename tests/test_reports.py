"""The results store, leaderboards (golden files), run summaries, the regression gate's exit codes and
paired comparisons (FSS episodes, GFSS queries), all on typed run records."""

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from fssbench.harness.errors import UsageError
from fssbench.harness.fss import FssTask, score_payload
from fssbench.harness.gfss_metrics import gfss_scores
from fssbench.harness.journal import JournaledUnit
from fssbench.harness.metrics import EpisodeScore
from fssbench.harness.statistics import GfssFold, PairedComparison, gfss_paired_comparison
from fssbench.harness.store import ResultsStore
from fssbench.reports.comparable import incomparability
from fssbench.reports.compare import (INCOMPARABLE, PASS, REGRESSION, NotPairable, compare_records,
                                      gfss_label_groups, paired_difference)
from fssbench.reports.console import run_summary
from fssbench.reports.leaderboard import build_tables, to_csv, to_markdown
from fssbench.reports.upgrade import check_upgrade_runs
from records_for_tests import (GFSS_BASE, GFSS_LABELS, fss_fold, gfss_fold, make_gfss_record, make_record,
                               with_changes)

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


def shifted(record, run_id, shift, spread=0.0, seed=0):
    """`record` on the same episodes, each foreground intersection moved by about `shift` pixels."""
    rng = np.random.default_rng(seed)
    results = [fss_fold(r.fold, [[i, c, ib, int(f + rng.normal(shift, spread)), ub, uf]
                                 for i, c, ib, f, ub, uf in r.episode_scores], r.manifest_sha256)
               for r in record.results]
    return with_changes(record, run_id=run_id, results=results, metrics=FssTask().summarize(results))


# --- leaderboards ---


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
    assert [key[0] for key in tables[1].cells] == ["protonet"]


def test_tables_are_keyed_by_the_settings_values_not_by_title_prefixes():
    # the seed is no part of the setting (seeds aggregate, tests/test_seeds.py); the episode cap is
    seed10 = make_record("s10", "protonet", 0.5, seed=10, manifest_tag="s10", finished="2026-01-01T00:00:00+00:00")
    seed1 = make_record("s1", "protonet", 0.5, seed=1, manifest_tag="s1", finished="2026-01-02T00:00:00+00:00")
    capped = with_changes(make_record("c", "protonet", 0.5, seed=1, manifest_tag="c"), episodes_cap=10)
    titles = [table.title for table in build_tables([seed10, seed1, capped])]
    assert titles == ["toy (fss), 400x400 (squash), mask supports, folds 0-1, seeds 1, 10",
                      "toy (fss), 400x400 (squash), mask supports, folds 0-1, seed 1, first 10 episodes/fold"]


def test_a_changed_protocol_on_the_same_manifests_gets_a_table_labelled_as_such():
    base = make_record("a", "protonet", 0.5)
    revised = with_changes(make_record("b", "oracle", 1.0), protocol_sha256="f" * 64, protocol_version=2)
    tables = build_tables([base, revised])
    assert [table.title.rpartition("seed 0")[2] for table in tables] == ["", " [other protocol version #2]"]


def test_an_ablation_gets_a_row_of_its_own_named_by_its_changed_options():
    records = [make_record("g1", "gsm+protonet", 0.5), with_changes(make_record("g2", "gsm+protonet", 0.4),
                                                                    variant="qsm=off")]
    [table] = build_tables(records)
    assert sorted(key[0] for key in table.cells) == ["gsm+protonet", "gsm+protonet [qsm=off]"]


def test_gfss_leaderboard_columns_come_from_the_declared_metrics():
    record = make_gfss_record("g", "diam", 0.8)
    markdown = to_markdown(build_tables([record]))
    assert "| 1-shot fold0 | 1-shot fold1 | 1-shot base | novel | mean | harmonic | s/query | peak MB | cost s |" in markdown
    assert "95% CI" not in markdown.split("\n\n")[0]
    frame = pd.read_csv(io.StringIO(to_csv(build_tables([record]))))
    assert list(frame.columns[8:-4]) == ["fold0", "fold1", "base_miou", "novel_miou", "mean_miou", "harmonic_miou"]
    assert frame["mean_miou"][0] == pytest.approx(record.primary.value, abs=1e-4)


# --- run summaries ---


def rendered(table) -> str:
    console = Console(width=250, file=io.StringIO())
    console.print(table)
    return console.file.getvalue()


def header_of(text: str) -> list[str]:
    return next(line for line in text.splitlines() if "fold" in line).replace("┃", " ").split()


def test_run_summary_shows_the_declared_metrics_of_each_task():
    fss = rendered(run_summary(make_record("f", "protonet", 0.5)))
    assert header_of(fss) == ["fold", "mIoU", "95%", "CI", "FB-IoU", "episodes", "manifest"]
    assert "mean" in fss and "compute median 100.0 ms/episode" in fss
    gfss = rendered(run_summary(make_gfss_record("g", "diam", 0.8)))
    assert header_of(gfss) == ["fold", "base", "novel", "mean", "harmonic", "runs", "queries", "manifest"]
    timing_only = run_summary(make_record("t", "protonet", 0.3, timing_only=True))
    assert "timing only" in timing_only.title and [row for row in rendered(timing_only).splitlines() if "mean" in row] == []
    assert all(cell == "--" for column in timing_only.columns[1:4] for cell in column._cells)


# --- the store ---


def test_store_round_trip_and_episode_export(tmp_path):
    record = make_record("20260101T000000Z-protonet-toy-abc123", "protonet", 0.4)
    units = [JournaledUnit(r.fold, str(row[0]), score_payload(EpisodeScore(row[0], row[1], row[2:4], row[4:6])),
                           (1.0, 2.0, 0.5), row[0] < 2)
             for r in record.results for row in r.episode_scores]
    with ResultsStore(tmp_path / "store.sqlite") as store:
        store.save(record, units)
        store.save(record, units)  # saving again replaces, never duplicates
    with ResultsStore(tmp_path / "store.sqlite") as store:
        assert store.record("20260101") == record
        [stored] = store.records(method="protonet")
        assert stored.mean_miou == record.mean_miou and store.records(method="oracle") == []
        frame = store.episode_frame(record.run_id)
    assert len(frame) == len(units) and frame["inter_fg"].dtype == "int64" and frame["warmup"].sum() == 4


# --- the regression gate ---


@pytest.fixture
def record_files(tmp_path):
    def write(record):
        path = tmp_path / f"{record.run_id}.json"
        path.write_text(record.to_json())
        return str(path)
    return write


def test_compare_exit_codes(cli, record_files):
    base = make_record("base", "protonet", 0.5)
    assert cli("compare", record_files(base), record_files(base)).code == 0
    worse = make_record("worse", "protonet", 0.3)
    result = cli("compare", record_files(base), record_files(worse), "--json")
    verdict = json.loads(result.stdout)
    assert result.code == 1 and verdict["verdict"] == "regression" and verdict["difference"] < -10
    assert verdict["metric"] == "mIoU" and verdict["baseline_value"] == base.mean_miou
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
    slightly = shifted(base, "slightly", -6, spread=15, seed=2)
    assert -0.6 < slightly.mean_miou - base.mean_miou < -0.55
    # unpaired: a 0.58 drop exceeds the 0.5 tolerance; paired: its interval [-0.90, -0.28] is not all below -0.5
    assert cli("compare", record_files(base), record_files(slightly)).code == 1
    paired = cli("compare", record_files(base), record_files(slightly), "--paired", "--json")
    assert paired.code == 0 and json.loads(paired.stdout)["paired"]["ci95"][1] < 0
    worse = make_record("worse", "protonet", 0.3)
    assert cli("compare", record_files(base), record_files(worse), "--paired").code == 1
    timing_only = make_record("t", "protonet", 0.0, timing_only=True)
    assert cli("compare", record_files(base), record_files(timing_only)).code == 3


# --- timing verdicts: per-episode distributions, refused when they cannot tell ---

STEADY = np.random.default_rng(0).normal(100, 4, 80)  # ms per timed episode: IQR / median about 0.05


def timing_verdict(baseline_ms, current_ms, max_slowdown=20.0, current_changes=None, **limits):
    base = make_record("base", "protonet", 0.5)
    current = with_changes(base, run_id="current", **(current_changes or {}))
    return compare_records(base, current, 0.5, max_slowdown, False, {"base": baseline_ms, "current": current_ms},
                           **limits)


def test_a_clear_slowdown_fails_and_equal_timings_pass():
    slower = np.random.default_rng(1).normal(130, 5, 80)
    verdict = timing_verdict(STEADY, slower)
    assert verdict.exit_code == REGRESSION and 25 < verdict.slowdown_pct < 35
    low, high = verdict.slowdown_ci95
    assert 20 < low < verdict.slowdown_pct < high and "lies above the tolerated 20%" in verdict.reasons[0]
    assert verdict.baseline_compute_ms == pytest.approx(np.median(STEADY))
    assert timing_verdict(STEADY, slower, max_slowdown=40).exit_code == PASS  # within tolerance
    same = timing_verdict(STEADY, STEADY.copy())
    assert same.exit_code == PASS and same.slowdown_pct == 0 and same.slowdown_ci95[0] < 0 < same.slowdown_ci95[1]
    assert timing_verdict(STEADY, slower) == verdict  # the bootstrap is seeded


def test_median_ratio_interval_on_a_known_answer():
    from fssbench.harness.statistics import median_ratio_interval

    assert median_ratio_interval([100.0] * 20, [150.0] * 20) == (1.5, (1.5, 1.5))
    ratio, (low, high) = median_ratio_interval([1.0, 2.0, 3.0] * 10, [2.0, 4.0, 6.0] * 10)
    assert ratio == 2.0 and low <= 2.0 <= high


def test_no_timing_verdict_on_noisy_timings_a_busy_machine_or_missing_ones():
    noisy = np.random.default_rng(2).lognormal(np.log(130), 0.6, 80)  # IQR / median about 0.8
    verdict = timing_verdict(STEADY, noisy)
    assert verdict.exit_code == INCOMPARABLE and "run current's compute times are too spread out" in verdict.reasons[0]
    assert timing_verdict(STEADY, noisy, max_spread=2.0).exit_code in (PASS, REGRESSION)

    def loaded(start=None, end=None, cpus=2, threads=2):
        def load(averages):
            return None if averages is None else dict(zip(("one_minute", "five_minutes", "fifteen_minutes"), averages))

        environment = {**make_record("x", "p", 0.5).environment.model_dump(), "cpu_count": cpus,
                       "torch_threads": threads, "load_at_start": load(start), "load_at_end": load(end)}
        return {"environment": environment}

    busy = timing_verdict(STEADY, STEADY, current_changes=loaded(start=[3.0, 2.0, 1.0]))
    assert busy.exit_code == INCOMPARABLE and "the machine was busy during run current" in busy.reasons[0]
    assert "load average 3.00 on 2 CPUs at its start" in busy.reasons[0]
    # at the end the run's own two threads are part of the load: 2.4 - 2 on 2 CPUs is 0.2 per CPU
    assert timing_verdict(STEADY, STEADY, current_changes=loaded(start=[0.2] * 3, end=[2.4] * 3)).exit_code == PASS
    late = timing_verdict(STEADY, STEADY, current_changes=loaded(end=[4.0, 3.0, 1.0]))
    assert late.exit_code == INCOMPARABLE and "2 of it the run's own threads" in late.reasons[0]
    assert timing_verdict(STEADY, STEADY, current_changes=loaded(end=[4.0] * 3), max_load=1.5).exit_code == PASS

    few = timing_verdict(STEADY, STEADY[:5])
    assert few.exit_code == INCOMPARABLE and "timed 5 episodes, fewer than the 10" in few.reasons[0]
    base = make_record("base", "protonet", 0.5)
    missing = compare_records(base, base, 0.5, 20.0, False)
    assert missing.exit_code == INCOMPARABLE and "per-episode compute times are not at hand" in missing.reasons[0]
    elsewhere = timing_verdict(STEADY, STEADY, current_changes={"environment": {
        **base.environment.model_dump(), "device_name": "Other GPU"}})
    assert elsewhere.exit_code == INCOMPARABLE and "different devices" in elsewhere.reasons[0]


def store_with_timings(folder: Path, timings: list) -> None:
    """A results store holding each (record, per-episode compute times in ms) of `timings`."""
    with ResultsStore(folder / "fssbench.sqlite") as store:
        for record, compute_ms in timings:
            units = [JournaledUnit(0, str(i), {}, (1.0, float(ms), 0.5), i < 2)
                     for i, ms in enumerate([1000.0, 1000.0, *compute_ms])]  # two slow warm-up episodes left out
            store.save(record, units)


def test_compare_reads_per_episode_timings_from_the_store(cli, tmp_path, record_files):
    base = make_record("base", "protonet", 0.5)
    slow, same = with_changes(base, run_id="slow"), with_changes(base, run_id="same")
    slower = np.random.default_rng(1).normal(130, 5, 60)
    store_with_timings(tmp_path, [(base, STEADY), (slow, slower), (same, STEADY[::-1])])
    results = ("--results", str(tmp_path))
    failed = cli("compare", "base", "slow", "--max-slowdown", "20", *results, "--json")
    verdict = json.loads(failed.stdout)
    assert failed.code == 1 and verdict["baseline_compute_ms"] == pytest.approx(np.median(STEADY))
    assert cli("compare", "base", "same", "--max-slowdown", "20", *results).code == 0
    assert cli("compare", record_files(base), record_files(slow), "--max-slowdown", "20", *results).code == 1
    alone = cli("compare", record_files(base), record_files(slow), "--max-slowdown", "20",
                "--results", str(tmp_path / "elsewhere"))
    assert alone.code == 3 and "no timing verdict" in alone.stdout and "give --results" in " ".join(alone.stdout.split())
    edited = with_changes(slow, run_id="slow", command=["edited"])  # the store holds another version of the run
    assert "holds another version of run slow" in cli("compare", record_files(base), record_files(edited),
                                                      "--max-slowdown", "20", *results).stdout


def test_compare_help_states_the_defaults_of_the_timing_gate(cli):
    from fssbench.cli.results import DEFAULT_MAX_LOAD, DEFAULT_MAX_SPREAD
    from fssbench.reports.compare import MAX_LOAD, MAX_SPREAD

    assert (DEFAULT_MAX_SPREAD, DEFAULT_MAX_LOAD) == (MAX_SPREAD, MAX_LOAD)


def test_compare_paired_on_generalized_fss_records(cli, record_files):
    # `compare --paired` on two GFSS records used to raise KeyError (per_class_iou) and exit 1, a "regression"
    base, worse = make_gfss_record("base", "diam", 0.8), make_gfss_record("worse", "diam", 0.7)
    same = cli("compare", record_files(base), record_files(base), "--paired", "--json")
    verdict = json.loads(same.stdout)
    assert same.code == 0 and verdict["paired"] == {"difference": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0}
    result = cli("compare", record_files(base), record_files(worse), "--paired", "--json")
    verdict = json.loads(result.stdout)
    assert result.code == 1 and verdict["metric"] == "mean"
    assert verdict["paired"]["difference"] == pytest.approx(worse.primary.value - base.primary.value, abs=1e-9)
    low, high = verdict["paired"]["ci95"]
    assert low < verdict["paired"]["difference"] < high < -0.5 and verdict["paired"]["p_value"] < 0.01
    close = make_gfss_record("close", "diam", 0.79)
    assert cli("compare", record_files(base), record_files(close), "--paired", "--max-drop", "5").code == 0
    converted = make_gfss_record("converted", "diam", 0.8, per_query=False)  # as a schema-1 record reads
    result = cli("compare", record_files(base), record_files(converted), "--paired")
    assert result.code == 3 and "per-query confusions" in result.stdout
    assert cli("compare", record_files(base), record_files(converted)).code == 0  # unpaired needs no queries


def naive_gfss_paired(baseline: GfssFold, current: GfssFold, replicates: int, seed: int):
    """The paired test on dense confusion matrices with DIaM's own scoring, drawing as the real one does."""
    from fssbench.harness.statistics import CHUNK, _resample_weights

    def dense(cells):
        matrix = np.zeros((baseline.classes, baseline.classes))
        for truth, prediction, pixels in cells:
            matrix[truth, prediction] += pixels
        return matrix

    def score(matrix):
        scores = gfss_scores(matrix, list(baseline.base), list(baseline.novel))
        return (scores["base"] + scores["novel"]) / 2

    rng = np.random.default_rng(seed)
    runs = sorted({run for run, _, _ in baseline.queries})
    observed, boot, perm = 0.0, np.zeros(replicates), np.zeros(replicates)
    for run in runs:
        base = [dense(cells) for r, _, cells in sorted(baseline.queries) if r == run]
        cur = [dense(cells) for r, _, cells in sorted(current.queries) if r == run]
        observed += (score(sum(cur)) - score(sum(base))) / len(runs)
        for start in range(0, replicates, CHUNK):
            count = min(CHUNK, replicates - start)
            weights = _resample_weights(rng, count, len(base))
            swaps = rng.random((count, len(base))) < 0.5
            for j in range(count):
                boot[start + j] += (score(sum(w * m for w, m in zip(weights[j], cur)))
                                    - score(sum(w * m for w, m in zip(weights[j], base)))) / len(runs)
                perm[start + j] += (score(sum(b if s else c for s, b, c in zip(swaps[j], base, cur)))
                                    - score(sum(c if s else b for s, b, c in zip(swaps[j], base, cur)))) / len(runs)
    p_value = (1 + np.sum(np.abs(perm) >= abs(observed) - 1e-9)) / (replicates + 1)
    return observed, tuple(np.percentile(boot, [2.5, 97.5])), p_value


def test_gfss_paired_statistics_equal_diams_scoring_on_dense_confusions():
    groups = (tuple(range(1, GFSS_BASE + 1)), tuple(range(GFSS_BASE + 1, len(GFSS_LABELS))))
    base, cur = (GfssFold(len(GFSS_LABELS), *groups, gfss_fold(0, quality, runs=2, queries=8).query_confusions)
                 for quality in (0.8, 0.6))
    result = gfss_paired_comparison([base], [cur], replicates=300, seed=5)  # two chunks of draws
    observed, interval, p_value = naive_gfss_paired(base, cur, 300, 5)
    assert result.difference == pytest.approx(observed, abs=1e-9)
    assert result.interval == pytest.approx(interval, abs=1e-9) and result.p_value == pytest.approx(p_value)
    assert gfss_paired_comparison([base], [cur], replicates=300, seed=5) == result  # seeded
    shuffled = GfssFold(base.classes, base.base, base.novel, base.queries[::-1])  # pairing is by (run, index)
    assert gfss_paired_comparison([shuffled], [cur], replicates=300, seed=5) == result
    fewer = GfssFold(cur.classes, cur.base, cur.novel, cur.queries[:-1])
    with pytest.raises(ValueError, match="same queries"):
        gfss_paired_comparison([base], [fewer])


def test_gfss_label_groups_come_from_the_record_and_must_agree():
    fold = gfss_fold(0, 0.7)
    assert gfss_label_groups(fold, gfss_fold(0, 1.0)) == ((1, 2, 3), (4, 5))
    with pytest.raises(NotPairable, match="different label spaces"):
        gfss_label_groups(fold, fold.model_copy(update={"base_classes": 2}))
    with pytest.raises(NotPairable, match="does not say which classes are base"):
        gfss_label_groups(fold.model_copy(update={"base_classes": None}))
    oracle = make_gfss_record("oracle", "oracle", 1.0)  # with itself: a zero difference
    assert paired_difference(oracle, oracle) == PairedComparison(0.0, (0.0, 0.0), 1.0)


@pytest.mark.slow
def test_gfss_paired_comparison_at_coco_scale_stays_sparse():
    # 5 runs x 10000 queries x 81 classes: dense [queries, classes^2] counts would take 2.6 GB per run
    import time
    import tracemalloc

    rng = np.random.default_rng(0)
    classes, groups = 81, (tuple(range(1, 61)), tuple(range(61, 81)))

    def fold(shift):
        queries = []
        for run in range(5):
            present = rng.integers(0, classes, size=(10000, 4))
            for index, labels in enumerate(present.tolist()):
                queries.append((run, index, [(c, c, 900) for c in labels] +
                                [(c, (c + 1 + shift) % classes, 60) for c in labels]))
        return GfssFold(classes, *groups, queries)

    base, cur = fold(0), fold(1)
    tracemalloc.start()
    started = time.perf_counter()
    result = gfss_paired_comparison([base], [cur])
    elapsed, (_, peak) = time.perf_counter() - started, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.interval[0] <= result.difference <= result.interval[1]
    assert peak < 400 * 2**20 and elapsed < 120


def odd_records():
    """Well-formed records that a comparison cannot use in some way."""
    base = make_record("base", "protonet", 0.5)
    no_metrics = with_changes(base, run_id="no-metrics", metrics=[])
    undefined = with_changes(base, run_id="nan", metrics=[m.model_copy(update={"value": math.nan}) for m in base.metrics])
    no_episodes = with_changes(base, run_id="no-episodes",
                               results=[r.model_copy(update={"episode_scores": []}) for r in base.results])
    no_timing = with_changes(base, run_id="no-timing", timing=None)
    untimed = with_changes(base, run_id="untimed", timing=base.timing.model_copy(
        update={"compute_ms": base.timing.compute_ms.model_copy(update={"median": None})}))
    running = with_changes(base, run_id="running", status="running", results=[])
    empty = with_changes(base, run_id="empty", results=[])
    gfss = make_gfss_record("gfss", "diam", 0.8)
    relabelled = with_changes(gfss, run_id="relabelled", results=[
        r.model_copy(update={"label_names": list(reversed(r.label_names))}) for r in gfss.results])
    return [base, no_metrics, undefined, no_episodes, no_timing, untimed, running, empty, gfss, relabelled,
            make_gfss_record("converted", "diam", 0.7, per_query=False)]


def test_compare_gives_a_verdict_and_never_raises_on_well_formed_records():
    records = odd_records()
    for baseline in records:
        for current in records:
            for paired in (False, True):
                verdict = compare_records(baseline, current, 0.5, 10.0, paired)
                assert verdict.exit_code in (PASS, REGRESSION, INCOMPARABLE)
                assert verdict.exit_code != INCOMPARABLE or verdict.reasons
    base, no_episodes, empty = records[0], records[3], records[7]
    verdict = compare_records(base, no_episodes, 0.5, None, True)
    assert verdict.exit_code == INCOMPARABLE and "per-episode scores" in verdict.reasons[0]
    assert compare_records(empty, empty, 0.5, None, True).reasons == ["no paired comparison: the runs record no folds"]


def test_one_comparability_predicate_for_compare_upgrade_and_leaderboard():
    base = with_changes(make_record("a", "diffup", 0.5), backbone="efficientnet-lite0")
    changes = {"protocol": {"protocol_sha256": "f" * 64}, "evaluation resolution": {"evaluation_resolution": "9x9"},
               "manifests": {"results": make_record("x", "diffup", 0.5, manifest_tag="other").results}}
    for aspect, change in changes.items():
        other = with_changes(base, run_id="b", backbone="efficientnet-lite2", **change)
        problem = incomparability(base, other)
        assert problem is not None and problem.aspect == aspect
        verdict = compare_records(base, other, 0.5, None, False)
        assert verdict.exit_code == INCOMPARABLE and verdict.reasons == [problem.reason]
        with pytest.raises(UsageError, match="not comparable") as refused:
            check_upgrade_runs([base, other])
        assert problem.reason in str(refused.value)
        suffix = {"protocol": " [other protocol version #2]", "manifests": " [other manifests #2]"}.get(aspect, "")
        first, second = build_tables([base, other])
        assert "#" not in first.title and second.title.endswith(suffix) and first.title != second.title
    failed = with_changes(base, run_id="f", status="failed")
    assert incomparability(base, failed).aspect == "status"
    assert compare_records(base, failed, 0.5, None, False).exit_code == INCOMPARABLE


def test_paired_difference_over_one_fold_and_all_folds():
    base, worse = make_record("a", "protonet", 0.5), make_record("b", "protonet", 0.4)
    whole = paired_difference(base, worse)
    assert whole.difference == pytest.approx(worse.mean_miou - base.mean_miou)
    fold0 = paired_difference(base, worse, [0])
    assert fold0.difference == pytest.approx(worse.results[0].metrics["miou"] - base.results[0].metrics["miou"])


# --- end to end ---


@pytest.mark.slow
def test_runs_leaderboard_and_compare_on_real_runs(cli, tmp_path):
    out = str(tmp_path / "results")
    ids = {}
    for method, protocol in (("oracle", "demo-1shot"), ("protonet", "demo-1shot"), ("oracle", "demo-5shot")):
        result = cli("eval", "-m", method, "-p", protocol, "--fold", "0", "--episodes", "4", "--json", "--out", out)
        assert result.code == 0, result.stderr
        ids[method, protocol] = json.loads(result.stdout)["run_id"]
    listed = cli("runs", "list", "--results", out, "--method", "oracle")
    assert listed.code == 0 and ids["oracle", "demo-1shot"] in listed.stdout
    assert ids["protonet", "demo-1shot"] not in listed.stdout
    shown = cli("runs", "show", ids["protonet", "demo-1shot"][:-2], "--results", out, "--json")
    assert json.loads(shown.stdout)["run_id"] == ids["protonet", "demo-1shot"]
    summary = cli("runs", "show", ids["protonet", "demo-1shot"], "--results", out)
    assert summary.code == 0 and "mIoU" in summary.stdout and "FB-IoU" in summary.stdout
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


# --- user text in the terminal: square brackets are not markup ---


def test_option_labels_backbones_and_paths_with_brackets_print_as_written(cli, tmp_path, record_files):
    record = with_changes(make_record("20260101T000000Z-colorproto-demo-1shot-abc123", "colorproto", 0.5,
                                      protocol="demo-1shot"),
                          variant="config=tiny", options={"config": "tiny"}, backbone="vit[b]")
    title = "colorproto [config=tiny] (vit[b]) on demo-1shot (400x400 (squash), seed 0)"
    assert title in " ".join(rendered(run_summary(record)).split())  # the title wraps at the table's width
    out = tmp_path / "[config=tiny]"  # a results folder whose name rich would read as a tag
    with ResultsStore(out / "fssbench.sqlite") as store:
        store.save(record, [])
    shown = cli("runs", "show", record.run_id, "--results", str(out))
    assert shown.code == 0 and title in " ".join(shown.stdout.split())
    listed = cli("runs", "list", "--results", str(out))
    header = next(line for line in listed.stdout.splitlines() if "run id" in line)
    row = next(line for line in listed.stdout.splitlines() if record.run_id in line)
    assert [cell.strip() for cell in header.split("┃")[1:5]] == ["run id", "method", "options", "backbone"]
    assert [cell.strip() for cell in row.split("│")[1:5]] == [record.run_id, "colorproto", "config=tiny", "vit[b]"]
    board = cli("leaderboard", "--results", str(out), "--out", str(out / "board.md"))
    assert board.code == 0 and f"{out}/board.md" in " ".join(board.stderr.split())
    assert "| colorproto [config=tiny] | vit[b] |" in (out / "board.md").read_text()
    other = with_changes(record, run_id="other", protocol="demo[b]", protocol_sha256="f" * 64)
    compared = cli("compare", record_files(record), record_files(other))
    assert compared.code == 3 and "different protocols: demo-1shot" in compared.stdout
    assert "vs demo[b] (ffffffffffff)" in compared.stdout
