"""The rich progress bar of a run, on stderr: episodes done, ETA, episodes/s and running mIoU."""

from __future__ import annotations

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
    """Yields `start(fold, total)`, which adds a bar and returns the per-episode callback."""
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        _RateColumn(), _MiouColumn(), console=Console(stderr=True), transient=False)

    def start(fold: int, total: int) -> Callable:
        task = progress.add_task(f"{label} fold {fold}", total=total, miou=None)
        return lambda state: progress.update(task, advance=1, miou=state.miou())

    with progress:
        yield start
