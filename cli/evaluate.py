"""`fssbench eval`: resolve the names of a request into a run plan, run it, print or emit the record."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import typer

from fssbench import registry
from fssbench.cli.app import DATA_ROOT_HELP, DEVICE_HELP, app, stderr, stdout


@dataclass
class EvalRequest:
    """An `fssbench eval` command line as data."""

    method: str
    protocol: str
    fold: str = "all"
    data_root: Path | None = None
    out: Path = Path("fssbench-results")
    device: str = "auto"
    seed: int | None = None
    episodes: int | None = None
    weights: list[str] = field(default_factory=list)  # NAME=PATH
    random_init: bool = False
    warmup: int = 2
    resume: bool = True
    wait: bool = False
    eval_size: int | None = None
    original_resolution: bool = False
    options: list[str] = field(default_factory=list)  # NAME=VALUE
    backbone: str | None = None
    batch_size: int = 1


def protocol_manifests(spec, reader, folds: list[int], seed: int, cap: int | None) -> dict:
    from fssbench.harness.cache import cache_dir
    from fssbench.harness.episodes import build_manifest

    sampler = registry.samplers.get(spec.sampler["name"])
    manifests = {fold: build_manifest(spec, reader, sampler, fold, seed, cache_dir()) for fold in folds}
    return {fold: manifest.head(cap) for fold, manifest in manifests.items()} if cap else manifests


def plan_run(request: EvalRequest):
    """The request's names resolved and its flags checked, cheapest checks first."""
    from fssbench.harness.datasets import data_root_from
    from fssbench.harness.evaluation import RunPlan
    from fssbench.harness.options import resolve_backbone, resolve_options
    from fssbench.harness.specs import Resolution
    from fssbench.harness.timing import resolve_device
    from fssbench.harness.weights import parse_weight_flags, resolve_weights

    spec = registry.protocols.get(request.protocol)
    if request.eval_size is not None:
        spec = replace(spec, resolution=Resolution(spec.resolution.mode, request.eval_size))
    adapter_class = registry.methods.get(request.method)
    task = registry.tasks.get(spec.task)()
    task.check(request.method, adapter_class, spec, request.original_resolution)
    weights = resolve_weights(request.method, adapter_class, parse_weight_flags(request.weights), request.random_init)
    options = resolve_options(request.method, adapter_class, request.options)
    backbone = resolve_backbone(request.method, adapter_class, request.backbone)
    device = resolve_device(request.device)
    folds = spec.select_folds(request.fold)
    seed = spec.seed if request.seed is None else request.seed
    reader = registry.open_dataset(spec, data_root_from(request.data_root))
    return RunPlan(method=request.method, adapter_class=adapter_class, task=task, spec=spec, reader=reader,
                   manifests=protocol_manifests(spec, reader, folds, seed, request.episodes), device=device,
                   seed=seed, options=options, backbone=backbone, weights=weights, random_init=request.random_init,
                   episodes_cap=request.episodes, warmup=request.warmup, resume=request.resume, wait=request.wait,
                   original_resolution=request.original_resolution, resolution_override=request.eval_size,
                   batch_size=request.batch_size, out=Path(request.out))


def evaluate(request: EvalRequest, on_progress=None):
    """Plan and run the request; (record, record path)."""
    from fssbench.harness.evaluation import run_plan

    return run_plan(plan_run(request), on_progress)


def evaluate_with_progress(request: EvalRequest, label: str):
    """`evaluate` with a progress display; Ctrl-C or SIGTERM ends the command with exit 130."""
    from fssbench.harness.progress import episode_progress

    try:
        with episode_progress(label) as start:
            return evaluate(request, on_progress=start)
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted[/yellow]: the finished episodes are journaled; run the same command "
                     "again to resume")
        raise typer.Exit(130) from None


@app.command("eval")
def eval_command(
    method: str = typer.Option(..., "--method", "-m", help="Method to evaluate (fssbench list methods)."),
    protocol: str = typer.Option(..., "--protocol", "-p", help="Protocol (fssbench list protocols)."),
    fold: str = typer.Option("all", help="Fold number, or 'all'."),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    out: Path = typer.Option(Path("fssbench-results"), help="Where run records are written."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    seed: Optional[int] = typer.Option(None, help="Episode seed (default: the protocol's)."),
    episodes: Optional[int] = typer.Option(None, min=1, help="Use only the first N episodes per fold (smoke runs; recorded)."),
    weights: list[str] = typer.Option([], "--weights", help="NAME=PATH of a weight file or folder; repeatable."),
    random_init: bool = typer.Option(False, "--random-init", help="Random weights: a timing-only run."),
    warmup: int = typer.Option(2, min=0, help="Episodes excluded from timing statistics (still scored)."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Start over instead of resuming this run's journal."),
    wait: bool = typer.Option(False, "--wait", help="If another process is running this run, wait, then resume."),
    eval_size: Optional[int] = typer.Option(None, "--eval-size", min=8,
                                            help="Evaluate at NxN instead of the protocol's resolution (recorded)."),
    original_resolution: bool = typer.Option(False, "--original-resolution",
                                             help="Score at each query's original size (prediction upsampled)."),
    options: list[str] = typer.Option([], "--option", help="NAME=VALUE of a method option; repeatable (recorded)."),
    backbone: Optional[str] = typer.Option(None, help="Backbone for methods that take one (fssbench list backbones)."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Episodes per adapter call."),
    json_output: bool = typer.Option(False, "--json", help="Print the run record as JSON on stdout, nothing else."),
) -> None:
    """Evaluate a method under a protocol and write its run record."""
    request = EvalRequest(method=method, protocol=protocol, fold=fold, data_root=data_root, out=out,
                          device=device, seed=seed, episodes=episodes, weights=weights,
                          random_init=random_init, warmup=warmup, resume=not no_resume, wait=wait,
                          eval_size=eval_size, original_resolution=original_resolution, options=options,
                          backbone=backbone, batch_size=batch_size)
    record, path = evaluate_with_progress(request, f"{method} {protocol}")
    if json_output:
        sys.stdout.write(record.to_json())
        return
    from fssbench.reports.console import run_summary

    stdout.print(run_summary(record))
    stdout.print(f"run record: {path}")
