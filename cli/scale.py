"""Scale-out commands: `fssbench merge` (shards of one run into its complete record) and `fssbench sweep`
(a grid of runs on a local process pool, a Ray cluster or Slurm). docs/scale-out.md tells the whole story."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from fssbench import registry
from fssbench.cli.app import DATA_ROOT_OPTION, RESULTS_OPTION, app, stderr, stdout


def shard_fold_runs(record, data_root: Path | None):
    """Empty fold runs of the shards' run, over its data, checked against the shards' manifests. Merging
    only updates fold runs and reads their results, which needs the dataset's classes, not the method."""
    from dataclasses import replace

    import torch

    from fssbench.cli.evaluate import protocol_manifests
    from fssbench.harness.datasets import data_root_from
    from fssbench.harness.errors import UsageError
    from fssbench.harness.specs import Resolution
    from fssbench.harness.task import FoldContext

    spec = registry.protocols.get(record.protocol)
    if spec.sha256 != record.protocol_sha256:
        raise UsageError(f"protocol {record.protocol!r} changed since the shards ran (spec hash {spec.sha256[:12]}, "
                         f"theirs {record.protocol_sha256[:12]}); merge with the fssbench that ran them")
    if record.resolution_override is not None:
        spec = replace(spec, resolution=Resolution(spec.resolution.mode, record.resolution_override))
    reader = registry.open_dataset(spec, data_root_from(data_root))
    manifests = protocol_manifests(spec, reader, record.folds, record.seed, record.episodes_cap)
    for fold, manifest in manifests.items():
        if manifest.sha256 != record.manifests().get(fold):
            raise UsageError(f"fold {fold}'s manifest over {reader.root} is {manifest.sha256[:12]}, the shards ran "
                             f"{record.manifests().get(fold, 'none')[:12]}: point --data-root at the data they read")
    task = registry.tasks.get(spec.task)()
    context = FoldContext(record.method, None, None, reader, torch.device("cpu"))
    return task, {fold: task.fold_run(context, manifest) for fold, manifest in manifests.items()}


def shard_part(record, results: Path, fold_runs):
    """A finished shard from its record and journal (its units and first preparation times)."""
    from fssbench.harness.errors import UsageError
    from fssbench.harness.journal import Journal
    from fssbench.harness.shards import ShardPart

    path = Path(record.journal) if record.journal else None
    if path is not None and not path.is_file():
        path = results / "journals" / path.name
    if path is None or not path.is_file():
        raise UsageError(f"run {record.run_id} (shard {record.shard}): its journal {record.journal} is gone; "
                         "rerun that shard")
    journal = Journal(path)
    try:
        if journal.meta("run_id") != record.run_id:
            raise UsageError(f"run {record.run_id} (shard {record.shard}): its journal {path} now holds run "
                             f"{journal.meta('run_id')}; merge that run's record instead")
        preparation = {fold: {group.name: journal.meta(group.name) for group in run.groups()
                              if group.name and journal.meta(group.name) is not None}
                       for fold, run in fold_runs.items()}
        return ShardPart(record, journal.units(), preparation, host=None)
    finally:
        journal.close()


@app.command("merge")
def merge_command(
    runs: list[str] = typer.Argument(..., help="The shards (`fssbench eval --shard I/N`): stored run ids, unique "
                                               "prefixes of them, or record files."),
    results: Path = RESULTS_OPTION,
    data_root: Optional[Path] = DATA_ROOT_OPTION,
    json_output: bool = typer.Option(False, "--json", help="Print the merged record as JSON on stdout, nothing else."),
) -> None:
    """Merge all N shards of a run into its complete record (exit 3 when they are not one run's N shards)."""
    from fssbench.cli.results import load_run
    from fssbench.harness.record import new_run_id
    from fssbench.harness.session import publish_record
    from fssbench.harness.shards import check_shards, merge_parts

    records = [load_run(run, results) for run in runs]
    check_shards(records)
    task, fold_runs = shard_fold_runs(records[0], data_root)
    parts = [shard_part(record, results, fold_runs) for record in records]
    merged = merge_parts(parts, fold_runs, task, new_run_id(records[0].method, records[0].protocol))
    path = publish_record(merged, [unit for part in parts for unit in part.units], results)
    if json_output:
        sys.stdout.write(merged.to_json())
        return
    from fssbench.reports.console import run_summary

    stdout.print(run_summary(merged))
    stdout.print(f"merged {len(parts)} shards into {path}")


class ExecutorName(str, Enum):
    local = "local"
    ray = "ray"
    slurm = "slurm"


@app.command("sweep")
def sweep_command(
    sweep_file: Path = typer.Argument(..., help="The sweep's YAML file (docs/scale-out.md)."),
    executor: ExecutorName = typer.Option(ExecutorName.local, "--executor",
                                          help="local (a process pool), ray (Ray tasks) or slurm (submitit)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and whether each would run; run nothing."),
    retries: Optional[int] = typer.Option(None, "--retries", min=0,
                                          help="Retries of a failed run (default: the file's `retries`, else 1)."),
) -> None:
    """Run a grid of evaluations, skipping those complete in the store; a summary and a leaderboard at the end."""
    from fssbench.cli.sweep import load_sweep, make_executor, mark_done, run_sweep

    sweep = load_sweep(sweep_file)
    mark_done(sweep)
    if dry_run:
        for job in sweep.jobs:
            state = "skip (complete in the store)" if job.status == "skipped" else "run"
            stdout.print(f"{state}: fssbench {' '.join(job.argv)}", highlight=False, soft_wrap=True)
        return
    run_sweep(sweep, make_executor(executor.value, sweep), sweep.settings["retries"] if retries is None else retries)
    print_summary(sweep)
    failed = [job for job in sweep.jobs if job.status == "failed"]
    if failed:
        stderr.print(f"{len(failed)} of {len(sweep.jobs)} runs failed; run the sweep again to resume them")
        raise typer.Exit(1)


def print_summary(sweep) -> None:
    """The sweep's table (one row per run, with its cost) and the leaderboard of its complete runs."""
    from rich.markup import escape
    from rich.table import Table

    from fssbench.harness.shards import total_cost
    from fssbench.reports.leaderboard import build_tables, to_markdown

    table = Table("run", "status", "attempts", "headline", "CPU-s", "GPU-s", "run id / error",
                  title=f"sweep {sweep.settings['name']}")
    for job in sweep.jobs:
        record = job.record
        headline = record.primary if record is not None else None
        cost = record.cost if record is not None else None
        table.add_row(job.label, job.status, str(job.attempts),
                      f"{headline.label} {headline.value:.1f}" if headline and headline.value is not None else "--",
                      f"{cost.cpu_s:.1f}" if cost else "--", f"{cost.gpu_s:.1f}" if cost and cost.gpu_s else "--",
                      record.run_id if record is not None else escape(job.error.splitlines()[-1] if job.error else ""))
    stdout.print(table)
    ran = total_cost([job.record.cost for job in sweep.jobs if job.status == "complete"])
    covered = total_cost([job.record.cost for job in sweep.jobs if job.record is not None])
    describe = (lambda cost: "--" if cost is None else f"{cost.cpu_s:.1f} CPU-s"
                + (f", {cost.gpu_s:.1f} GPU-s" if cost.gpu_s is not None else ""))
    stdout.print(f"cost of this sweep's runs: {describe(ran)}; of all its runs (skipped ones included): "
                 f"{describe(covered)}", highlight=False)
    records = [job.record for job in sweep.jobs if job.record is not None]
    stdout.print(to_markdown(build_tables(records)), highlight=False, markup=False)
