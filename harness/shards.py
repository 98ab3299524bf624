"""Scale-out inside one run: which units a shard runs, and how shards merge into one record.

A run split N ways gives shard I every unit whose position in its fold's manifest order (episodes; GFSS:
the queries of each run, run after run) is I modulo N: a deterministic, disjoint split of the unchanged,
hashed manifest. A GFSS group (a run's supports) is prepared by every shard that has queries in it.
Shards are torchrun ranks of one process group (`torchrun -m fssbench eval ...`: rank 0 merges once
every rank is done) or separate processes (`fssbench eval --shard I/N` writes a partial run; `fssbench
merge` merges them). Merging feeds every shard's journaled payloads into one fold run per fold: metric
states are sums and per-unit records are ordered by unit, so the merged record equals a single
process's bit for bit in every metric field. Timing statistics pool the shards' per-unit samples.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from fssbench.harness.errors import FssbenchError, UsageError
from fssbench.harness.journal import Journal, JournaledUnit
from fssbench.harness.record import Cost, RankInfo, RunRecord, Timing, utc_now
from fssbench.harness.session import publish_record
from fssbench.harness.task import FoldRun, Group, Payload, Task
from fssbench.harness.timing import latency_summary

# a barrier waits for the slowest rank, which may be hours behind on an unbalanced cluster
RANKS_TIMEOUT = timedelta(hours=24)


class IncompatibleShards(FssbenchError):
    """Records that are not shards of one run (or not all of them): exit 3, like incomparable runs."""

    exit_code = 3


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`I/N` with 0 <= I < N."""
        index, slash, count = text.partition("/")
        if not (slash and index.isdigit() and count.isdigit() and int(index) < int(count)):
            raise UsageError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/2 and 1/2")
        return cls(int(index), int(count))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class ShardedFoldRun(FoldRun):
    """A fold run whose groups hold only the shard's units; everything else is the wrapped run's."""

    def __init__(self, run: FoldRun, shard: Shard) -> None:
        self.run, self.shard = run, shard

    def groups(self) -> Iterable[Group]:
        position = 0
        for group in self.run.groups():
            mine = [unit for offset, unit in enumerate(group.units, start=position)
                    if offset % self.shard.count == self.shard.index]
            position += len(group.units)
            yield Group(mine, group.prepare, group.name)

    def key(self, unit: Any) -> str:
        return self.run.key(unit)

    def expect(self, units: list[Any]) -> None:
        self.run.expect(units)

    def load(self, units: list[Any]) -> Any:
        return self.run.load(units)

    def call(self, inputs: Any) -> Any:
        return self.run.call(inputs)

    def score(self, units: list[Any], inputs: Any, output: Any) -> list[Payload]:
        return self.run.score(units, inputs, output)

    def update(self, key: str, payload: Payload) -> None:
        self.run.update(key, payload)

    def done(self) -> set[str]:
        return self.run.done()

    def running_score(self) -> float | None:
        return self.run.running_score()

    def result(self, preparation_ms: dict[str, float]):
        return self.run.result(preparation_ms)


def sharded(run: FoldRun, shard: Shard | None) -> FoldRun:
    return run if shard is None else ShardedFoldRun(run, shard)


@dataclass
class ShardPart:
    """One finished shard: its partial record, its journaled units and its preparation times."""

    record: RunRecord
    units: list[JournaledUnit]
    preparation_ms: dict[int, dict[str, float]] = field(default_factory=dict)  # fold -> group name -> ms
    host: str | None = field(default_factory=socket.gethostname)


# what every shard of one run must share (the run identity, less the shard), as record fields
SHARED_FIELDS = ("method", "code", "backbone", "weights", "options", "timing_only", "protocol", "protocol_sha256",
                 "task", "shot", "seed", "folds", "evaluation_resolution", "resolution_override",
                 "support_annotation", "episodes_cap")


def check_shards(records: list[RunRecord]) -> int:
    """The shard count of `records` when they are all the shards of one run, each once and finished;
    otherwise IncompatibleShards naming the first difference."""
    def name(record: RunRecord) -> str:
        return f"run {record.run_id} (shard {record.shard or 'none'})"

    first = records[0]
    for record in records:
        if record.shard is None:
            raise IncompatibleShards(f"{name(record)} is not a shard: only runs of `fssbench eval --shard I/N` merge")
        if record.status != "partial":
            raise IncompatibleShards(f"{name(record)} is {record.status}: run its command again to finish it, "
                                     "then merge")
    count = Shard.parse(first.shard).count
    for record in records[1:]:
        for key in SHARED_FIELDS:
            if getattr(record, key) != getattr(first, key):
                raise IncompatibleShards(f"{name(record)} and {name(first)} differ in {key}: "
                                         f"{getattr(record, key)!r} vs {getattr(first, key)!r}")
        if (record.dataset.name, record.dataset.fingerprint) != (first.dataset.name, first.dataset.fingerprint):
            raise IncompatibleShards(f"{name(record)} and {name(first)} read different data ({record.dataset.name} "
                                     f"{record.dataset.fingerprint} vs {first.dataset.name} {first.dataset.fingerprint})")
        if record.manifests() != first.manifests():
            raise IncompatibleShards(f"{name(record)} and {name(first)} ran different manifests: "
                                     f"{record.manifests()} vs {first.manifests()}")
        device, first_device = torch.device(record.environment.device).type, torch.device(first.environment.device).type
        if device != first_device:
            raise IncompatibleShards(f"{name(record)} ran on {device} and {name(first)} on {first_device}; shards "
                                     "of one run share a device type (floating point differs between them)")
        if Shard.parse(record.shard).count != count:
            raise IncompatibleShards(f"{name(record)} and {name(first)} split the run differently "
                                     f"({record.shard} vs {first.shard})")
    indices = sorted(Shard.parse(record.shard).index for record in records)
    duplicates = sorted({index for index in indices if indices.count(index) > 1})
    if duplicates:
        runs = [record.run_id for record in records if Shard.parse(record.shard).index in duplicates]
        raise IncompatibleShards(f"shard {duplicates[0]}/{count} is given more than once ({', '.join(runs)})")
    missing = sorted(set(range(count)) - set(indices))
    if missing:
        raise IncompatibleShards(f"shards {', '.join(f'{i}/{count}' for i in missing)} of run {first.method} "
                                 f"{first.protocol} are missing; run them (--shard I/{count}) and merge all {count}")
    return count


