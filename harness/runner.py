"""The one episode loop: every task's folds run through it (see task.py for what a task supplies).

Per batch of work units: load (timed as data: with prefetching, the time the loop waited for the
batch, which background threads load while the adapter runs the batches before it), call the adapter
under inference mode with the device synchronized around it (timed as compute), check and score
(timed as scoring), then journal each unit before the next batch starts. A batch's times are shared
equally by its units. Units already in the journal are restored into the fold's state and not
recomputed (nor loaded); the units still to run, of every fold, are announced before the first batch
loads (`restore`), so loading keeps exactly the images they share.
"""

from __future__ import annotations

from typing import Callable

import torch

from fssbench.harness.journal import Journal
from fssbench.harness.prefetch import Prefetcher
from fssbench.harness.task import FoldRun
from fssbench.harness.timing import now, synchronize

Progress = Callable[[int, float | None], None]  # (units done, running headline metric)


def restore(fold: int, run: FoldRun, journal: Journal) -> None:
    """Put the fold's journaled units into its state, then announce the units still to run (`expect`);
    a run restores every fold before the first one runs, so loading knows every fold's uses."""
    for unit in journal.units(fold):
        run.update(unit.unit, unit.payload)
    done = run.done()
    run.expect([unit for group in run.groups() for unit in group.units if run.key(unit) not in done])


def run_fold(fold: int, run: FoldRun, journal: Journal, device: torch.device, batch_size: int,
             is_warmup: Callable[[], bool], progress: Progress, prefetch: int = 0) -> dict[str, float]:
    """Run one restored fold (`restore`) to its end; return the journaled preparation times
    (milliseconds by group name)."""
    done = run.done()
    preparation_ms: dict[str, float] = {}
    for group in run.groups():
        units = [unit for unit in group.units if run.key(unit) not in done]
        if units and group.prepare is not None:
            synchronize(device)
            started = now()
            group.prepare()
            synchronize(device)
            journal.set_meta(group.name, 1000 * (now() - started))
        if group.name and journal.meta(group.name) is not None:
            preparation_ms[group.name] = journal.meta(group.name)
        chunks = [units[start:start + batch_size] for start in range(0, len(units), batch_size)]
        with Prefetcher(run.load, prefetch) as prefetcher:  # per group: loads start after its preparation
            for chunk, loaded in prefetcher.over(chunks):
                started = now()
                inputs = loaded()
                synchronize(device)
                loaded_at = now()
                with torch.inference_mode():
                    output = run.call(inputs)
                synchronize(device)
                predicted_at = now()
                payloads = run.score(chunk, inputs, output)
                share = 1000 / len(chunk)
                milliseconds = tuple(share * t for t in (loaded_at - started, predicted_at - loaded_at,
                                                         now() - predicted_at))
                for unit, payload in zip(chunk, payloads):
                    key = run.key(unit)
                    journal.add(fold, key, payload, milliseconds, warmup=is_warmup())
                    run.update(key, payload)
                    done.add(key)
                progress(len(done), run.running_score())
    return preparation_ms
