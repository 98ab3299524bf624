"""Synthetic run records with known contents, for store, leaderboard and comparison tests."""

import copy

import numpy as np

CLASSES = {0: (0, 1, 2, 3), 1: (4, 5, 6, 7)}


def episode_scores(fold: int, quality: float, episodes: int = 40, seed: int = 0) -> list[list[int]]:
    """Rows [index, class, I_bg, I_fg, U_bg, U_fg] whose foreground IoU is about `quality`."""
    rng = np.random.default_rng(seed + fold)
    rows = []
    for index in range(episodes):
        union = int(rng.integers(500, 1500))
        inter = int(np.clip(rng.normal(quality, 0.1), 0, 1) * union)
        rows.append([index, CLASSES[fold][index % 4], 9000, inter, 10000, union])
    return rows


def make_record(run_id: str, method: str, quality: float, shot: int = 1, folds=(0, 1), seed: int = 0,
                compute_ms: float = 100.0, device: str = "Test CPU", timing_only: bool = False,
                manifest_tag: str = "m", protocol: str | None = None, finished: str = "2026-11-01T00:00:00+00:00"):
    from fssbench.harness.metrics import EpisodeScore, FssMetricState
    from fssbench.harness.statistics import bootstrap_interval

    results = []
    for fold in folds:
        rows = episode_scores(fold, quality)
        state = FssMetricState.from_records(CLASSES[fold], [EpisodeScore(r[0], r[1], (r[2], r[3]), (r[4], r[5])) for r in rows])
        results.append({"fold": fold, "miou": state.miou(), "fbiou": state.fbiou(), "episodes": len(rows),
                        "manifest_sha256": f"{manifest_tag}-{shot}-{fold}" + "0" * 50,
                        "per_class_iou": {str(c): v for c, v in state.per_class_iou().items()},
                        "episode_scores": rows,
                        "miou_ci95": list(bootstrap_interval([(CLASSES[fold], rows)]))})
    protocol = protocol or f"toy-{shot}shot"
    return {
        "run_id": run_id, "status": "complete", "method": method, "backbone": "toy-net",
        "weights": "random-init" if timing_only else {"model": "ab" * 32}, "timing_only": timing_only,
        "protocol": protocol, "protocol_version": 1, "protocol_sha256": protocol.ljust(64, "0"),
        "task": "fss", "dataset": {"name": "toy"}, "shot": shot, "seed": seed, "folds": list(folds),
        "evaluation_resolution": "400x400 (squash)", "support_annotation": "mask", "episodes_cap": None,
        "results": results, "mean_miou": float(np.mean([r["miou"] for r in results])),
        "mean_fbiou": float(np.mean([r["fbiou"] for r in results])),
        "mean_miou_ci95": list(bootstrap_interval([(CLASSES[r["fold"]], r["episode_scores"]) for r in results])),
        "timing": {"compute_ms_median": compute_ms, "s_per_episode": compute_ms / 1000 + 0.01,
                   "peak_memory_mb": 512.0},
        "environment": {"device_name": device}, "started_at": finished, "finished_at": finished,
    }


def with_changes(record, **changes):
    changed = copy.deepcopy(record)
    changed.update(changes)
    return changed