def merge_parts(parts: list[ShardPart], fold_runs: dict[int, FoldRun], task: Task, run_id: str) -> RunRecord:
    """The complete record of a run from all its shards. `fold_runs` hold no units yet, or exactly
    those of `parts[0]` (a torchrun rank 0's own fold runs), which then are not fed twice."""
    check_shards([part.record for part in parts])
    parts = sorted(parts, key=lambda part: Shard.parse(part.record.shard).index)
    first = parts[0].record
    for fold, run in fold_runs.items():
        for part in parts:
            for unit in part.units:
                if unit.fold == fold and unit.unit not in run.done():
                    run.update(unit.unit, unit.payload)
    results = [fold_runs[fold].result(parts[0].preparation_ms.get(fold, {})) for fold in first.folds]
    for result in results:
        expected = sum(shard.episodes for part in parts for shard in part.record.results if shard.fold == result.fold)
        if result.episodes != expected:
            raise IncompatibleShards(f"fold {result.fold}: the shards' journals hold {result.episodes} units, their "
                                     f"records {expected}; a journal changed after its shard finished")
    units = [unit for part in parts for unit in part.units]
    memory = max((part.record.timing.memory for part in parts if part.record.timing),
                 key=lambda memory: memory.peak_memory_mb)
    merged = first.model_copy(deep=True)
    merged.run_id, merged.status, merged.shard, merged.journal = run_id, "complete", None, None
    merged.world_size, merged.error = len(parts), None
    merged.results = results
    merged.metrics = task.summarize(results)
    merged.timing = Timing(**latency_summary([(unit.latencies_ms, unit.warmup) for unit in units]), memory=memory,
                           images_decoded=sum(part.record.timing.images_decoded for part in parts if part.record.timing))
    merged.ranks = [rank_info(part) for part in parts]
    merged.cost = total_cost([part.record.cost for part in parts])
    merged.setup_s = max((part.record.setup_s for part in parts if part.record.setup_s is not None), default=None)
    merged.resumed_episodes = sum(part.record.resumed_episodes for part in parts)
    merged.started_at = min(part.record.started_at for part in parts)
    merged.finished_at = utc_now()
    merged.sha256 = None
    return merged


def rank_info(part: ShardPart) -> RankInfo:
    record = part.record
    return RankInfo(shard=Shard.parse(record.shard).index, run_id=record.run_id, host=part.host,
                    device=record.environment.device, device_name=record.environment.device_name,
                    units=len(part.units), episodes_per_s=record.timing.episodes_per_s if record.timing else None,
                    cost=record.cost)


def total_cost(costs: list[Cost | None]) -> Cost | None:
    """The sum of the costs; GPU-seconds only where every one has them."""
    known = [cost for cost in costs if cost is not None]
    if not known:
        return None
    gpu = [cost.gpu_s for cost in known]
    return Cost(cpu_s=sum(cost.cpu_s for cost in known), gpu_s=None if None in gpu else sum(gpu))


# ---- torchrun ranks ----


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun launch."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.world_size)


def torchrun_ranks() -> Ranks | None:
    """The launch torchrun (or any launcher setting RANK, WORLD_SIZE, LOCAL_RANK) made; None for one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    return Ranks(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """A rank's device: cuda:LOCAL_RANK for a CUDA run (one GPU per rank), the CPU otherwise."""
    if device.type != "cuda":
        return device
    if device.index not in (None, ranks.local_rank):
        raise UsageError(f"--device {device} under torchrun: each rank takes cuda:LOCAL_RANK; pass --device cuda")
    return torch.device("cuda", ranks.local_rank)


@contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """torch.distributed initialised from torchrun's environment (NCCL for CUDA ranks, gloo on the CPU),
    destroyed on exit; shards are exchanged through a gloo group either way (they are Python objects)."""
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=RANKS_TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def gather_parts(part: ShardPart) -> list[ShardPart] | None:
    """Every rank's part on rank 0 (None on the others), once every rank has finished its share."""
    import torch.distributed as dist

    group = dist.new_group(backend="gloo", timeout=RANKS_TIMEOUT) if dist.get_backend() != "gloo" else None
    parts: list[ShardPart] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None  # type: ignore
    dist.gather_object(part, parts, dst=0, group=group)
    return parts


def merge_ranks(record: RunRecord, fold_runs: dict[int, FoldRun], preparation_ms: dict[int, dict[str, float]],
                task: Task, out: Path) -> tuple[RunRecord, Path | None]:
    """After this rank's share is done: every rank's part goes to rank 0, which merges them and writes and
    stores the run's record (under rank 0's run id, which its journal keeps across resumes). Other ranks
    get their partial record back and no path: they write nothing."""
    journal = Journal(Path(record.journal))
    try:
        units = journal.units()
    finally:
        journal.close()
    parts = gather_parts(ShardPart(record, units, preparation_ms))
    if parts is None:
        return record, None
    merged = merge_parts(parts, fold_runs, task, record.run_id)
    return merged, publish_record(merged, [unit for part in parts for unit in part.units], out)
