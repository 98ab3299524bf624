"""Progress of a run on stderr: a rich bar (episodes done, ETA, episodes/s, running mIoU) on a
terminal; on a log file or pipe, a plain line every tenth of a fold, so batch-job logs show it too."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:.2f} ep/s" if task.speed else "-- ep/s", style="progress.data.speed")


class _MiouColumn(ProgressColumn):
    def render(self, task) -> Text:
        miou = task.fields.get("miou")
        return Text(f"mIoU {miou:5.1f}" if miou is not None else "mIoU   --", style="bold")


@contextmanager
def episode_progress(label: str) -> Iterator[Callable[[int, int], Callable]]:
    """Yields `start(fold, total, done)`, which begins a fold (`done` episodes already journaled) and
    returns its per-episode callback `(done, running mIoU)`."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda fold, total, done: _log_lines(f"{label} fold {fold}", total, done)
        return
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        _RateColumn(), _MiouColumn(), console=console)

    def start(fold: int, total: int, done: int) -> Callable:
        task = progress.add_task(f"{label} fold {fold}", total=total, completed=done, miou=None)
        return lambda done, miou: progress.update(task, completed=done, miou=miou)

    with progress:
        yield start


def _log_lines(label: str, total: int, resumed: int) -> Callable:
    started = time.perf_counter()
    step = max(total // 10, 1)
    if resumed:
        print(f"{label}: resuming, {resumed}/{total} episodes already journaled", file=sys.stderr, flush=True)

    def on_episode(done: int, miou: float) -> None:
        if done % step == 0 or done == total:
            rate = (done - resumed) / (time.perf_counter() - started)
            print(f"{label}: {done}/{total} episodes, {rate:.2f} ep/s, ETA {(total - done) / rate:.0f} s, "
                  f"mIoU {miou:.1f}", file=sys.stderr, flush=True)

    return on_episode


@contextmanager
def file_progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """Yields `on_file(done, total)` that drives a bar (on a terminal) while files are checked."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda done, total: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)
