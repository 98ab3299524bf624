"""What is registered and what is on disk: `list`, `protocols show`, `episodes`, `data check`."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fssbench import registry
from fssbench.cli.app import DATA_ROOT_HELP, app, groups, stdout


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
            table.add_row(name, registry.protocols.spec(name).description)
    else:
        table.add_column("from")
        for entry in getattr(registry, kind.value).entries():
            table.add_row(entry.name, entry.description, entry.origin)
    stdout.print(table)


@groups["protocols"].command("show")
def protocols_show(name: str = typer.Argument(..., help="Protocol name.")) -> None:
    """Print a protocol's resolved spec, source file and hash as JSON."""
    spec = registry.protocols.get(name)
    shown = {"name": spec.name, "version": spec.version, "source": str(spec.source), "sha256": spec.sha256,
             "spec": spec.resolved}
    sys.stdout.write(json.dumps(shown, indent=2) + "\n")


@app.command("episodes")
def episodes_command(
    protocol: str = typer.Option(..., "--protocol", "-p"),
    fold: int = typer.Option(..., "--fold"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    seed: Optional[int] = typer.Option(None, help="Episode seed (default: the protocol's)."),
) -> None:
    """Print a fold's episode manifest as JSON lines, one episode per line, in order."""
    from fssbench.cli.evaluate import protocol_manifests
    from fssbench.harness.datasets import data_root_from

    spec = registry.protocols.get(protocol)
    folds = spec.select_folds(str(fold))
    reader = registry.open_dataset(spec, data_root_from(data_root))
    manifest = protocol_manifests(spec, reader, folds, spec.seed if seed is None else seed, None)[fold]
    sys.stdout.write("".join(line + "\n" for line in manifest.lines()))


@groups["data"].command("check")
def data_check(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name (fssbench list datasets)."),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
) -> None:
    """Check a dataset's layout, counts and files; exit 1 on any problem."""
    from fssbench.harness.datasets import data_root_from
    from fssbench.harness.progress import file_progress
    from fssbench.protocols.datacheck import check_dataset

    with file_progress(f"checking {dataset}") as on_file:
        report = check_dataset(dataset, data_root_from(data_root), on_file)
    stdout.print(report.summary(), highlight=False)
    raise typer.Exit(0 if report.ok else 1)
