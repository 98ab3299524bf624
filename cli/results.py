"""Reading results across runs: `leaderboard` and the regression gate `compare`."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from rich.markup import escape

from fssbench.cli.app import RESULTS_OPTION, app, open_store, stderr, stdout

# the names of reports/leaderboard.py COLUMNS and the defaults of reports/compare.py MAX_SPREAD and MAX_LOAD,
# spelt out so that `--help` needs no heavy import (tests/test_reports.py checks that they agree)
COLUMNS_HELP = ("method, backbone, weights, seeds, folds (a column per fold), miou (GFSS: the mean of base and "
                "novel), fbiou, base, novel, harmonic, ci (95% intervals), time (s/episode), memory (peak MB), cost (GPU- or CPU-seconds), "
                "runs (run ids)")
DEFAULT_MAX_SPREAD, DEFAULT_MAX_LOAD = 0.25, 0.5


class BoardFormat(str, Enum):
    md = "md"
    csv = "csv"
    latex = "latex"


@app.command("leaderboard")
def leaderboard_command(
    protocol: list[str] = typer.Option([], "--protocol", help="Only these protocols; repeatable."),
    format: BoardFormat = typer.Option(BoardFormat.md, "--format",
                                       help="md, csv or latex (booktabs: one table per setting)."),
    columns: Optional[str] = typer.Option(None, "--columns", help=f"Comma-separated columns to show, in the "
                                          f"leaderboard's order (default: all but runs; csv adds runs): {COLUMNS_HELP}."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write to this file instead of stdout."),
    results: Path = RESULTS_OPTION,
) -> None:
    """Paper-style leaderboard of the stored complete runs (seeds of one setting aggregated: mean ± std)."""
    from fssbench.reports.leaderboard import build_tables, parse_columns, to_csv, to_latex, to_markdown

    with open_store(results) as store:
        tables = build_tables(store.records(), protocol or None)
    selected = parse_columns(columns, tables)
    render = {BoardFormat.md: to_markdown, BoardFormat.csv: to_csv, BoardFormat.latex: to_latex}[format]
    text = render(tables, selected)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text if text.endswith("\n") else text + "\n")
        stderr.print(f"leaderboard written to {escape(str(out.resolve()))}", highlight=False)


@app.command("compare")
def compare_command(
    baseline: str = typer.Argument(..., help="Baseline: a run record file or a stored run id."),
    current: str = typer.Argument(..., help="Current: a run record file or a stored run id."),
    max_drop: float = typer.Option(0.5, "--max-drop", min=0, help="Tolerated drop of the headline metric (points)."),
    max_slowdown: Optional[float] = typer.Option(
        None, "--max-slowdown", min=0, help="Tolerated rise of median compute time, in percent: a regression when the "
        "95% bootstrap interval of the ratio of the runs' medians lies above it (per-episode times from --results)."),
    max_spread: float = typer.Option(DEFAULT_MAX_SPREAD, "--max-spread", min=0,
                                     help="No timing verdict when a run's per-episode compute times have a larger "
                                          "IQR / median."),
    max_load: float = typer.Option(DEFAULT_MAX_LOAD, "--max-load", min=0,
                                   help="No timing verdict when a run's record shows a larger load average per CPU "
                                        "from other work at its start or end."),
    paired: bool = typer.Option(False, "--paired", help="Paired bootstrap and permutation test over episodes."),
    json_output: bool = typer.Option(False, "--json", help="Print the verdict as JSON."),
    results: Path = RESULTS_OPTION,
) -> None:
    """Regression gate: exit 0 pass, 1 regression, 2 usage error, 3 incomparable (or no timing verdict possible)."""
    from fssbench.harness.errors import FssbenchError
    from fssbench.reports.compare import compare_records, describe, incomparable

    current_record = load_run(current, results)
    try:
        baseline_record = load_run(baseline, results)
    except FssbenchError as exc:
        verdict = incomparable(f"missing baseline: {exc}", current=current_record.run_id)
    else:
        timings = (None if max_slowdown is None else
                   {record.run_id: episode_compute_ms(record, results) for record in (baseline_record, current_record)})
        verdict = compare_records(baseline_record, current_record, max_drop, max_slowdown, paired, timings,
                                  max_spread, max_load)
    if json_output:
        sys.stdout.write(json.dumps(verdict.as_dict(), indent=2) + "\n")
    else:
        stdout.print(describe(verdict), markup=False, highlight=False)
    raise typer.Exit(verdict.exit_code)


def episode_compute_ms(record, results: Path) -> list[float] | str:
    """The compute times (ms) of the run's timed episodes, from the results store, or why there are none."""
    from fssbench.harness.errors import FssbenchError
    from fssbench.harness.store import STORE_NAME

    where = results / STORE_NAME
    if not where.is_file():
        return (f"run {record.run_id}'s per-episode compute times are kept in the results store, and there is none "
                f"at {where.resolve()} (a record file holds only their summary; give --results)")
    try:
        with open_store(results) as store:
            stored = store.record(record.run_id)
            if stored.sha256 != record.sha256:
                return f"the results store {where.resolve()} holds another version of run {record.run_id}"
            frame = store.episode_frame(record.run_id)
    except FssbenchError as exc:
        return f"no per-episode compute times of run {record.run_id}: {exc}"
    return frame.loc[~frame["warmup"], "compute_ms"].tolist()


def load_run(reference: str, results: Path):
    """A run record from a file (validated) or from the store by id or unique prefix."""
    from fssbench.harness.record import read_record

    path = Path(reference)
    if path.suffix == ".json" or path.is_file():
        return read_record(path)
    with open_store(results) as store:
        return store.record(reference)
