"""The run record: everything needed to reproduce and compare a result, as one typed, versioned model.

The session builds it (`new_record`), tasks add their fold sections, and it is written as JSON under
`<out>/runs/`. Everything downstream (journal identity, store, console, leaderboard, compare,
upgrade) reads its fields. `read_record` validates a file and names the field that is wrong;
schema-1 records (fssbench before the typed record) are converted on read. The JSON Schema is
checked in at docs/run-record.schema.json (tests/test_record.py fails when it is stale).

A written record is sealed: `sha256` is the hash of its canonical content (reports/integrity.py checks
it, and the metrics against the record's own counts, before a report believes a record).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import secrets
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

import fssbench
from fssbench.harness.errors import UsageError
from fssbench.harness.files import atomic_write_text

if TYPE_CHECKING:  # reading records (runs, leaderboard, compare) imports no torch
    import torch

RECORD_SCHEMA = 2
Interval = tuple[float, float]


class Model(BaseModel):
    # NaN stays NaN in the JSON (a GFSS group without a scored class is nan, as DIaM's division gives)
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants", validate_assignment=True)


class MetricValue(Model):
    """A metric the run's task declares, with its value (mean over folds) and 95% bootstrap interval."""

    name: str
    label: str
    higher_is_better: bool = True
    value: float | None = None
    ci95: Interval | None = None


class FssFoldResult(Model):
    task: Literal["fss"] = "fss"
    fold: int
    manifest_sha256: str
    episodes: int
    metrics: dict[str, float]  # miou, fbiou (x100)
    miou_ci95: Interval | None = None
    per_class_iou: dict[int, float]
    class_names: dict[int, str]
    episode_scores: list[tuple[int, int, int, int, int, int]]  # index, class id, I_bg, I_fg, U_bg, U_fg


class GfssRunResult(Model):
    run: int
    queries: int
    base: float
    novel: float
    mean: float
    harmonic: float


class GfssFoldResult(Model):
    task: Literal["gfss"] = "gfss"
    fold: int
    manifest_sha256: str
    episodes: int
    metrics: dict[str, float]  # miou (the mean of base and novel), base, novel, harmonic (x100)
    base_classes: int | None  # label indices 1..base_classes are base, the rest novel (None: schema 1)
    runs: list[GfssRunResult]
    adapt_ms: dict[int, float]
    label_names: list[str]
    confusion: dict[int, list[list[int]]]  # run -> summed confusion matrix (truth x prediction)
    query_confusions: list[tuple[int, int, list[tuple[int, int, int]]]]  # run, query index, sparse cells


FoldResult = Annotated[Union[FssFoldResult, GfssFoldResult], Field(discriminator="task")]


class PhaseStats(Model):
    median: float | None
    iqr: float | None
    p95: float | None


class Memory(Model):
    kind: str
    peak_memory_mb: float
    peak_allocated_mb: float | None = None
    peak_reserved_mb: float | None = None


class Timing(Model):
    warmup_episodes: int
    timed_episodes: int
    data_ms: PhaseStats
    compute_ms: PhaseStats
    scoring_ms: PhaseStats
    episodes_per_s: float | None
    s_per_episode: float | None
    memory: Memory
    images_decoded: int = 0

    @property
    def compute_ms_median(self) -> float | None:
        return self.compute_ms.median

    @property
    def peak_memory_mb(self) -> float:
        return self.memory.peak_memory_mb


class Loading(Model):
    """How episodes were loaded: the decode cache's budget and use, the prefetch depth, the method's threads."""

    cache_budget_mb: int
    cache_peak_mb: float
    cache_hits: int
    cache_evictions: int
    prefetch: int  # batches loaded ahead on background threads (0: loaded when reached)
    threads: int | None = None  # --threads (the count in effect is environment.torch_threads)


class LoadAverage(Model):
    """The system's load averages (runnable processes, os.getloadavg) at one moment."""

    one_minute: float
    five_minutes: float
    fifteen_minutes: float


class Environment(Model):
    fssbench: str
    git_sha: str | None
    python: str
    platform: str
    torch: str
    numpy: str
    pillow: str
    cuda: str | None
    cudnn: int | None
    device: str
    device_name: str
    torch_threads: int
    cudnn_benchmark: bool
    tf32_matmul: bool
    tf32_cudnn: bool
    packages: dict[str, str | None] = {}
    cpu_count: int | None = None  # logical CPUs (None: not recorded, a record before fssbench recorded it)
    load_at_start: LoadAverage | None = None  # when this process started the run (None: not recorded)
    load_at_end: LoadAverage | None = None  # when the run finished (RunSession sets it with finished_at)


