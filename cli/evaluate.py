"""`fssbench eval`: resolve the names of a request into a run plan, run it, print or emit the record."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from fssbench import registry
from fssbench.cli.app import DATA_ROOT_OPTION, DEVICE_OPTION, OUT_OPTION, app, stderr, stdout


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
    shard: str | None = None  # I/N: run only shard I of N (a partial run; `fssbench merge` completes it)
    eval_size: int | None = None
    original_resolution: bool = False
    options: list[str] = field(default_factory=list)  # NAME=VALUE
    backbone: str | None = None
    batch_size: int = 1
    cache_mb: int | None = None  # decode cache budget (None: min(25% of memory, 4096 MB))
    prefetch: int = 2  # batches loaded ahead on background threads
    threads: int | None = None  # torch threads for the run (None: torch's default)
    save_predictions: bool = False


def protocol_manifests(spec, reader, folds: list[int], seed: int, cap: int | None) -> dict:
    from fssbench.harness.cache import cache_dir
    from fssbench.harness.episodes import build_manifest

    sampler = registry.samplers.get(spec.sampler["name"])
    manifests = {fold: build_manifest(spec, reader, sampler, fold, seed, cache_dir()) for fold in folds}
    return {fold: manifest.head(cap) for fold, manifest in manifests.items()} if cap else manifests


def check_save_predictions(request: EvalRequest, spec) -> None:
    """--save-predictions writes FSS masks at the evaluation resolution, which `precomputed` re-scores exactly."""
    from fssbench.harness.errors import UsageError

    if request.save_predictions and spec.task != "fss":
        raise UsageError(f"--save-predictions saves episodic FSS predictions; protocol {spec.name!r} is a "
                         f"{spec.task} protocol")
    if request.save_predictions and request.original_resolution:
        raise UsageError("--save-predictions saves masks at the evaluation resolution (which the precomputed method "
                         "re-scores exactly), and --original-resolution scores at each query's own size: drop one")


def file_method(method: str) -> str:
    """`path/to/file.py:Class`, a local adapter run without packaging: registered as the method `<stem>.<Class>`
    (its file is imported from its path; its source sha256 is recorded in `code` and part of the run's
    identity, so editing the file starts a new run). Any other name is returned as it is."""
    from fssbench.harness.errors import UsageError

    path, sep, class_name = method.rpartition(":")
    if not (sep and path.endswith(".py")):
        return method
    file = Path(path).expanduser().absolute()
    if not file.is_file() or not class_name.isidentifier():
        raise UsageError(f"--method {method}: expected FILE.py:Class with an existing file "
                         f"({file} {'exists' if file.is_file() else 'does not exist'})")
    name = f"{file.stem}.{class_name}"
    registry.methods.register(name, f"{file}:{class_name}", origin=f"local file {file}")
    return name


def plan_run(request: EvalRequest):
    """The request's names resolved and its flags checked, cheapest checks first: everything missing is
    reported at once before torch is imported (cli/requirements.py)."""
    from fssbench.cli.requirements import preflight

    request = replace(request, method=file_method(request.method))
    preflight(request)
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
    check_save_predictions(request, spec)
    seed = spec.seed if request.seed is None else request.seed
    reader = registry.open_dataset(spec, data_root_from(request.data_root))
    return RunPlan(method=request.method, adapter_class=adapter_class, task=task, spec=spec, reader=reader,
                   manifests=protocol_manifests(spec, reader, folds, seed, request.episodes), device=device,
                   seed=seed, options=options, backbone=backbone, weights=weights, random_init=request.random_init,
                   episodes_cap=request.episodes, warmup=request.warmup, resume=request.resume, wait=request.wait,
                   original_resolution=request.original_resolution, resolution_override=request.eval_size,
                   batch_size=request.batch_size, cache_mb=request.cache_mb, prefetch=request.prefetch,
                   threads=request.threads, save_predictions=request.save_predictions, out=Path(request.out))


def evaluate(request: EvalRequest, on_progress=None):
    """Plan and run the request; (record, record path)."""
    plan = shard_plan(plan_run(request), request.shard)  # first, so usage errors come before torch is imported
    from fssbench.harness.evaluation import run_plan

    if hasattr(on_progress, "plan"):  # a RunProgress: the run's folds and sizes, for "fold k of N" and its ETA
        on_progress.plan({fold: len(manifest) for fold, manifest in plan.manifests.items()})
    if not plan.distributed:
        return run_plan(plan, on_progress)
    from fssbench.harness.shards import process_group

    with process_group(plan.device):
        return run_plan(plan, on_progress)


def shard_plan(plan, shard: str | None):
    """The plan of one shard: `--shard I/N`, or this torchrun rank's (RANK of WORLD_SIZE, on cuda:LOCAL_RANK)."""
    from fssbench.harness.errors import UsageError
    from fssbench.harness.shards import Shard, rank_device, torchrun_ranks

    ranks = torchrun_ranks()
    if ranks is None:
        return replace(plan, shard=Shard.parse(shard)) if shard else plan
    if shard:
        raise UsageError(f"--shard {shard} under torchrun: the ranks are the shards; drop --shard")
    return replace(plan, shard=ranks.shard, distributed=True, device=rank_device(plan.device, ranks))


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
    data_root: Optional[Path] = DATA_ROOT_OPTION,
    out: Path = OUT_OPTION,
    device: str = DEVICE_OPTION,
    seed: Optional[int] = typer.Option(None, help="Episode seed (default: the protocol's)."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Run N episode seeds: --seed (default: the protocol's) and "
                              "the N-1 after it, one resumable run and record each; the leaderboard shows their "
                              "mean ± std (docs/leaderboards.md)."),
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
    cache_mb: Optional[int] = typer.Option(None, "--cache-mb", min=0, help="Memory budget of the decoded-image "
                                           "cache, least recently used evicted (default: min(25% of RAM, 4096)).",
                                           show_default=False),
    prefetch: int = typer.Option(2, "--prefetch", min=0, help="Batches loaded ahead on background threads "
                                 "while the method runs (0: load each when reached)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch threads for the method "
                                          "(default: torch's; recorded)."),
    save_predictions: bool = typer.Option(False, "--save-predictions",
                                          help="Save each episode's prediction as a PNG under <out>/predictions "
                                               "(for `fssbench show` and the report; recorded)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: run shard I of N of each fold, a partial run "
                                                              "that `fssbench merge` completes (docs/scale-out.md)."),
    json_output: bool = typer.Option(False, "--json", help="Print the run record as JSON on stdout, nothing else."),
) -> None:
    """Evaluate a method under a protocol and write its run record."""
    request = EvalRequest(method=method, protocol=protocol, fold=fold, data_root=data_root, out=out,
                          device=device, seed=seed, episodes=episodes, weights=weights,
                          random_init=random_init, warmup=warmup, resume=not no_resume, wait=wait,
                          eval_size=eval_size, original_resolution=original_resolution, options=options,
                          backbone=backbone, batch_size=batch_size, save_predictions=save_predictions)
    request.shard = shard
    request.cache_mb, request.prefetch, request.threads = cache_mb, prefetch, threads
    for run_request in seed_requests(request, seeds):
        label = f"{method} {protocol}" + (f" seed {run_request.seed}" if seeds > 1 else "")
        record, path = evaluate_with_progress(run_request, label)
        if path is None:  # a torchrun rank other than 0: rank 0 reports the merged run
            continue
        if json_output:  # with --seeds, one record after another (a JSON stream, as jq reads it)
            sys.stdout.write(record.to_json())
            continue
        from fssbench.reports.console import run_summary

        stdout.print(run_summary(record))
        stdout.print(f"run record: {escape(str(path))}", highlight=False)


def seed_requests(request: EvalRequest, seeds: int) -> list[EvalRequest]:
    """`--seeds N`: the request for --seed S (default: the protocol's seed) and for each of the N-1 seeds after S."""
    if seeds == 1:
        return [request]
    start = registry.protocols.get(request.protocol).seed if request.seed is None else request.seed
    return [replace(request, seed=start + offset) for offset in range(seeds)]
