"""A run record as a rich table for the terminal."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from fssbench.reports.leaderboard import method_label


def _fmt(value: float | None, digits: int = 1) -> str:
    return "--" if value is None else f"{value:.{digits}f}"


def _interval(bounds: list[float] | None) -> str:
    return "--" if not bounds else f"[{bounds[0]:.1f}, {bounds[1]:.1f}]"


def run_summary(record: dict[str, Any]) -> Table:
    backbone = f" ({record['backbone']})" if record["backbone"] else ""
    title = f"{method_label(record)}{backbone} on {record['protocol']} ({record['evaluation_resolution']}, seed {record['seed']})"
    if record["timing_only"]:
        title += "  [timing only: random-init weights]"
    table = Table(title=title)
    if record["task"] == "gfss":
        _gfss_rows(table, record)
    else:
        _fss_rows(table, record)
    timing = record["timing"]
    table.caption = (f"compute median {_fmt(timing['compute_ms_median'])} ms/episode, "
                     f"{_fmt(timing['episodes_per_s'], 2)} episodes/s, peak memory "
                     f"{_fmt(timing['peak_memory_mb'], 0)} MB ({timing['memory']['kind']}), "
                     f"{timing['warmup_episodes']} warm-up episodes excluded; set-up {_fmt(record.get('setup_s'))} s")
    return table


def _fss_rows(table: Table, record: dict[str, Any]) -> None:
    for column in ("fold", "mIoU", "95% CI", "FB-IoU", "episodes", "manifest"):
        table.add_column(column, justify="right")
    if record["timing_only"]:  # scores of random weights mean nothing: never show them
        for result in record["results"]:
            table.add_row(str(result["fold"]), "--", "--", "--", str(result["episodes"]), result["manifest_sha256"][:12])
        return
    for result in record["results"]:
        table.add_row(str(result["fold"]), _fmt(result["miou"]), _interval(result.get("miou_ci95")),
                      _fmt(result["fbiou"]), str(result["episodes"]), result["manifest_sha256"][:12])
    table.add_row("mean", _fmt(record["mean_miou"]), _interval(record.get("mean_miou_ci95")),
                  _fmt(record["mean_fbiou"]), "", "", style="bold")


def _gfss_rows(table: Table, record: dict[str, Any]) -> None:
    """DIaM's figures: base, novel, their mean and harmonic mean, each averaged over the runs."""
    for column in ("fold", "base", "novel", "mean", "harmonic", "runs", "queries", "manifest"):
        table.add_column(column, justify="right")
    for r in record["results"]:
        table.add_row(str(r["fold"]), _fmt(r["base_miou"]), _fmt(r["novel_miou"]), _fmt(r["mean_miou"]),
                      _fmt(r["harmonic_miou"]), str(len(r["runs"])), str(r["episodes"]), r["manifest_sha256"][:12])
    if record.get("gfss"):
        scores = record["gfss"]
        table.add_row("mean", _fmt(scores["base"]), _fmt(scores["novel"]), _fmt(scores["mean"]),
                      _fmt(scores["harmonic"]), "", "", "", style="bold")
