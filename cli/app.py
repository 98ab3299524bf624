"""The Typer application, its command groups, the consoles, and the error boundary of every command.

Exit codes: 0 success; 1 a data or prediction error (fssbench's own errors name the file or episode);
2 a usage error; 3 incomparable (`compare`); 4 an internal error (a bug in fssbench or in a plugin:
one line on stderr, the traceback with --debug or FSSBENCH_DEBUG=1); 130 interrupted.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from fssbench import registry
from fssbench.cli import config
from fssbench.harness.errors import FssbenchError, UsageError

INTERNAL_ERROR = 4

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Benchmark harness and leaderboard evaluator for few-shot semantic segmentation.")
groups = {
    "protocols": typer.Typer(no_args_is_help=True, help="Inspect protocol specs."),
    "runs": typer.Typer(no_args_is_help=True, help="Browse the results store."),
    "data": typer.Typer(no_args_is_help=True, help="Check and prepare datasets on disk."),
    "train": typer.Typer(no_args_is_help=True, help="Train methods that need training (on base classes only)."),
    "plot": typer.Typer(no_args_is_help=True, help="Plot results from the store (PNG and SVG)."),
}
for _name, _group in groups.items():
    app.add_typer(_group, name=_name)

stdout = Console(width=None if sys.stdout.isatty() else 200)  # full tables in logs and pipes
stderr = Console(stderr=True, soft_wrap=True)

DATA_ROOT_HELP = "Folder holding the datasets (default: $FSSBENCH_DATA, else data_root in fssbench.toml)."
DEVICE_HELP = "auto (cuda when available), cpu, cuda or cuda:N (default: $FSSBENCH_DEVICE, else fssbench.toml, else auto)."
WHERE_RESULTS = "default: $FSSBENCH_RESULTS, else results in fssbench.toml, else ./fssbench-results"


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else path.expanduser().absolute()


# Shared flags whose defaults come from the environment or the config file (cli/config.py), not the folder
# the command runs in; every path is made absolute, so messages name where things are.
RESULTS_OPTION = typer.Option(..., "--results", default_factory=config.default_results, callback=_absolute,
                              help=f"The --out folder of `fssbench eval` ({WHERE_RESULTS}).")
OUT_OPTION = typer.Option(..., "--out", default_factory=config.default_results, callback=_absolute,
                          help=f"Where run records and the results store are written ({WHERE_RESULTS}).")
DATA_ROOT_OPTION = typer.Option(..., "--data-root", default_factory=config.default_data_root, callback=_absolute,
                                help=DATA_ROOT_HELP)
DEVICE_OPTION = typer.Option(..., "--device", default_factory=config.default_device, help=DEVICE_HELP)
_debug = {"on": os.environ.get("FSSBENCH_DEBUG") == "1"}


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show the traceback of an internal error.")) -> None:
    if debug:
        _debug["on"] = True
    config.apply_config_file()  # before the command's flags take their defaults


def add_contributed_commands() -> None:
    """Commands that methods, datasets and plugins contribute through the registry's command hook."""
    for entry in registry.commands.entries():
        group_name, _, name = entry.name.rpartition(" ")
        try:
            command = registry.commands.get(entry.name)
        except FssbenchError as exc:
            command = _unavailable(exc)
        if not group_name:
            app.command(name)(command)
            continue
        if group_name not in groups:
            groups[group_name] = typer.Typer(no_args_is_help=True, help="Commands contributed by plugins.")
            app.add_typer(groups[group_name], name=group_name)
        groups[group_name].command(name)(command)


def _unavailable(error: FssbenchError):
    def command() -> None:
        raise error

    return command


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """fssbench's own warnings as one line on stderr; other packages' as Python shows them."""
    if category.__module__.startswith("fssbench."):
        stderr.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False, soft_wrap=True)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main() -> None:
    warnings.showwarning = _show_warning
    try:
        code = app(standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.TyperException as exc:  # click's usage errors
        exc.show()
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        stderr.print("[yellow]interrupted[/yellow]")
        code = 130
    except FssbenchError as exc:
        stderr.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
        code = exc.exit_code
    except Exception as exc:  # a bug, ours or a plugin's: one line, the traceback on request
        if _debug["on"]:
            traceback.print_exc()
        notes = " ".join(getattr(exc, "__notes__", []))
        stderr.print(f"[red]internal error:[/red] {escape(f'{type(exc).__name__}: {exc}')}"
                     + (f" ({escape(notes)})" if notes else "")
                     + ("" if _debug["on"] else "; run with --debug (or FSSBENCH_DEBUG=1) for the traceback"),
                     markup=True, highlight=False, soft_wrap=True)
        code = INTERNAL_ERROR
    sys.exit(code if isinstance(code, int) else 0)


def open_store(results: Path):
    from fssbench.harness.store import STORE_NAME, ResultsStore

    if not (results / STORE_NAME).is_file():
        raise UsageError(f"no results store at {results / STORE_NAME}; run `fssbench eval --out {results}` first "
                         "or point --results at the folder that holds one")
    return ResultsStore(results / STORE_NAME)
