"""Progress of a run on stderr, for the whole run and for each fold: on a terminal, a rich bar for the run
(units done of all folds, overall ETA) and one for the current fold ("fold 2 (2 of 4)", ETA, rate, running
score); on a log file or pipe, a plain line every tenth of a fold with the fold's and the run's ETA, so
batch-job logs show it too."""

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
        return Text(f"mIoU {miou:5.1f}" if miou is not None else "" if task.fields.get("run") else "mIoU   --",
                    style="bold")


class RunProgress:
    """Call it as `start(fold, total, done)` when a fold begins (`done` units already journaled); it returns
    the fold's per-unit callback `(done, running score)`. `plan({fold: units})`, given once the run is
    planned, adds the run's totals: "fold k of N" and the overall ETA."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.units: dict[int, int] = {}  # fold -> units, once planned
        self.computed = 0  # units computed by this process (not resumed), for the rate
        self.started: float | None = None  # when the first fold began (after the method's setup)

    def plan(self, units: dict[int, int]) -> None:
        self.units = dict(units)

    def fold_name(self, fold: int) -> str:
        folds = list(self.units)
        where = f" ({folds.index(fold) + 1} of {len(folds)})" if fold in folds and len(folds) > 1 else ""
        return f"{self.label} fold {fold}{where}"

    def remaining_after(self, fold: int) -> int:
        """Units of the folds after `fold`."""
        folds = list(self.units)
        return sum(self.units[f] for f in folds[folds.index(fold) + 1:]) if fold in folds else 0

    def __call__(self, fold: int, total: int, done: int) -> Callable[[int, float | None], None]:
        if fold in self.units:
            self.units[fold] = total
        if self.started is None:
            self.started = time.perf_counter()
        return self._log_lines(fold, total, done)

    def _log_lines(self, fold: int, total: int, resumed: int) -> Callable[[int, float | None], None]:
        label = self.fold_name(fold)
        step = max(total // 10, 1)
        if resumed:
            print(f"{label}: resuming, {resumed}/{total} episodes already journaled", file=sys.stderr, flush=True)
        previous = [resumed]

        def on_episode(done: int, miou: float | None) -> None:
            self.computed += done - previous[0]
            previous[0] = done
            if done % step == 0 or done == total:
                rate = self.computed / max(time.perf_counter() - self.started, 1e-9)
                run_eta = (f", run ETA {(total - done + self.remaining_after(fold)) / rate:.0f} s"
                           if len(self.units) > 1 and rate else "")
                score = f", mIoU {miou:.1f}" if miou is not None else ""
                print(f"{label}: {done}/{total} episodes, {rate:.2f} ep/s, ETA {(total - done) / rate:.0f} s"
                      f"{run_eta}{score}" if rate else f"{label}: {done}/{total} episodes{score}",
                      file=sys.stderr, flush=True)

        return on_episode


class _BarProgress(RunProgress):
    """The same on a terminal: a bar for the run (when it has several folds) and one per fold."""

    def __init__(self, label: str, progress: Progress) -> None:
        super().__init__(label)
        self.progress = progress
        self.run_task = None
        self.finished = 0  # units of the folds started before

    def plan(self, units: dict[int, int]) -> None:
        super().plan(units)
        if len(units) > 1:
            self.run_task = self.progress.add_task(f"{self.label} all {len(units)} folds", total=sum(units.values()),
                                                   run=True)

    def __call__(self, fold: int, total: int, done: int) -> Callable[[int, float | None], None]:
        if fold in self.units:
            self.units[fold] = total
        task = self.progress.add_task(self.fold_name(fold), total=total, completed=done, miou=None)
        before, self.finished = self.finished, self.finished + total  # units of the folds before this one

        def on_episode(done: int, miou: float | None) -> None:
            self.progress.update(task, completed=done, miou=miou)
            if self.run_task is not None:
                self.progress.update(self.run_task, completed=before + done)

        if self.run_task is not None:
            self.progress.update(self.run_task, completed=before + done)
        return on_episode


@contextmanager
def episode_progress(label: str) -> Iterator[RunProgress]:
    """A run's progress display on stderr (see RunProgress)."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield RunProgress(label)
        return
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        _RateColumn(), _MiouColumn(), console=console)
    with progress:
        yield _BarProgress(label, progress)


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
