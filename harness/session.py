"""A run session owns one run's lifecycle: its journal (locked: one process at a time), the signal
handlers, the memory probe and the record. Whatever ends the run (completion, an error of any type,
Ctrl-C or SIGTERM), the record is completed from the journal, written and stored before the exception
goes on; the previous SIGTERM handler is restored, so programs that call fssbench in-process keep their
own. A store that cannot be written never fails a run: the record is the source of truth, and the
session warns (RunWarning) how to rebuild the store from the records.
"""

from __future__ import annotations

import signal
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

from fssbench.harness.errors import FssbenchError
from fssbench.harness.files import move_aside
from fssbench.harness.journal import Journal, RunWarning, lock_journal
from fssbench.harness.record import Cost, RunError, RunRecord, Timing, machine_load, utc_now, write_record
from fssbench.harness.store import STORE_NAME, ResultsStore, StoreError
from fssbench.harness.task import Task
from fssbench.harness.timing import MemoryProbe, latency_summary, now


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside the block (so it stops as cleanly as Ctrl-C); the
    previous handler is restored on exit. Outside the main thread signals cannot be handled: no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class RunSession:
    """`with RunSession(...) as session:` runs folds into `session.record`; on exit the record is final.
    With `publish` off, a run that completes is not written or stored (a torchrun rank: rank 0 writes the
    merged record); one that fails is, whatever `publish` says."""

    def __init__(self, record: RunRecord, task: Task, journal_path: Path, resume: bool, device: torch.device,
                 out: Path, warmup: int, images_decoded: Callable[[], int], wait: bool = False,
                 publish: bool = True) -> None:
        self.publish = publish
        self.record, self.task, self.out = record, task, Path(out)
        self.journal_path, self.resume, self.wait, self.device = journal_path, resume, wait, device
        self.warmup, self.images_decoded = warmup, images_decoded
        self.path: Path | None = None
        self._units_this_process = 0
        self._signals = sigterm_interrupts()

    def __enter__(self) -> RunSession:
        self._lock = lock_journal(self.journal_path, self.wait)
        try:
            if not self.resume and self.journal_path.exists():
                aside = move_aside(self.journal_path, "old")
                warnings.warn(f"--no-resume: this run starts over; its previous journal is now {aside}", RunWarning)
            self.journal = Journal(self.journal_path)
        except BaseException:
            self._lock.close()
            raise
        record, journal = self.record, self.journal
        record.run_id = journal.meta("run_id") or record.run_id
        record.started_at = journal.meta("started_at") or record.started_at
        journal.set_meta("run_id", record.run_id)
        journal.set_meta("started_at", record.started_at)
        record.journal = str(journal.path)
        record.resumed_episodes = len(journal.latencies())
        self.memory = MemoryProbe(self.device)
        self._started = (time.process_time(), now())
        self._signals.__enter__()
        return self

    def is_warmup(self) -> bool:
        """Whether the next unit this process scores is a warm-up one (left out of timing statistics)."""
        self._units_this_process += 1
        return self._units_this_process <= self.warmup

    def __exit__(self, exc_type, exc, traceback) -> bool:
        try:
            if exc is None:
                self.record.status = "partial" if self.record.shard else "complete"
            else:
                interrupted = isinstance(exc, KeyboardInterrupt)
                self.record.status = "interrupted" if interrupted else "failed"
                self.record.error = RunError(type=exc_type.__name__, message=str(exc) or exc_type.__name__)
            self.path = self._finish()
        finally:
            self.journal.close()
            self._lock.close()
            self._signals.__exit__(None, None, None)
        if isinstance(exc, FssbenchError):
            raise type(exc)(f"{exc}\n(the {self.record.timing.warmup_episodes + self.record.timing.timed_episodes} "
                            f"units scored so far are journaled and the record is in {self.path}; run the same "
                            "command again to resume)") from None
        if exc is not None and not isinstance(exc, KeyboardInterrupt) and hasattr(exc, "add_note"):
            exc.add_note(f"the run record ({self.record.status}) is in {self.path}")
        return False

    def _finish(self) -> Path | None:
        """Complete the record from the journal (all sessions), write it and add it to the store (or warn)."""
        record, journal = self.record, self.journal
        record.metrics = self.task.summarize(record.results)
        peak = max(self.memory.read(), journal.meta("memory") or {"peak_memory_mb": 0},
                   key=lambda memory: memory["peak_memory_mb"])
        journal.set_meta("memory", peak)
        record.timing = Timing(**latency_summary(journal.latencies()), memory=peak,
                               images_decoded=self.images_decoded())
        cpu_s, gpu_s = time.process_time() - self._started[0], now() - self._started[1]
        spent = journal.meta("cost") or {"cpu_s": 0.0, "gpu_s": 0.0}
        spent = {"cpu_s": spent["cpu_s"] + cpu_s, "gpu_s": spent["gpu_s"] + gpu_s}
        journal.set_meta("cost", spent)
        record.cost = Cost(cpu_s=spent["cpu_s"], gpu_s=spent["gpu_s"] if self.device.type == "cuda" else None)
        record.finished_at = utc_now()
        record.environment = record.environment.model_copy(update={"load_at_end": machine_load()})
        if not self.publish and record.status in ("complete", "partial"):
            return None
        return publish_record(record, journal.units(), self.out)


def publish_record(record: RunRecord, units, out: Path) -> Path:
    """Write the record under `out` and add it, with its units, to the store there (or warn)."""
    path = write_record(record, out)
    try:
        with ResultsStore(Path(out) / STORE_NAME) as store:
            store.save(record, units)
    except StoreError as exc:
        warnings.warn(f"the run record {path} is written, but not added to the results store: {exc}", RunWarning)
    return path
