"""Reading results across runs: `leaderboard` and the regression gate `compare`."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from fssbench.cli.app import RESULTS_OPTION, app, open_store, stderr, stdout


class BoardFormat(str, Enum):
    md = "md"
    csv = "csv"


@app.command("leaderboard")
def leaderboard_command(
    protocol: list[str] = typer.Option([], "--protocol", help="Only these protocols; repeatable."),
    format: BoardFormat = typer.Option(BoardFormat.md, "--format", help="md or csv."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write to this file instead of stdout."),
    results: Path = RESULTS_OPTION,
) -> None:
    """Paper-style leaderboard of the stored complete runs."""
    from fssbench.reports.leaderboard import build_tables, to_csv, to_markdown

    with open_store(results) as store:
        tables = build_tables(store.records(), protocol or None)
    text = to_markdown(tables) if format is BoardFormat.md else to_csv(tables)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        stderr.print(f"leaderboard written to {out}")


@app.command("compare")
def compare_command(
    baseline: str = typer.Argument(..., help="Baseline: a run record file or a stored run id."),
    current: str = typer.Argument(..., help="Current: a run record file or a stored run id."),
    max_drop: float = typer.Option(0.5, "--max-drop", min=0, help="Tolerated drop of the headline metric (points)."),
    max_slowdown: Optional[float] = typer.Option(None, "--max-slowdown", min=0,
                                                 help="Tolerated rise of median compute time, in percent."),
    paired: bool = typer.Option(False, "--paired", help="Paired bootstrap and permutation test over episodes."),
    json_output: bool = typer.Option(False, "--json", help="Print the verdict as JSON."),
    results: Path = RESULTS_OPTION,
) -> None:
    """Regression gate: exit 0 pass, 1 regression, 2 usage error, 3 incomparable."""
    from fssbench.harness.errors import FssbenchError
    from fssbench.reports.compare import compare_records, describe, incomparable

    current_record = load_run(current, results)
    try:
        baseline_record = load_run(baseline, results)
    except FssbenchError as exc:
        verdict = incomparable(f"missing baseline: {exc}", current=current_record.run_id)
    else:
        verdict = compare_records(baseline_record, current_record, max_drop, max_slowdown, paired)
    if json_output:
        sys.stdout.write(json.dumps(verdict.as_dict(), indent=2) + "\n")
    else:
        stdout.print(describe(verdict), highlight=False)
    raise typer.Exit(verdict.exit_code)


def load_run(reference: str, results: Path):
    """A run record from a file (validated) or from the store by id or unique prefix."""
    from fssbench.harness.record import read_record

    path = Path(reference)
    if path.suffix == ".json" or path.is_file():
        return read_record(path)
    with open_store(results) as store:
        return store.record(reference)
