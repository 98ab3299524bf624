"""The `fssbench` command line. Heavy libraries (torch, model code) are imported inside the
commands that need them, so `fssbench --help` and `fssbench list` start instantly."""

from __future__ import annotations

import json
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from fssbench import registry
from fssbench.harness.errors import FssbenchError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Benchmark harness and leaderboard evaluator for few-shot semantic segmentation.")
protocols_app = typer.Typer(no_args_is_help=True, help="Inspect protocol specs.")
app.add_typer(protocols_app, name="protocols")
runs_app = typer.Typer(no_args_is_help=True, help="Browse the results store.")
app.add_typer(runs_app, name="runs")
data_app = typer.Typer(no_args_is_help=True, help="Check datasets on disk.")
app.add_typer(data_app, name="data")
train_app = typer.Typer(no_args_is_help=True, help="Train methods that need training (on base classes only).")
app.add_typer(train_app, name="train")

stdout = Console(width=None if sys.stdout.isatty() else 200)  # full tables in logs and pipes
stderr = Console(stderr=True, soft_wrap=True)

DATA_ROOT_HELP = "Folder holding the datasets (default: $FSSBENCH_DATA)."
RESULTS_OPTION = typer.Option(Path("fssbench-results"), "--results", help="The --out folder of `fssbench eval`.")


def open_store(results: Path):
    from fssbench.harness.errors import UsageError
    from fssbench.harness.store import STORE_NAME, ResultsStore

    if not (results / STORE_NAME).is_file():
        raise UsageError(f"no results store at {results / STORE_NAME}; run `fssbench eval --out {results}` first "
                         "or point --results at the folder that holds one")
    return ResultsStore(results / STORE_NAME)


