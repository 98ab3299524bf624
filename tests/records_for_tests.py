"""Synthetic run records with known contents, for store, leaderboard, comparison and upgrade tests.

They are built through the real models (RunRecord and its fold results) and the tasks' own
summaries, and sealed, so they are what `fssbench eval` would write for such scores."""

import numpy as np

from fssbench.harness.record import (Cost, DatasetInfo, Environment, FssFoldResult, GfssFoldResult, GfssRunResult, Memory,
                                     PhaseStats, RunRecord, Timing)

CLASSES = {0: (0, 1, 2, 3), 1: (4, 5, 6, 7)}
GFSS_LABELS = ["background", "sky", "grass", "brick", "coffee", "coins"]  # background, 3 base, 2 novel classes
GFSS_BASE = 3


def episode_scores(fold: int, quality: float, episodes: int = 40, seed: int = 0) -> list[list[int]]:
    """Rows [index, class, I_bg, I_fg, U_bg, U_fg] whose foreground IoU is about `quality`."""
    rng = np.random.default_rng(seed + fold)
    rows = []
    for index in range(episodes):
        union = int(rng.integers(500, 1500))
        inter = int(np.clip(rng.normal(quality, 0.1), 0, 1) * union)
        rows.append([index, CLASSES[fold][index % 4], 9000, inter, 10000, union])
    return rows


def fss_fold(fold: int, rows: list[list[int]], manifest: str) -> FssFoldResult:
    from fssbench.harness.fss import fold_statistics
    from fssbench.harness.metrics import EpisodeScore, FssMetricState
    from fssbench.harness.statistics import bootstrap_interval

    scores = [EpisodeScore(r[0], r[1], (r[2], r[3]), (r[4], r[5])) for r in rows]
    state = FssMetricState.from_records(CLASSES[fold], scores)
    result = FssFoldResult(fold=fold, manifest_sha256=manifest, episodes=len(rows),
                           metrics={"miou": state.miou(), "fbiou": state.fbiou()},
                           per_class_iou=state.per_class_iou(), class_names={c: f"class{c}" for c in CLASSES[fold]},
                           episode_scores=[tuple(row) for row in rows])
    result.miou_ci95 = bootstrap_interval([fold_statistics(result)])
    return result


def _record(run_id, method, task, results, metrics, shot, folds, seed, compute_ms, device, timing_only, protocol,
            finished) -> RunRecord:
    stats = PhaseStats(median=1.0, iqr=0.1, p95=1.5)
    return RunRecord(
        run_id=run_id, status="complete", method=method, backbone="toy-net",
        weights="random-init" if timing_only else {"model": "ab" * 32}, timing_only=timing_only,
        protocol=protocol, protocol_version=1, protocol_sha256=protocol.ljust(64, "0"), task=task,
        dataset=DatasetInfo(name="toy", root="/data/toy"), shot=shot, seed=seed, folds=list(folds),
        evaluation_resolution="400x400 (squash)", support_annotation="mask", episodes_cap=None,
        results=results, metrics=metrics,
        timing=Timing(warmup_episodes=2, timed_episodes=sum(r.episodes for r in results) - 2, data_ms=stats,
                      compute_ms=PhaseStats(median=compute_ms, iqr=5.0, p95=compute_ms * 1.2), scoring_ms=stats,
                      episodes_per_s=1000 / (compute_ms + 10), s_per_episode=compute_ms / 1000 + 0.01,
                      memory=Memory(kind="cpu-peak-rss", peak_memory_mb=512.0)),
        cost=Cost(cpu_s=sum(r.episodes for r in results) * (compute_ms / 1000 + 0.01)),
        environment=Environment(fssbench="0.0-test", git_sha=None, python="3.11", platform="test", torch="2",
                                numpy="2", pillow="10", cuda=None, cudnn=None, device="cpu", device_name=device,
                                torch_threads=1, cudnn_benchmark=False, tf32_matmul=False, tf32_cudnn=False),
        started_at=finished, finished_at=finished).sealed()


