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
from fssbench.errors import FssbenchError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Benchmark harness and leaderboard evaluator for few-shot semantic segmentation.")
protocols_app = typer.Typer(no_args_is_help=True, help="Inspect protocol specs.")
app.add_typer(protocols_app, name="protocols")

stdout = Console()
stderr = Console(stderr=True)

DATA_ROOT_HELP = "Folder holding the datasets (default: $FSSBENCH_DATA)."


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
    json_output: bool = typer.Option(False, "--json", help="Print the run record as JSON on stdout, nothing else."),
) -> None:
    """Evaluate a method under a protocol and write its run record."""
    from fssbench.evaluation import EvalRequest, evaluate
    from fssbench.progress import episode_progress

    request = EvalRequest(method=method, protocol=protocol, fold=fold, data_root=data_root, out=out,
                          device=device, seed=seed, episodes=episodes, weights=weights,
                          random_init=random_init, warmup=warmup, resume=not no_resume)
    signal.signal(signal.SIGTERM, _interrupt)
    with episode_progress(f"{method} {protocol}") as start:
        record, path = evaluate(request, on_progress=start)
    if json_output:
        sys.stdout.write(json.dumps(record, indent=2) + "\n")
        return
    from fssbench.reports.console import run_summary

    stdout.print(run_summary(record))
    stdout.print(f"run record: {path}")


@app.command("episodes")
def episodes_command(
    protocol: str = typer.Option(..., "--protocol", "-p"),
    fold: int = typer.Option(..., "--fold"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    seed: Optional[int] = typer.Option(None, help="Episode seed (default: the protocol's)."),
) -> None:
    """Print a fold's episode manifest as JSON lines, one episode per line, in order."""
    from fssbench.evaluation import data_root_from, open_reader, protocol_manifests, resolve_folds

    spec = registry.protocols.get(protocol)
    folds = resolve_folds(spec, str(fold))
    reader = open_reader(spec, data_root_from(data_root))
    manifest = protocol_manifests(spec, reader, folds, spec.seed if seed is None else seed, None)[fold]
    sys.stdout.write("".join(line + "\n" for line in manifest.lines()))


class ListKind(str, Enum):
    methods = "methods"
    protocols = "protocols"
    datasets = "datasets"


@app.command("list")
def list_command(kind: ListKind = typer.Argument(..., help="methods, protocols or datasets")) -> None:
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


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:
        exc.show()
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        stderr.print("[yellow]interrupted[/yellow]: finished episodes are journaled; run the same command "
                     "again to resume")
        code = 130
    except FssbenchError as exc:
        stderr.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
        code = exc.exit_code
    sys.exit(code if isinstance(code, int) else 0)
