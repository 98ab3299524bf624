"""One `fssbench eval`: resolve method and protocol, build manifests, run every fold, write the record."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from fssbench import registry
from fssbench.adapter import Adapter, SetupContext
from fssbench.cache import cache_dir
from fssbench.datasets import DatasetReader
from fssbench.episodes import Manifest, build_manifest
from fssbench.errors import FssbenchError, UsageError
from fssbench.loading import EpisodeLoader
from fssbench.metrics import FssMetricState
from fssbench.record import RECORD_SCHEMA, environment, new_run_id, utc_now, write_record
from fssbench.runner import run_fold
from fssbench.specs import ProtocolSpec
from fssbench.timing import LatencyLog, MemoryProbe
from fssbench.weights import parse_weight_flags, resolve_weights, sha256_of_path


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
    """Run the request; return the run record and where it was written.

    `on_progress(fold, total)` returns a callback that receives the metric state after each episode.
    On a failure after the run started, the record is written with status "failed" (finished folds
    kept) before the error propagates.
    """
    spec = registry.protocols.get(request.protocol)
    adapter_class: type[Adapter] = registry.methods.get(request.method)
    check_compatible(request.method, adapter_class, spec)
    weights = resolve_weights(request.method, adapter_class, parse_weight_flags(request.weights), request.random_init)
    device = resolve_device(request.device)
    folds = resolve_folds(spec, request.fold)
    seed = spec.seed if request.seed is None else request.seed
    reader = open_reader(spec, data_root_from(request.data_root))
    manifests = protocol_manifests(spec, reader, folds, seed, request.episodes)

    record = _new_record(request, spec, reader, seed, folds, device)
    adapter = adapter_class()
    adapter.setup(SetupContext(device=device, weights=weights, random_init=request.random_init, shot=spec.shot,
                               resolution=spec.resolution.size, seed=seed, class_names=reader.class_names))
    record["backbone"] = adapter.backbone
    record["weights"] = "random-init" if request.random_init else {
        name: sha256_of_path(path) for name, path in {**adapter.packaged_weights(), **weights}.items()}

    loader = EpisodeLoader(reader, spec.resolution.size)
    latencies = LatencyLog(warmup=request.warmup)
    memory = MemoryProbe(device)
    try:
        for fold in folds:
            manifest = manifests[fold]
            classes = reader.fold_classes(fold)
            callback = on_progress(fold, len(manifest)) if on_progress else (lambda state: None)
            state = run_fold(request.method, adapter, loader, manifest, FssMetricState(classes),
                             reader.class_names, device, latencies, callback)
            record["results"].append(_fold_result(fold, manifest, state, reader.class_names))
    except (FssbenchError, KeyboardInterrupt) as exc:
        record["status"] = "failed" if isinstance(exc, FssbenchError) else "interrupted"
        record["error"] = str(exc) or type(exc).__name__
        _finish(record, latencies, memory, loader)
        path = write_record(record, request.out)
        if isinstance(exc, FssbenchError):
            raise type(exc)(f"{exc}\n(results of finished folds were kept in {path})") from None
        raise
    record["status"] = "complete"
    _finish(record, latencies, memory, loader)
    return record, write_record(record, request.out)


def _new_record(request: EvalRequest, spec: ProtocolSpec, reader: DatasetReader, seed: int, folds: list[int],
                device: torch.device) -> dict[str, Any]:
    return {
        "schema": RECORD_SCHEMA,
        "run_id": new_run_id(request.method, spec.name),
        "status": "running",
        "method": request.method,
        "backbone": None,
        "weights": None,
        "timing_only": request.random_init,
        "protocol": spec.name,
        "protocol_version": spec.version,
        "protocol_sha256": spec.sha256,
        "task": spec.task,
        "dataset": {"name": spec.dataset, "root": str(reader.root), **reader.fingerprint()},
        "shot": spec.shot,
        "seed": seed,
        "folds": folds,
        "evaluation_resolution": spec.resolution.describe(),
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


def _finish(record: dict[str, Any], latencies: LatencyLog, memory: MemoryProbe, loader: EpisodeLoader) -> None:
    results = record["results"]
    if results:
        record["mean_miou"] = sum(r["miou"] for r in results) / len(results)
        record["mean_fbiou"] = sum(r["fbiou"] for r in results) / len(results)
    record["timing"] = {**latencies.summary(), "memory": memory.read(), "images_decoded": loader.decoded}
    record["timing"]["peak_memory_mb"] = record["timing"]["memory"]["peak_memory_mb"]
    record["finished_at"] = utc_now()
