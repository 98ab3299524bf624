"""One evaluation run from a resolved plan: set the adapter up, open the session, run every fold
through the task's strategy and the one loop, and hand back the final record.

Names (method, protocol, dataset, sampler, task) are resolved above the core (cli/evaluate.py); this
module only sees the objects they name.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from fssbench.harness.contract import Adapter, OptionValue, SetupContext
from fssbench.harness.datasets import DatasetReader
from fssbench.harness.journal import run_key
from fssbench.harness.loading import EpisodeLoader
from fssbench.harness.options import changed_options, describe_options
from fssbench.harness.provenance import code_identity
from fssbench.harness.record import DatasetInfo, RunRecord, environment, new_run_id, utc_now
from fssbench.harness.runner import run_fold
from fssbench.harness.session import RunSession
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
    original_resolution: bool = False
    resolution_override: int | None = None
    batch_size: int = 1
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
    adapter = plan.adapter_class(plan.options, plan.backbone)
    setup_started = now()
    adapter.setup(SetupContext(device=plan.device, weights=plan.weights, random_init=plan.random_init,
                               shot=spec.shot, resolution=spec.resolution.size, seed=plan.seed,
                               class_names=reader.class_names))
    record = _new_record(plan, adapter, setup_s=now() - setup_started)
    loader = EpisodeLoader(reader, spec.resolution.size, spec.support, plan.seed, plan.original_resolution,
                           spec.resolution.mode)
    journal_path = Path(plan.out) / "journals" / f"{plan.method}-{spec.name}-{run_key(_identity(record, plan))}.sqlite"
    context = FoldContext(plan.method, adapter, loader, reader, plan.device)
    with RunSession(record, plan.task, journal_path, plan.resume, plan.device, plan.out, plan.warmup,
                    lambda: loader.decoded, plan.wait) as session:
        for fold, manifest in plan.manifests.items():
            session.journal.bind_manifest(fold, manifest.sha256)
            fold_run = plan.task.fold_run(context, manifest)
            progress = (on_progress(fold, len(manifest), session.journal.count(fold)) if on_progress
                        else lambda done, score: None)
            preparation = run_fold(fold, fold_run, session.journal, plan.device, plan.batch_size,
                                   session.is_warmup, progress)
            record.results.append(fold_run.result(preparation))
    return session.record, session.path


def _identity(record: RunRecord, plan: RunPlan) -> dict[str, Any]:
    """What determines a run's results: re-running the same identity resumes its journal."""
    fields = ("method", "code", "backbone", "weights", "options", "protocol_sha256", "dataset", "seed", "folds",
              "episodes_cap", "evaluation_resolution")
    return {**record.model_dump(mode="json", include=set(fields)), "device": plan.device.type}


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
        warmup=plan.warmup,
        environment=environment(plan.device),
        command=sys.argv,
        started_at=utc_now(),
    )
