"""The results store: `runs list`, `runs show`, `runs export`, `runs rebuild`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from fssbench.cli.app import RESULTS_OPTION, groups, open_store, stderr, stdout

runs_app = groups["runs"]


@runs_app.command("list")
def runs_list(
    results: Path = RESULTS_OPTION,
    method: Optional[str] = typer.Option(None, help="Only runs of this method."),
    protocol: Optional[str] = typer.Option(None, help="Only runs under this protocol."),
    status: Optional[str] = typer.Option(None, help="complete, failed or interrupted."),
) -> None:
    """List stored runs, oldest first; options: those a run changed from the method's defaults."""
    with open_store(results) as store:
        records = store.records(method=method, protocol=protocol, status=status)
    table = Table("run id", "method", "options", "backbone", "protocol", "seed", "status", "headline", "finished")
    for record in records:
        primary = record.primary
        if record.timing_only:
            headline = "timing only"
        elif primary is None or primary.value is None:
            headline = "--"
        else:
            headline = f"{primary.label} {primary.value:.1f}"
        cells = (record.run_id, record.method, record.variant or "-", record.backbone or "-", record.protocol,
                 str(record.seed), record.status, headline, record.finished_at or "--")
        table.add_row(*map(escape, cells))  # user text: brackets are not markup
    stdout.print(table)


@runs_app.command("show")
def runs_show(run: str = typer.Argument(..., help="Run id (or a unique prefix)."), results: Path = RESULTS_OPTION,
              json_output: bool = typer.Option(False, "--json", help="Print the whole record as JSON.")) -> None:
    """Show one stored run."""
    with open_store(results) as store:
        record = store.record(run)
    if json_output:
        sys.stdout.write(record.to_json())
        return
    from fssbench.reports.console import run_summary

    stdout.print(run_summary(record))


@runs_app.command("export")
def runs_export(run: str = typer.Argument(..., help="Run id (or a unique prefix)."), results: Path = RESULTS_OPTION,
                csv: Path = typer.Option(..., "--csv", help="Where to write the per-episode CSV.")) -> None:
    """Write a run's per-episode statistics (scores and latencies) to CSV."""
    with open_store(results) as store:
        frame = store.episode_frame(run)
    frame.to_csv(csv, index=False)
    stderr.print(f"{len(frame)} episodes written to {escape(str(csv.resolve()))}", highlight=False)


@runs_app.command("rebuild")
def runs_rebuild(results: Path = RESULTS_OPTION) -> None:
    """Rebuild the results store from the run records (and journals), e.g. after it was damaged."""
    from fssbench.harness.store import STORE_NAME, rebuild_store

    rebuilt = rebuild_store(results)
    if rebuilt.previous:
        stderr.print(f"the previous store is now {escape(str(rebuilt.previous))}", highlight=False)
    for problem in rebuilt.skipped:
        stderr.print(f"[yellow]skipped:[/yellow] {escape(problem)}", highlight=False)
    if rebuilt.without_unit_stats:
        stderr.print("without per-episode statistics (their journals are gone): "
                     + ", ".join(rebuilt.without_unit_stats), markup=False, highlight=False)
    stdout.print(f"rebuilt {escape(str((results / STORE_NAME).resolve()))} from {len(rebuilt.runs)} run records",
                 highlight=False)