class DatasetInfo(Model):
    name: str
    root: str
    fingerprint: dict[str, str] = {}  # facts identifying the data (content hash, mask source, ...)


class RunError(Model):
    type: str
    message: str


class Cost(Model):
    """What a run's episode loop used, summed over its sessions (resumes) and its ranks or shards (adapter
    setup is `setup_s`, apart; a session killed with SIGKILL adds nothing)."""

    cpu_s: float  # CPU time (user + system) of the processes that ran it
    gpu_s: float | None = None  # wall-clock seconds it held each of its GPUs, summed; None on CPU


class RankInfo(Model):
    """One rank (torchrun) or shard (--shard) of a merged run."""

    shard: int
    run_id: str  # the rank's own run id, as its journal knows it
    host: str | None = None  # known for torchrun ranks
    device: str
    device_name: str
    units: int  # episodes (GFSS: queries) it scored
    episodes_per_s: float | None  # its throughput over its timed units
    cost: Cost | None = None


# partial: one shard of a run (`--shard I/N`), complete once merged with the others (`fssbench merge`)
Status = Literal["running", "complete", "partial", "failed", "interrupted"]


class RunRecord(Model):
    schema_version: Literal[2] = RECORD_SCHEMA
    run_id: str
    status: Status = "running"
    method: str
    variant: str = ""  # the options changed from the method's defaults, e.g. "qsm=off"
    backbone: str | None = None
    options: dict[str, bool | int | float | str] = {}
    setup_s: float | None = None
    weights: dict[str, str] | Literal["random-init"] = {}  # sha256 per weight file
    code: dict[str, str] = {}  # what computed the predictions: fssbench's version, the adapter's source hash
    batch_size: int = 1
    timing_only: bool = False
    protocol: str
    protocol_version: int
    protocol_sha256: str
    task: str
    dataset: DatasetInfo
    shot: int
    seed: int
    folds: list[int]
    evaluation_resolution: str
    resolution_override: int | None = None
    support_annotation: str
    episodes_cap: int | None = None
    warmup: int = 2
    shard: str | None = None  # "I/N" on a partial record: this run scored shard I of N of each fold
    world_size: int = 1  # ranks or shards merged into this record (their facts in `ranks`)
    ranks: list[RankInfo] = []
    cost: Cost | None = None
    results: list[FoldResult] = []
    metrics: list[MetricValue] = []
    timing: Timing | None = None
    loading: Loading | None = None
    environment: Environment
    command: list[str] = []
    journal: str | None = None
    resumed_episodes: int = 0
    predictions: str | None = None  # folder of the saved prediction PNGs, relative to the results folder; None: not saved
    method_report: dict[str, Any] = {}  # Adapter.report(): method-specific facts (e.g. AlignDiff's synthetic set)
    started_at: str
    finished_at: str | None = None
    error: RunError | None = None
    sha256: str | None = None  # content_sha256() when written; None: unsealed (schema 1, or an older file)

    def content_sha256(self) -> str:
        """The sha256 of the record's canonical JSON (sorted keys, no spaces), its own `sha256` left out."""
        content = self.model_dump(mode="json", exclude={"sha256"})
        return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def sealed(self) -> RunRecord:
        """A copy carrying the hash of its content."""
        return self.model_copy(update={"sha256": self.content_sha256()})

    def metric(self, name: str) -> MetricValue | None:
        return next((metric for metric in self.metrics if metric.name == name), None)

    @property
    def primary(self) -> MetricValue | None:
        """The first metric the task declares (mIoU for FSS, the mean of base and novel for GFSS)."""
        return self.metrics[0] if self.metrics else None

    @property
    def mean_miou(self) -> float | None:
        return self.primary.value if self.primary else None

    def manifests(self) -> dict[int, str]:
        return {result.fold: result.manifest_sha256 for result in self.results}

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def json_schema() -> str:
    """The record's JSON Schema as checked in at docs/run-record.schema.json."""
    return json.dumps(RunRecord.model_json_schema(mode="serialization"), indent=2, sort_keys=True) + "\n"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id(method: str, protocol: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{method}-{protocol}-{secrets.token_hex(3)}"


def _git_sha() -> str | None:
    source = Path(fssbench.__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions() -> dict[str, str | None]:
    """Installed versions of fssbench's own dependencies (extras left out), None where one is missing."""
    def installed(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    try:
        requirements = metadata.requires("fssbench") or []
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return {}
    names = sorted({re.split(r"[\s<>=!~;\[(]", line, maxsplit=1)[0] for line in requirements if "extra ==" not in line})
    return {name: installed(name) for name in names}


def machine_load() -> LoadAverage | None:
    """The load averages now, None where the system has none (Windows)."""
    try:
        return LoadAverage(**dict(zip(LoadAverage.model_fields, os.getloadavg())))
    except (AttributeError, OSError):  # no os.getloadavg on Windows; OSError where it cannot be read
        return None


def environment(device: torch.device) -> Environment:
    import numpy as np
    import PIL
    import torch

    on_cuda = device.type == "cuda"
    return Environment(
        fssbench=fssbench.__version__,
        git_sha=_git_sha(),
        python=platform.python_version(),
        platform=platform.platform(),
        torch=torch.__version__,
        numpy=np.__version__,
        pillow=PIL.__version__,
        cuda=torch.version.cuda if on_cuda else None,
        cudnn=torch.backends.cudnn.version() if on_cuda else None,
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if on_cuda else _cpu_name(),
        torch_threads=torch.get_num_threads(),
        cudnn_benchmark=torch.backends.cudnn.benchmark,
        tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        tf32_cudnn=torch.backends.cudnn.allow_tf32,
        packages=package_versions(),
        cpu_count=os.cpu_count(),
        load_at_start=machine_load(),
    )


def write_record(record: RunRecord, out_dir: Path) -> Path:
    """Seal `record` (set its sha256, so what the caller stores or prints next carries it too) and write it
    atomically to <out>/runs/<run_id>.json, so a crash never leaves half a record."""
    record.sha256 = record.content_sha256()
    path = Path(out_dir) / "runs" / f"{record.run_id}.json"
    atomic_write_text(path, record.to_json())
    return path


def parse_record(data: Any, source: str) -> RunRecord:
    """A record from its JSON value, validated; `source` names the file (or run) in errors."""
    if isinstance(data, dict) and data.get("schema") == 1:
        data = _from_schema_1(data)
    try:
        return RunRecord.model_validate(data)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise UsageError(f"{source} is not a valid fssbench run record: field {field}: {problem['msg']}{more}") from None


def read_record(path: Path) -> RunRecord:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read run record {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path} is not a run record (invalid JSON: {exc})") from None
    return parse_record(data, str(path))


def _from_schema_1(old: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 record (before the typed record) in today's layout. Its GFSS records lack the
    per-query confusions that paired comparisons need; those folds carry none."""
    if old.get("task") not in ("fss", "gfss"):
        raise UsageError(f"run record {old.get('run_id')} (schema 1) has no task; re-run it with this fssbench")
    new = {key: value for key, value in old.items()
           if key in RunRecord.model_fields and key not in ("results", "metrics", "timing", "dataset", "error")}
    new["schema_version"] = RECORD_SCHEMA
    dataset = dict(old["dataset"])
    new["dataset"] = {"name": dataset.pop("name"), "root": dataset.pop("root"),
                      "fingerprint": {key: str(value) for key, value in dataset.items()}}
    new["weights"] = old.get("weights") or {}
    new["options"] = old.get("options") or {}
    new["variant"] = old.get("variant") or ""
    if old.get("error"):
        new["error"] = {"type": "Error", "message": old["error"]}
    if old.get("timing"):
        new["timing"] = {key: value for key, value in old["timing"].items()
                         if key not in ("compute_ms_median", "peak_memory_mb")}
    if old["task"] == "gfss":
        new["results"] = [{"task": "gfss", "fold": r["fold"], "manifest_sha256": r["manifest_sha256"], "base_classes": None,
                           "episodes": r["episodes"], "runs": r["runs"], "adapt_ms": r["adapt_ms"],
                           "label_names": r["label_names"], "confusion": r["confusion"], "query_confusions": [],
                           "metrics": {"miou": r["mean_miou"], "base": r["base_miou"], "novel": r["novel_miou"],
                                       "harmonic": r["harmonic_miou"]}} for r in old["results"]]
        scores = old.get("gfss") or {}
        new["metrics"] = [{"name": name, "label": label, "value": scores.get(key)}
                          for name, label, key in (("miou", "mean", "mean"), ("base", "base", "base"),
                                                   ("novel", "novel", "novel"), ("harmonic", "harmonic", "harmonic"))]
    else:
        new["results"] = [{"task": "fss", "fold": r["fold"], "manifest_sha256": r["manifest_sha256"],
                           "episodes": r["episodes"], "metrics": {"miou": r["miou"], "fbiou": r["fbiou"]},
                           "miou_ci95": r.get("miou_ci95"), "per_class_iou": r["per_class_iou"],
                           "class_names": r["class_names"], "episode_scores": r["episode_scores"]}
                          for r in old["results"]]
        new["metrics"] = [{"name": "miou", "label": "mIoU", "value": old.get("mean_miou"),
                           "ci95": old.get("mean_miou_ci95")},
                          {"name": "fbiou", "label": "FB-IoU", "value": old.get("mean_fbiou")}]
    return new
