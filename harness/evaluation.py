"""One `fssbench eval`: resolve method and protocol, build manifests, run every fold, write the record."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from fssbench import registry
from fssbench.harness.contract import Adapter, SetupContext
from fssbench.harness.cache import cache_dir
from fssbench.harness.datasets import DatasetReader
from fssbench.harness.episodes import GfssManifest, Manifest, build_manifest
from fssbench.harness.errors import FssbenchError, UsageError
from fssbench.harness.gfss import label_space, run_gfss_fold
from fssbench.harness.gfss_metrics import GfssRunState, average_over_runs, harmonic
from fssbench.harness.journal import Journal, run_key
from fssbench.harness.loading import EpisodeLoader
from fssbench.harness.metrics import FssMetricState
from fssbench.harness.options import changed_options, describe_options, resolve_backbone, resolve_options
from fssbench.harness.record import RECORD_SCHEMA, environment, new_run_id, utc_now, write_record
from fssbench.harness.runner import run_fold
from fssbench.harness.specs import ProtocolSpec, Resolution
from fssbench.harness.statistics import bootstrap_interval
from fssbench.harness.store import STORE_NAME, ResultsStore
from fssbench.harness.timing import MemoryProbe, latency_summary, now
from fssbench.harness.weights import parse_weight_flags, resolve_weights, sha256_of_path


@dataclass
class EvalRequest:
    method: str
    protocol: str
    fold: str = "all"
    data_root: Path | None = None
    out: Path = Path("fssbench-results")
    device: str = "auto"
    seed: int | None = None
    episodes: int | None = None
    weights: list[str] = field(default_factory=list)
    random_init: bool = False
    warmup: int = 2
    resume: bool = True
    eval_size: int | None = None
    original_resolution: bool = False
    options: list[str] = field(default_factory=list)  # NAME=VALUE
    backbone: str | None = None
    batch_size: int = 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UsageError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}); "
                         "use --device cpu")
    return torch.device(name)


def resolve_folds(spec: ProtocolSpec, fold: str) -> list[int]:
    if fold == "all":
        return list(spec.folds)
    if not fold.isdigit() or int(fold) not in spec.folds:
        raise UsageError(f"--fold {fold!r}: protocol {spec.name!r} has folds "
                         f"{', '.join(map(str, spec.folds))} (or 'all')")
    return [int(fold)]


def data_root_from(flag: Path | None) -> Path | None:
    if flag is not None:
        return flag
    env = os.environ.get("FSSBENCH_DATA")
    return Path(env).expanduser() if env else None


def open_reader(spec: ProtocolSpec, data_root: Path | None) -> DatasetReader:
    reader_class: type[DatasetReader] = registry.datasets.get(spec.dataset)
    return reader_class.open(data_root)


def protocol_manifests(spec: ProtocolSpec, reader: DatasetReader, folds: list[int], seed: int,
                       cap: int | None) -> dict[int, Manifest]:
    sampler = registry.samplers.get(spec.sampler["name"])
    manifests = {fold: build_manifest(spec, reader, sampler, fold, seed, cache_dir()) for fold in folds}
    return {fold: manifest.head(cap) for fold, manifest in manifests.items()} if cap else manifests


def check_compatible(method: str, adapter_class: type[Adapter], spec: ProtocolSpec) -> None:
    if spec.task not in adapter_class.tasks:
        raise UsageError(f"method {method!r} does not do task {spec.task!r} of protocol {spec.name!r} "
                         f"(it does: {', '.join(sorted(adapter_class.tasks))})")
    if spec.support not in adapter_class.support_annotations:
        raise UsageError(f"method {method!r} does not accept {spec.support!r} support annotations of protocol "
                         f"{spec.name!r} (it accepts: {', '.join(sorted(adapter_class.support_annotations))})")


def evaluate(request: EvalRequest, on_progress: Callable[..., Any] | None = None) -> tuple[dict[str, Any], Path]:
    """Run (or resume) the request; return the run record and where it was written.

    Every scored episode is journaled under <out>/journals before the next starts; running the same
    request again resumes from the journal unless `resume` is off. `on_progress(fold, total, done)`
    returns a callback that receives the fold's episodes done and running mIoU after each episode.
    On an error or an interrupt the record is written with status "failed" or "interrupted" before it
    propagates.
    """
    spec = registry.protocols.get(request.protocol)
    if request.eval_size is not None:
        spec = replace(spec, resolution=Resolution(spec.resolution.mode, request.eval_size))
    if request.original_resolution and spec.task == "gfss":
        raise UsageError(f"--original-resolution applies to FSS protocols; {spec.name!r} scores at its "
                         f"{spec.resolution.describe()} canvas as DIaM does")
    adapter_class: type[Adapter] = registry.methods.get(request.method)
    check_compatible(request.method, adapter_class, spec)
    weights = resolve_weights(request.method, adapter_class, parse_weight_flags(request.weights), request.random_init)
    options = resolve_options(request.method, adapter_class, request.options)
    backbone = resolve_backbone(request.method, adapter_class, request.backbone)
    device = resolve_device(request.device)
    folds = resolve_folds(spec, request.fold)
    seed = spec.seed if request.seed is None else request.seed
    reader = open_reader(spec, data_root_from(request.data_root))
    manifests = protocol_manifests(spec, reader, folds, seed, request.episodes)

    adapter = adapter_class(options, backbone)
    setup_started = now()
    adapter.setup(SetupContext(device=device, weights=weights, random_init=request.random_init, shot=spec.shot,
                               resolution=spec.resolution.size, seed=seed, class_names=reader.class_names))
    setup_s = now() - setup_started
    weight_hashes = "random-init" if request.random_init else {
        name: sha256_of_path(path) for name, path in {**adapter.packaged_weights(), **weights}.items()}
    record = _new_record(request, spec, reader, seed, folds, device)
    record.update(backbone=adapter.backbone, weights=weight_hashes, options=options, setup_s=setup_s,
                  variant=describe_options(changed_options(adapter_class, options)))
    identity = {key: record[key] for key in ("method", "backbone", "weights", "options", "protocol_sha256", "dataset",
                                             "seed", "folds", "episodes_cap", "evaluation_resolution")}
    journal = _open_journal(request, {**identity, "device": device.type})
    record["run_id"] = journal.meta("run_id") or record["run_id"]
    record["started_at"] = journal.meta("started_at") or record["started_at"]
    journal.set_meta("run_id", record["run_id"])
    journal.set_meta("started_at", record["started_at"])
    record["journal"] = str(journal.path)
    record["resumed_episodes"] = len(journal.latencies())

    loader = EpisodeLoader(reader, spec.resolution.size, spec.support, seed, request.original_resolution,
                           spec.resolution.mode)
    memory = MemoryProbe(device)
    session_episodes = 0

    def warmup() -> bool:
        nonlocal session_episodes
        session_episodes += 1
        return session_episodes <= request.warmup

    try:
        for fold in folds:
            manifest = manifests[fold]
            journal.bind_manifest(fold, manifest.sha256)
            run = _run_gfss_fold if spec.task == "gfss" else _run_fss_fold
            record["results"].append(run(request, adapter, loader, reader, manifest, journal, device, warmup,
                                         on_progress))
    except (FssbenchError, KeyboardInterrupt) as exc:
        record["status"] = "failed" if isinstance(exc, FssbenchError) else "interrupted"
        record["error"] = str(exc) or "interrupted"
        journaled = len(journal.latencies())
        path = _finish(record, journal, memory, loader, request.out)
        if isinstance(exc, FssbenchError):
            raise type(exc)(f"{exc}\n(the {journaled} episodes scored so far are journaled and the record is in "
                            f"{path}; run the same command again to resume)") from None
        raise
    except BaseException:
        journal.close()
        raise
    record["status"] = "complete"
    return record, _finish(record, journal, memory, loader, request.out)


def _run_fss_fold(request: EvalRequest, adapter: Adapter, loader: EpisodeLoader, reader: DatasetReader,
                  manifest: Manifest, journal: Journal, device: torch.device, warmup: Callable[[], bool],
                  on_progress: Callable[..., Any] | None) -> dict[str, Any]:
    fold = manifest.episodes[0].fold
    state = FssMetricState.from_records(reader.fold_classes(fold), [e.score for e in journal.episodes(fold)])
    done = {score.index for score in state.records}
    progress = on_progress(fold, len(manifest), len(done)) if on_progress else (lambda done, miou: None)

    def on_scored(episode, score, milliseconds):
        journal.add(fold, score, milliseconds, warmup=warmup())
        state.update(score)
        progress(len(state.records), state.miou())

    remaining = [episode for episode in manifest.episodes if episode.index not in done]
    run_fold(request.method, adapter, loader, remaining, reader.class_names, device, on_scored, request.batch_size)
    return _fold_result(fold, manifest, state, reader.class_names)


def _run_gfss_fold(request: EvalRequest, adapter: Adapter, loader: EpisodeLoader, reader: DatasetReader,
                   manifest: GfssManifest, journal: Journal, device: torch.device, warmup: Callable[[], bool],
                   on_progress: Callable[..., Any] | None) -> dict[str, Any]:
    fold = manifest.runs[0].fold
    space = label_space(reader, fold)
    states = {run.run: GfssRunState(len(space.base), len(space.novel)) for run in manifest.runs}
    journaled = journal.gfss_queries(fold)
    for (run, _), cells in journaled.items():
        states[run].update(cells)
    progress = on_progress(fold, len(manifest), len(journaled)) if on_progress else (lambda done, miou: None)
    adapt_ms = journal.meta(f"adapt_ms_fold{fold}") or {}

    def on_adapted(run, milliseconds):
        adapt_ms[str(run.run)] = milliseconds
        journal.set_meta(f"adapt_ms_fold{fold}", adapt_ms)

    def on_scored(run, index, cells, milliseconds):
        journal.add_gfss(fold, run.run, index, cells, milliseconds, warmup=warmup())
        states[run.run].update(cells)
        progress(sum(state.queries for state in states.values()), states[run.run].scores()["mean"])

    run_gfss_fold(request.method, adapter, loader, manifest.runs, space, set(journaled), device, on_adapted,
                  on_scored, request.batch_size)
    runs = [{"run": run, "queries": state.queries, **state.scores()} for run, state in states.items()]
    average = average_over_runs(runs)
    return {
        "fold": fold,
        "miou": average["mean"],
        "fbiou": None,
        **{f"{key}_miou": value for key, value in average.items()},
        "episodes": len(manifest),
        "manifest_sha256": manifest.sha256,
        "runs": runs,
        "adapt_ms": adapt_ms,
        "label_names": space.names,
        "confusion": {str(run): state.confusion.tolist() for run, state in states.items()},
    }


def _open_journal(request: EvalRequest, identity: dict[str, Any]) -> Journal:
    path = Path(request.out) / "journals" / f"{request.method}-{request.protocol}-{run_key(identity)}.sqlite"
    if not request.resume:
        for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            stale.unlink(missing_ok=True)
    return Journal(path)


def _new_record(request: EvalRequest, spec: ProtocolSpec, reader: DatasetReader, seed: int, folds: list[int],
                device: torch.device) -> dict[str, Any]:
    return {
        "schema": RECORD_SCHEMA,
        "run_id": new_run_id(request.method, spec.name),
        "status": "running",
        "method": request.method,
        "backbone": None,
        "options": None,
        "variant": "",
        "setup_s": None,
        "weights": None,
        "batch_size": request.batch_size,
        "timing_only": request.random_init,
        "protocol": spec.name,
        "protocol_version": spec.version,
        "protocol_sha256": spec.sha256,
        "task": spec.task,
        "dataset": {"name": spec.dataset, "root": str(reader.root), **reader.fingerprint()},
        "shot": spec.shot,
        "seed": seed,
        "folds": folds,
        "evaluation_resolution": (f"original (inputs {spec.resolution.describe()})" if request.original_resolution
                                  else spec.resolution.describe()),
        "resolution_override": request.eval_size,
        "support_annotation": spec.support,
        "episodes_cap": request.episodes,
        "warmup": request.warmup,
        "results": [],
        "mean_miou": None,
        "mean_fbiou": None,
        "timing": None,
        "environment": environment(device),
        "command": sys.argv,
        "started_at": utc_now(),
        "finished_at": None,
        "error": None,
    }


def _fold_result(fold: int, manifest: Manifest, state: FssMetricState, class_names: list[str]) -> dict[str, Any]:
    return {
        "fold": fold,
        "miou": state.miou(),
        "fbiou": state.fbiou(),
        "episodes": len(state.records),
        "manifest_sha256": manifest.sha256,
        "per_class_iou": {str(class_id): iou for class_id, iou in state.per_class_iou().items()},
        "class_names": {str(class_id): class_names[class_id] for class_id in state.class_ids},
        "episode_scores": [[s.index, s.class_id, *s.inter, *s.union] for s in state.records],
    }


def _finish(record: dict[str, Any], journal: Journal, memory: MemoryProbe, loader: EpisodeLoader,
            out: Path) -> Path:
    """Complete the record from the journal (all sessions), write it and add it to the store."""
    results = record["results"]
    if results:
        record["mean_miou"] = sum(r["miou"] for r in results) / len(results)
    if results and record["task"] == "gfss":
        record["gfss"] = {key: sum(r[f"{key}_miou"] for r in results) / len(results)
                          for key in ("base", "novel", "mean")}
        record["gfss"]["harmonic"] = harmonic(record["gfss"]["base"], record["gfss"]["novel"])
    elif results:
        record["mean_fbiou"] = sum(r["fbiou"] for r in results) / len(results)
        for result in results:
            result["miou_ci95"] = list(bootstrap_interval([_fold_of(result)]))
        record["mean_miou_ci95"] = list(bootstrap_interval([_fold_of(result) for result in results]))
    episodes = journal.episodes()
    peak = max(memory.read(), journal.meta("memory") or {"peak_memory_mb": 0}, key=lambda m: m["peak_memory_mb"])
    journal.set_meta("memory", peak)
    record["timing"] = {**latency_summary(journal.latencies()), "memory": peak,
                        "peak_memory_mb": peak["peak_memory_mb"], "images_decoded": loader.decoded}
    record["finished_at"] = utc_now()
    path = write_record(record, out)
    with ResultsStore(Path(out) / STORE_NAME) as store:
        store.save(record, episodes)
    journal.close()
    return path


def _fold_of(result: dict[str, Any]):
    return tuple(int(c) for c in result["per_class_iou"]), result["episode_scores"]