def make_record(run_id: str, method: str, quality: float, shot: int = 1, folds=(0, 1), seed: int = 0,
                compute_ms: float = 100.0, device: str = "Test CPU", timing_only: bool = False,
                manifest_tag: str = "m", protocol: str | None = None,
                finished: str = "2026-11-01T00:00:00+00:00") -> RunRecord:
    """A complete FSS run whose episodes' foreground IoU is about `quality`."""
    from fssbench.harness.fss import FssTask

    results = [fss_fold(fold, episode_scores(fold, quality), f"{manifest_tag}-{shot}-{fold}" + "0" * 50)
               for fold in folds]
    return _record(run_id, method, "fss", results, FssTask().summarize(results), shot, folds, seed, compute_ms,
                   device, timing_only, protocol or f"toy-{shot}shot", finished)


def gfss_cells(truth: np.ndarray, prediction: np.ndarray, classes: int) -> list[tuple[int, int, int]]:
    """Sparse confusion cells (truth, prediction, pixels) of one query."""
    counts = np.bincount(truth * classes + prediction, minlength=classes * classes)
    return [(int(cell // classes), int(cell % classes), int(counts[cell])) for cell in np.flatnonzero(counts)]


def gfss_fold(fold: int, quality: float, runs: int = 5, queries: int = 30, seed: int = 0,
              manifest: str = "g" * 64, per_query: bool = True) -> GfssFoldResult:
    """A GFSS fold over GFSS_LABELS whose pixels are labelled right with probability `quality`.

    The scenes (truth) depend on the fold, run and query only; the errors use the same random draws at
    every quality, so a lower quality makes the same queries worse: runs that pair query by query."""
    from fssbench.harness.gfss_metrics import GfssRunState, average_over_runs

    classes = len(GFSS_LABELS)
    states, cells = {}, []
    for run in range(runs):
        states[run] = GfssRunState(GFSS_BASE, classes - 1 - GFSS_BASE)
        for index in range(queries):
            scene = np.random.default_rng([seed, fold, run, index])
            present = scene.choice(np.arange(1, classes), size=2, replace=False)
            truth = scene.choice(np.concatenate([[0], present]), size=200)
            noise = np.random.default_rng([seed + 1, fold, run, index])
            wrong, guess = noise.random(truth.size) >= quality, noise.integers(0, classes, truth.size)
            query = gfss_cells(truth, np.where(wrong, guess, truth), classes)
            states[run].update(query)
            cells.append((run, index, query))
    run_results = [GfssRunResult(run=run, queries=state.queries, **state.scores()) for run, state in states.items()]
    average = average_over_runs([run.model_dump() for run in run_results])
    return GfssFoldResult(fold=fold, manifest_sha256=manifest, episodes=len(cells),
                          metrics={"miou": average["mean"], "base": average["base"], "novel": average["novel"],
                                   "harmonic": average["harmonic"]},
                          runs=run_results, adapt_ms={run: 1.0 for run in states}, label_names=GFSS_LABELS,
                          base_classes=GFSS_BASE,
                          confusion={run: state.confusion.tolist() for run, state in states.items()},
                          query_confusions=cells if per_query else [])


def make_gfss_record(run_id: str, method: str, quality: float, folds=(0, 1), runs: int = 5, queries: int = 30,
                     seed: int = 0, manifest_tag: str = "g", per_query: bool = True, compute_ms: float = 100.0,
                     finished: str = "2026-11-01T00:00:00+00:00") -> RunRecord:
    """A complete generalized-FSS run (DIaM's metric); `per_query=False` leaves out the per-query
    confusions, as in a record converted from schema 1."""
    from fssbench.harness.gfss import GfssTask

    results = [gfss_fold(fold, quality, runs, queries, seed, f"{manifest_tag}-{fold}".ljust(64, "0"), per_query)
               for fold in folds]
    return _record(run_id, method, "gfss", results, GfssTask().summarize(results), 1, folds, 2023, compute_ms,
                   "Test CPU", False, "toy-gfss-1shot", finished)


def with_changes(record: RunRecord, **changes) -> RunRecord:
    """A copy of `record` with some fields replaced (validated, so nested values may be given as dicts),
    sealed anew as if fssbench had written it so."""
    return RunRecord.model_validate({**record.model_dump(), **changes}).sealed()
