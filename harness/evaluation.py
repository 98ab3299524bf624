"""One evaluation run from a resolved plan: set the adapter up, open the session, run every fold
through the task's strategy and the one loop, and hand back the final record.

Names (method, protocol, dataset, sampler, task) are resolved above the core (cli/evaluate.py); this
module only sees the objects they name.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from fssbench.harness.contract import Adapter, OptionValue, SetupContext
from fssbench.harness.datasets import DatasetReader
from fssbench.harness.journal import run_key
from fssbench.harness.loading import EpisodeLoader
from fssbench.harness.options import changed_options, describe_options
from fssbench.harness.predictions import PredictionWriter, predictions_folder, warn_unsaved
from fssbench.harness.prefetch import DEFAULT_DEPTH
from fssbench.harness.provenance import code_identity
from fssbench.harness.record import DatasetInfo, Loading, RunRecord, environment, new_run_id, utc_now
from fssbench.harness.runner import restore, run_fold
from fssbench.harness.session import RunSession
from fssbench.harness.shards import Shard, merge_ranks, sharded
from fssbench.harness.specs import ProtocolSpec
from fssbench.harness.task import FoldContext, Task
from fssbench.harness.timing import now
from fssbench.harness.weights import sha256_of_path

# on_progress(fold, units in the fold, units already done) -> callback(units done, running score)
OnProgress = Callable[[int, int, int], Callable[[int, float | None], None]]


@dataclass
class RunPlan:
    """Everything one run needs, resolved and checked."""

    method: str
    adapter_class: type[Adapter]
    task: Task
    spec: ProtocolSpec
    reader: DatasetReader
    manifests: dict[int, Any]  # fold -> the task's manifest kind
    device: torch.device
    seed: int
    options: dict[str, OptionValue] = field(default_factory=dict)
    backbone: str | None = None
    weights: dict[str, Path] = field(default_factory=dict)
    random_init: bool = False
    episodes_cap: int | None = None
    warmup: int = 2
    resume: bool = True
    wait: bool = False  # for another process running this run to finish, instead of stopping
    shard: Shard | None = None  # run only this shard of each fold (harness/shards.py)
    distributed: bool = False  # a torchrun rank: its shard's record goes to rank 0, which merges all
    original_resolution: bool = False
    resolution_override: int | None = None
    batch_size: int = 1
    cache_mb: int | None = None  # decode cache budget (None: min(25% of memory, 4096 MB))
    prefetch: int = DEFAULT_DEPTH  # batches loaded ahead on background threads
    threads: int | None = None  # torch.set_num_threads for the run (None: torch's default)
    save_predictions: bool = False  # each episode's scored prediction as a PNG (harness/predictions.py)
    out: Path = Path("fssbench-results")

    @property
    def folds(self) -> list[int]:
        return list(self.manifests)


def run_plan(plan: RunPlan, on_progress: OnProgress | None = None) -> tuple[RunRecord, Path]:
    """Run (or resume) the plan; return the record and where it was written.

    Every scored unit is journaled under <out>/journals before the next batch starts; running the
    same plan again resumes from the journal unless `resume` is off. Whatever stops the run, its record
    is written (status failed or interrupted) before the exception propagates.
    """
    spec, reader = plan.spec, plan.reader
    if plan.threads is not None:
        torch.set_num_threads(plan.threads)
    adapter = plan.adapter_class(plan.options, plan.backbone)
    setup_started = now()
    adapter.setup(SetupContext(device=plan.device, weights=plan.weights, random_init=plan.random_init,
                               shot=spec.shot, resolution=spec.resolution.size, seed=plan.seed,
                               class_names=reader.class_names, reader=reader, folds=tuple(spec.folds)))
    record = _new_record(plan, adapter, setup_s=now() - setup_started)
    loader = EpisodeLoader(reader, spec.resolution.size, spec.support, plan.seed, plan.original_resolution,
                           spec.resolution.mode, plan.cache_mb)
    journal_path = Path(plan.out) / "journals" / f"{plan.method}-{spec.name}-{run_key(run_identity(record))}.sqlite"
    context = FoldContext(plan.method, adapter, loader, reader, plan.device)
    fold_runs, preparations = {}, {}
    with RunSession(record, plan.task, journal_path, plan.resume, plan.device, plan.out, plan.warmup,
                    lambda: loader.decoded, plan.wait, publish=not plan.distributed) as session:
        if plan.save_predictions:  # under the run id the session settled on (a resumed run keeps its own)
            record.predictions = predictions_folder(record.run_id)
            context = replace(context, predictions=PredictionWriter(Path(plan.out) / record.predictions))
        try:
            for fold, manifest in plan.manifests.items():
                session.journal.bind_manifest(fold, manifest.sha256)
                fold_runs[fold] = sharded(plan.task.fold_run(context, manifest), plan.shard)
                restore(fold, fold_runs[fold], session.journal)
            for fold, manifest in plan.manifests.items():
                fold_run = fold_runs[fold]
                progress = (on_progress(fold, len(manifest), session.journal.count(fold)) if on_progress
                            else lambda done, score: None)
                preparation = run_fold(fold, fold_run, session.journal, plan.device, plan.batch_size,
                                       session.is_warmup, progress, plan.prefetch)
                preparations[fold] = preparation
                record.results.append(fold_run.result(preparation))
            if plan.save_predictions:
                warn_unsaved(Path(plan.out) / record.predictions, plan.manifests)
        finally:
            report = adapter.report()  # journaled, so a resumed run that had nothing left to do keeps it
            if report:
                record.method_report = report
                session.journal.set_meta("method_report", record.model_dump(mode="json")["method_report"])
            else:
                record.method_report = session.journal.meta("method_report") or {}
            record.loading = Loading(**loader.cache_statistics(), prefetch=plan.prefetch, threads=plan.threads)
    if plan.distributed:
        return merge_ranks(session.record, fold_runs, preparations, plan.task, plan.out)
    return session.record, session.path


def run_identity(record: RunRecord) -> dict[str, Any]:
    """What determines a run's results: re-running the same identity resumes its journal. A shard's
    includes the shard; a merged run's is its single process's."""
    fields = ("method", "code", "backbone", "weights", "options", "protocol_sha256", "dataset", "seed", "folds",
              "episodes_cap", "evaluation_resolution")
    device = torch.device(record.environment.device).type
    return {**record.model_dump(mode="json", include=set(fields)), "device": device,
            **({"shard": record.shard} if record.shard else {})}


def plan_identity(plan: RunPlan) -> dict[str, Any]:
    """The identity of the run `plan` makes, without setting its adapter up (sweeps skip runs already done)."""
    return run_identity(_new_record(plan, plan.adapter_class(plan.options, plan.backbone), setup_s=0.0))


def _new_record(plan: RunPlan, adapter: Adapter, setup_s: float) -> RunRecord:
    spec, reader = plan.spec, plan.reader
    weights = "random-init" if plan.random_init else {
        name: sha256_of_path(path) for name, path in {**adapter.packaged_weights(), **plan.weights}.items()}
    resolution = spec.resolution.describe()
    return RunRecord(
        run_id=new_run_id(plan.method, spec.name),
        method=plan.method,
        variant=describe_options(changed_options(plan.adapter_class, plan.options)),
        backbone=adapter.backbone,
        options=plan.options,
        setup_s=setup_s,
        weights=weights,
        code=code_identity(plan.adapter_class),
        batch_size=plan.batch_size,
        timing_only=plan.random_init,
        protocol=spec.name,
        protocol_version=spec.version,
        protocol_sha256=spec.sha256,
        task=spec.task,
        dataset=DatasetInfo(name=spec.dataset, root=str(reader.root), fingerprint=reader.fingerprint()),
        shot=spec.shot,
        seed=plan.seed,
        folds=plan.folds,
        evaluation_resolution=f"original (inputs {resolution})" if plan.original_resolution else resolution,
        resolution_override=plan.resolution_override,
        support_annotation=spec.support,
        episodes_cap=plan.episodes_cap,
        shard=str(plan.shard) if plan.shard else None,
        warmup=plan.warmup,
        environment=environment(plan.device),
        command=sys.argv,
        started_at=utc_now(),
    )
