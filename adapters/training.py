"""What every trained adapter (DiffUp's decoder, the gfss-learner's head) shares: checkpoint files that
load with `torch.load(..., weights_only=True)`, written atomically; resuming from one only with the
settings it was trained with; and a training progress display."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from fssbench.harness.errors import UsageError
from fssbench.harness.files import atomic_write


@dataclass(frozen=True)
class CheckpointKind:
    """The checkpoints of one method: `label` names them in errors, `format` and `version` are stored in
    each file and checked on load, `train_command` says how to write one."""

    label: str
    format: str
    version: int
    train_command: str

    @property
    def hint(self) -> str:
        return f"write one with {self.train_command}"

    def save(self, path: Path, contents: dict[str, Any]) -> None:
        """Write atomically, so an interrupted save leaves the previous checkpoint intact."""
        atomic_write(path, lambda staging: torch.save({"format": self.format, "version": self.version, **contents},
                                                      staging))

    def load(self, path: Path) -> dict[str, Any]:
        try:
            contents = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a wrong or damaged file fails in many ways
            raise UsageError(f"{path} is not a {self.label} checkpoint loadable with weights_only=True ({exc}); "
                             f"{self.hint}") from None
        if not isinstance(contents, dict) or contents.get("format") != self.format:
            raise UsageError(f"{path} is not a {self.label} checkpoint; {self.hint}")
        if contents.get("version") != self.version:
            raise UsageError(f"{path} is a {self.label} checkpoint of version {contents.get('version')}, this "
                             f"fssbench reads version {self.version}; {self.hint}")
        return contents


def restore(kind: CheckpointKind, out: Path, resume: bool, identity: dict, modules: dict[str, torch.nn.Module],
            optimizer: torch.optim.Optimizer) -> int:
    """The step to start from: that of the checkpoint at `out` (whose `modules` and optimizer state are
    loaded) when resuming, else 0. A checkpoint is never overwritten without `resume`."""
    if not out.exists():
        return 0
    if not resume:
        raise UsageError(f"{out} exists; pass --resume to continue that training or choose another --out")
    contents = kind.load(out)
    differing = [key for key, value in identity.items() if contents.get(key) != value]
    if differing:
        raise UsageError(f"{out} was trained with other settings ({', '.join(differing)}: "
                         f"{', '.join(repr(contents.get(key)) for key in differing)}); resume it with the same "
                         "settings or train into another --out")
    for name, module in modules.items():
        module.load_state_dict(contents[name])
    optimizer.load_state_dict(contents["optimizer"])
    return contents["step"]


@contextmanager
def training_progress(label: str, total: int, done: int) -> Iterator[Callable[[float], None]]:
    """Yields `advance(loss)`: a rich bar (steps, ETA, loss) on a terminal, else a line every tenth."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield _log_lines(label, total, done)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("loss {task.fields[loss]}"))
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(label, total=total, completed=done, loss="--")
        yield lambda loss: progress.update(task, advance=1, loss=f"{loss:.4f}")


def _log_lines(label: str, total: int, done: int) -> Callable[[float], None]:
    started, first = time.perf_counter(), done
    every = max(total // 10, 1)
    if done:
        print(f"{label}: resuming at step {done}/{total}", file=sys.stderr, flush=True)

    def advance(loss: float) -> None:
        nonlocal done
        done += 1
        if done % every == 0 or done == total:
            rate = (done - first) / (time.perf_counter() - started)
            print(f"{label}: step {done}/{total}, {rate:.2f} steps/s, ETA {(total - done) / rate:.0f} s, "
                  f"loss {loss:.4f}", file=sys.stderr, flush=True)

    return advance