@app.command("eval")
def eval_command(
    method: str = typer.Option(..., "--method", "-m", help="Method to evaluate (fssbench list methods)."),
    protocol: str = typer.Option(..., "--protocol", "-p", help="Protocol (fssbench list protocols)."),
    fold: str = typer.Option("all", help="Fold number, or 'all'."),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    out: Path = typer.Option(Path("fssbench-results"), help="Where run records are written."),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu, cuda or cuda:N."),
    seed: Optional[int] = typer.Option(None, help="Episode seed (default: the protocol's)."),
    episodes: Optional[int] = typer.Option(None, min=1, help="Use only the first N episodes per fold (smoke runs; recorded)."),
    weights: list[str] = typer.Option([], "--weights", help="NAME=PATH of a weight file or folder; repeatable."),
    random_init: bool = typer.Option(False, "--random-init", help="Random weights: a timing-only run."),
    warmup: int = typer.Option(2, min=0, help="Episodes excluded from timing statistics (still scored)."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Start over instead of resuming this run's journal."),
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
    from fssbench.harness.evaluation import EvalRequest, evaluate
    from fssbench.harness.progress import episode_progress

    request = EvalRequest(method=method, protocol=protocol, fold=fold, data_root=data_root, out=out,
                          device=device, seed=seed, episodes=episodes, weights=weights,
                          random_init=random_init, warmup=warmup, resume=not no_resume,
                          eval_size=eval_size, original_resolution=original_resolution, options=options,
                          backbone=backbone, batch_size=batch_size)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with episode_progress(f"{method} {protocol}") as start:
            record, path = evaluate(request, on_progress=start)
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted[/yellow]: the finished episodes are journaled; run the same command "
                     "again to resume")
        raise typer.Exit(130) from None
    if json_output:
        sys.stdout.write(json.dumps(record, indent=2) + "\n")
        return
    from fssbench.reports.console import run_summary

    stdout.print(run_summary(record))
    stdout.print(f"run record: {path}")


@train_app.command("diffup")
def train_diffup_command(
    protocol: str = typer.Option(..., "--protocol", "-p", help="Protocol whose dataset, folds and shot to train for."),
    fold: int = typer.Option(..., "--fold", help="Held-out fold: training uses the other folds' classes."),
    backbone: str = typer.Option("efficientnet-lite0", help="Frozen backbone (fssbench list backbones)."),
    out: Path = typer.Option(..., "--out", help="Checkpoint file to write (atomically, every few steps)."),
    config: str = typer.Option("paper", help="paper (the paper's GPU-scale settings) or small (CPU, minutes)."),
    steps: Optional[int] = typer.Option(None, min=1, help="Optimizer steps (default: the config's epochs)."),
    seed: int = typer.Option(0, help="Seed of the decoder's initial weights, batches and noise."),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu, cuda or cuda:N."),
    resume: bool = typer.Option(False, "--resume", help="Continue the checkpoint at --out."),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    backbone_weights: Optional[Path] = typer.Option(None, help="The backbone's weights (none for efficientnet-lite*)."),
) -> None:
    """Train DiffUp's decoder episodically on a fold's base classes."""
    from fssbench.adapters.diffup.training import train_diffup
    from fssbench.harness.evaluation import data_root_from, open_reader, resolve_folds

    spec = registry.protocols.get(protocol)
    resolve_folds(spec, str(fold))
    reader = open_reader(spec, data_root_from(data_root))
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        path = train_diffup(reader, fold, spec.folds, backbone, out, config=config, steps=steps, seed=seed,
                            device=device, resume=resume, shot=spec.shot, backbone_weights=backbone_weights)
    except KeyboardInterrupt:
        stderr.print(f"[yellow]interrupted[/yellow]: the last checkpoint is in {out}; continue with --resume")
        raise typer.Exit(130) from None
    stdout.print(f"checkpoint: {path}  (evaluate with --weights decoder={path})")


@app.command("upgrade")
def upgrade_command(
    method: str = typer.Option("diffup", "--method", "-m", help="A method whose decoder runs on any backbone."),
    protocol: str = typer.Option(..., "--protocol", "-p"),
    weights: list[str] = typer.Option([], "--weights", help="NAME=PATH, e.g. decoder=CKPT; repeatable."),
    before: str = typer.Option(..., "--from", help="Backbone the decoder was trained with."),
    after: str = typer.Option(..., "--to", help="Backbone to swap in without re-training."),
    from_weights: Optional[Path] = typer.Option(None, help="Weights of the --from backbone (none for efficientnet-lite*)."),
    to_weights: Optional[Path] = typer.Option(None, help="Weights of the --to backbone (none for efficientnet-lite*)."),
    fold: str = typer.Option("all", help="Fold number, or 'all'."),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    out: Path = typer.Option(Path("fssbench-results"), help="Where run records and the table are written."),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu, cuda or cuda:N."),
    episodes: Optional[int] = typer.Option(None, min=1, help="Only the first N episodes per fold (recorded)."),
    options: list[str] = typer.Option([], "--option", help="NAME=VALUE of a method option; repeatable."),
) -> None:
    """Evaluate one decoder with two backbones and write the before/after/delta table (Markdown and CSV)."""
    from fssbench.adapters.diffup.upgrade import upgrade_csv, upgrade_markdown
    from fssbench.harness.evaluation import EvalRequest, evaluate
    from fssbench.harness.files import atomic_write_text
    from fssbench.harness.progress import episode_progress

    records = []
    signal.signal(signal.SIGTERM, _interrupt)
    for backbone, backbone_weights in ((before, from_weights), (after, to_weights)):
        flags = weights + ([f"backbone={backbone_weights}"] if backbone_weights else [])
        request = EvalRequest(method=method, protocol=protocol, fold=fold, data_root=data_root, out=out,
                              device=device, episodes=episodes, weights=flags, options=options, backbone=backbone)
        try:
            with episode_progress(f"{method} {backbone} {protocol}") as start:
                records.append(evaluate(request, on_progress=start)[0])
        except KeyboardInterrupt:
            stderr.print("[yellow]interrupted[/yellow]: the finished episodes are journaled; run the same command "
                         "again to resume")
            raise typer.Exit(130) from None
    stem = out / f"upgrade-{method}-{protocol}-{before}-to-{after}"
    atomic_write_text(stem.with_suffix(".md"), upgrade_markdown(*records))
    atomic_write_text(stem.with_suffix(".csv"), upgrade_csv(*records))
    stdout.print(upgrade_markdown(*records))
    stdout.print(f"written: {stem}.md and {stem}.csv")


@app.command("episodes")
def episodes_command(
    protocol: str = typer.Option(..., "--protocol", "-p"),
    fold: int = typer.Option(..., "--fold"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    seed: Optional[int] = typer.Option(None, help="Episode seed (default: the protocol's)."),
) -> None:
    """Print a fold's episode manifest as JSON lines, one episode per line, in order."""
    from fssbench.harness.evaluation import data_root_from, open_reader, protocol_manifests, resolve_folds

    spec = registry.protocols.get(protocol)
    folds = resolve_folds(spec, str(fold))
    reader = open_reader(spec, data_root_from(data_root))
    manifest = protocol_manifests(spec, reader, folds, spec.seed if seed is None else seed, None)[fold]
    sys.stdout.write("".join(line + "\n" for line in manifest.lines()))


class ListKind(str, Enum):
    methods = "methods"
    protocols = "protocols"
    datasets = "datasets"
    backbones = "backbones"


@app.command("list")
def list_command(kind: ListKind = typer.Argument(..., help="methods, protocols, datasets or backbones")) -> None:
    """List what is registered, with a one-line description."""
    table = Table(show_header=True)
    table.add_column(kind.value[:-1])
    table.add_column("description")
    if kind is ListKind.protocols:
        for name in registry.protocols.names():
            table.add_row(name, registry.protocols.get(name).description)
    else:
        table.add_column("from")
        for entry in getattr(registry, kind.value).entries():
            table.add_row(entry.name, entry.description, entry.origin)
    stdout.print(table)


@protocols_app.command("show")
def protocols_show(name: str = typer.Argument(..., help="Protocol name.")) -> None:
    """Print a protocol's resolved spec, source file and hash as JSON."""
    spec = registry.protocols.get(name)
    shown = {"name": spec.name, "version": spec.version, "source": str(spec.source), "sha256": spec.sha256,
             "spec": spec.resolved}
    sys.stdout.write(json.dumps(shown, indent=2) + "\n")


@data_app.command("check")
def data_check(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name (fssbench list datasets)."),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
) -> None:
    """Check a dataset's layout, counts and files; exit 1 on any problem."""
    from fssbench.harness.evaluation import data_root_from
    from fssbench.harness.progress import file_progress
    from fssbench.protocols.datacheck import check_dataset

    with file_progress(f"checking {dataset}") as on_file:
        report = check_dataset(dataset, data_root_from(data_root), on_file)
    stdout.print(report.summary(), highlight=False)
    raise typer.Exit(0 if report.ok else 1)


@data_app.command("prepare")
def data_prepare(
    dataset: str = typer.Argument(..., help="coco: COCO-20i masks and instance maps from the instances JSON."),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    split: str = typer.Option("val2014", help="val2014 or train2014."),
) -> None:
    """Write the mask files a dataset needs, once (COCO-20i from instances_<split>.json, with pycocotools)."""
    from fssbench.harness.errors import UsageError
    from fssbench.harness.evaluation import data_root_from
    from fssbench.harness.progress import file_progress
    from fssbench.protocols.coco_prepare import prepare_coco_masks

    if dataset != "coco":
        raise UsageError(f"`fssbench data prepare` knows only 'coco', not {dataset!r}")
    root = data_root_from(data_root)
    if root is None or not root.is_dir():
        raise UsageError("pass --data-root DIR (or set FSSBENCH_DATA) to the folder that holds COCO2014/")
    with file_progress(f"preparing COCO {split} masks") as on_image:
        written = prepare_coco_masks(root, split, on_image)
    stdout.print(f"{written} label and instance maps written under {root / 'COCO2014'}")


@runs_app.command("list")
def runs_list(
    results: Path = RESULTS_OPTION,
    method: Optional[str] = typer.Option(None, help="Only runs of this method."),
    protocol: Optional[str] = typer.Option(None, help="Only runs under this protocol."),
    status: Optional[str] = typer.Option(None, help="complete, failed or interrupted."),
) -> None:
    """List stored runs, newest first."""
    with open_store(results) as store:
        runs = store.runs(method=method, protocol=protocol, status=status)
    table = Table("run id", "method", "backbone", "protocol", "status", "mIoU", "FB-IoU", "finished")
    for run in runs:
        miou = "timing only" if run["timing_only"] else (f"{run['mean_miou']:.1f}" if run["mean_miou"] is not None else "--")
        fbiou = f"{run['mean_fbiou']:.1f}" if run["mean_fbiou"] is not None and not run["timing_only"] else "--"
        table.add_row(run["run_id"], run["method"], run["backbone"] or "-", run["protocol"], run["status"], miou,
                      fbiou, run["finished_at"] or "--")
    stdout.print(table)


@runs_app.command("show")
def runs_show(run: str = typer.Argument(..., help="Run id (or a unique prefix)."), results: Path = RESULTS_OPTION,
              json_output: bool = typer.Option(False, "--json", help="Print the whole record as JSON.")) -> None:
    """Show one stored run."""
    with open_store(results) as store:
        record = store.record(run)
    if json_output:
        sys.stdout.write(json.dumps(record, indent=2) + "\n")
        return
    from fssbench.reports.console import run_summary

    stdout.print(run_summary(record))


@runs_app.command("export")
def runs_export(run: str = typer.Argument(..., help="Run id (or a unique prefix)."), results: Path = RESULTS_OPTION,
                csv: Path = typer.Option(..., "--csv", help="Where to write the per-episode CSV.")) -> None:
    """Write a run's per-episode statistics (counts and latencies) to CSV."""
    with open_store(results) as store:
        frame = store.episode_frame(run)
    frame.to_csv(csv, index=False)
    stderr.print(f"{len(frame)} episodes written to {csv}")


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
    max_drop: float = typer.Option(0.5, "--max-drop", min=0, help="Tolerated mIoU drop (points)."),
    max_slowdown: Optional[float] = typer.Option(None, "--max-slowdown", min=0,
                                                 help="Tolerated rise of median compute time, in percent."),
    paired: bool = typer.Option(False, "--paired", help="Paired bootstrap and permutation test over episodes."),
    json_output: bool = typer.Option(False, "--json", help="Print the verdict as JSON."),
    results: Path = RESULTS_OPTION,
) -> None:
    """Regression gate: exit 0 pass, 1 regression, 2 usage error, 3 incomparable."""
    from fssbench.harness.errors import FssbenchError
    from fssbench.reports.compare import compare_records, describe, incomparable

    current_record = _load_run(current, results)
    try:
        baseline_record = _load_run(baseline, results)
    except FssbenchError as exc:
        verdict = incomparable(f"missing baseline: {exc}", current=current_record["run_id"])
    else:
        verdict = compare_records(baseline_record, current_record, max_drop, max_slowdown, paired)
    if json_output:
        sys.stdout.write(json.dumps(verdict.as_dict(), indent=2) + "\n")
    else:
        stdout.print(describe(verdict), highlight=False)
    raise typer.Exit(verdict.exit_code)


def _load_run(reference: str, results: Path) -> dict:
    from fssbench.harness.errors import UsageError

    path = Path(reference)
    if path.suffix == ".json" or path.is_file():
        try:
            return json.loads(path.read_text())
        except OSError as exc:
            raise UsageError(f"cannot read run record {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise UsageError(f"{path} is not a run record (invalid JSON: {exc})") from None
    with open_store(results) as store:
        return store.record(reference)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:
        exc.show()
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        stderr.print("[yellow]interrupted[/yellow]")
        code = 130
    except FssbenchError as exc:
        stderr.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
        code = exc.exit_code
    sys.exit(code if isinstance(code, int) else 0)
