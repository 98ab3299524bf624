"""Sweep files: a grid of runs (methods x protocols x folds x seeds x backbones x options) as YAML, with
`include:` as protocol specs have it (the including file's keys win, mappings merged key by key).

Every run of the grid is one `fssbench eval` command line: one per listed fold, or one of all folds
(`folds: all`, the default, which leaderboards read as one row). A run whose identity (the one
its journal is named by) already has a complete record in the store is skipped; the others go to the
executor, and those that fail are retried up to `retries` times (a retry resumes the run's journal).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fssbench import registry
from fssbench.harness.errors import UsageError

EXECUTORS = ("local", "ray", "slurm")
# key -> (accepted types, default); a list key's every item is checked by _check_items
KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "name": ((str,), None),
    "methods": ((list,), None),
    "protocols": ((list,), None),
    "folds": ((list, str), "all"),
    "seeds": ((list,), [None]),
    "backbones": ((list,), [None]),
    "options": ((list,), [{}]),
    "episodes": ((int, type(None)), None),
    "warmup": ((int,), 2),
    "random_init": ((bool,), False),
    "weights": ((dict,), {}),  # method -> [NAME=PATH, ...]
    "device": ((str,), "auto"),
    "data_root": ((str, type(None)), None),
    "out": ((str,), "fssbench-results"),
    "retries": ((int,), 1),
    "local": ((dict,), {}),
    "ray": ((dict,), {}),
    "slurm": ((dict,), {}),
}
EXECUTOR_KEYS = {
    "local": {"concurrency": int, "devices": list},
    "ray": {"address": str, "gpus_per_job": (int, float), "cpus_per_job": (int, float), "num_cpus": int},
    "slurm": {"partition": str, "time_min": int, "gpus_per_job": int, "mem_gb": int, "cpus_per_job": int,
              "array_parallelism": int, "cluster": str},
}


@dataclass
class Job:
    """One run of the grid: its coordinates and its `fssbench eval` command line (without --device)."""

    method: str
    protocol: str
    fold: int | str  # a fold number, or all
    seed: int | None
    backbone: str | None
    options: dict[str, Any]
    argv: list[str]
    status: str = "pending"  # pending, skipped, complete, failed
    attempts: int = 0
    record: Any = None  # the run record (stored or fresh)
    error: str = ""

    @property
    def label(self) -> str:
        parts = [self.method, self.protocol, f"fold {self.fold}" if self.fold != "all" else "all folds"]
        parts += [f"seed {self.seed}"] if self.seed is not None else []
        parts += [self.backbone] if self.backbone else []
        parts += [",".join(f"{k}={v}" for k, v in self.options.items())] if self.options else []
        return " ".join(parts)


@dataclass
class Sweep:
    path: Path
    settings: dict[str, Any]
    jobs: list[Job] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return Path(self.settings["out"])


def load_sweep(path: Path) -> Sweep:
    path = Path(path)
    settings = _resolve(path, ())
    _validate(settings, path)
    settings = {key: settings.get(key, default) for key, (_, default) in KEYS.items()}
    settings["name"] = settings["name"] or path.stem
    return Sweep(path, settings, _grid(settings, path))


def _resolve(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        raise UsageError(f"sweep file {chain[0]}: `include:` cycle {' -> '.join(p.name for p in (*chain, path))}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read sweep file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"sweep file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"sweep file {path} must be a mapping of keys to values")
    parent = data.pop("include", None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not (path.parent / parent).is_file():
        raise UsageError(f"sweep file {path}: key 'include' must name an existing file next to it, got {parent!r}")
    base = _resolve(path.parent / parent, (*chain, path))
    return {**base, **{key: {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict)
                       else value for key, value in data.items()}}


def _validate(settings: dict[str, Any], path: Path) -> None:
    def fail(key: str, problem: str) -> None:
        raise UsageError(f"sweep file {path}: key '{key}' {problem}")

    for key, value in settings.items():
        if key not in KEYS:
            fail(key, f"is not a known key (known: include, {', '.join(KEYS)})")
        kinds = KEYS[key][0]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            fail(key, f"must be {' or '.join(kind.__name__ for kind in kinds)}, got {value!r}")
    for key in ("methods", "protocols"):
        if not settings.get(key) or not all(isinstance(item, str) for item in settings[key]):
            fail(key, "must be a non-empty list of names")
    folds = settings.get("folds", "all")
    if folds != "all" and not (isinstance(folds, list) and folds and all(type(f) is int for f in folds)):
        fail("folds", f"must be 'all' or a list of fold numbers, got {folds!r}")
    if not all(seed is None or type(seed) is int for seed in settings.get("seeds", [None])):
        fail("seeds", "must list integer seeds (null: the protocol's)")
    if not all(isinstance(option, dict) for option in settings.get("options", [{}])):
        fail("options", "must list mappings of option names to values ({} for the defaults)")
    if settings.get("retries", 1) < 0:
        fail("retries", "must be 0 or more")
    for executor, known in EXECUTOR_KEYS.items():
        for key, value in settings.get(executor, {}).items():
            if key not in known:
                fail(f"{executor}.{key}", f"is not a known key (known: {', '.join(known)})")
            if not isinstance(value, known[key]) or isinstance(value, bool):
                fail(f"{executor}.{key}", f"has the wrong type: {value!r}")


def _grid(settings: dict[str, Any], path: Path) -> list[Job]:
    jobs = []
    for method, protocol in itertools.product(settings["methods"], settings["protocols"]):
        spec = registry.protocols.get(protocol)
        folds = ["all"] if settings["folds"] == "all" else settings["folds"]  # all: one run of every fold
        for fold in settings["folds"] if settings["folds"] != "all" else []:
            if fold not in spec.folds:
                raise UsageError(f"sweep file {path}: protocol {protocol!r} has no fold {fold} (it has "
                                 f"{', '.join(map(str, spec.folds))})")
        for fold, seed, backbone, options in itertools.product(folds, settings["seeds"], settings["backbones"],
                                                               settings["options"]):
            jobs.append(Job(method, protocol, fold, seed, backbone, options,
                            _argv(settings, method, protocol, fold, seed, backbone, options)))
    return jobs


def _argv(settings, method, protocol, fold, seed, backbone, options) -> list[str]:
    argv = ["eval", "-m", method, "-p", protocol, "--fold", str(fold), "--out", settings["out"],
            "--warmup", str(settings["warmup"]), "--json"]
    argv += ["--seed", str(seed)] if seed is not None else []
    argv += ["--backbone", backbone] if backbone else []
    argv += ["--episodes", str(settings["episodes"])] if settings["episodes"] else []
    argv += ["--random-init"] if settings["random_init"] else []
    argv += ["--data-root", settings["data_root"]] if settings["data_root"] else []
    for name, value in options.items():
        argv += ["--option", option_flag(name, value)]
    for weight in settings["weights"].get(method, []):
        argv += ["--weights", weight]
    return argv


def job_request(sweep: Sweep, job: Job):
    """The job's command line as an EvalRequest (to plan it without running it)."""
    from fssbench.cli.evaluate import EvalRequest

    settings = sweep.settings
    return EvalRequest(method=job.method, protocol=job.protocol, fold=str(job.fold), out=sweep.out,
                       data_root=Path(settings["data_root"]) if settings["data_root"] else None,
                       device=settings["device"], seed=job.seed, episodes=settings["episodes"],
                       weights=list(settings["weights"].get(job.method, [])), random_init=settings["random_init"],
                       warmup=settings["warmup"], backbone=job.backbone,
                       options=[option_flag(name, value) for name, value in job.options.items()])


def option_flag(name: str, value: Any) -> str:
    """NAME=VALUE as `--option` takes it (YAML's booleans as true/false)."""
    return f"{name}={str(value).lower() if isinstance(value, bool) else value}"


def mark_done(sweep: Sweep) -> None:
    """Plan every job (which checks it) and mark those whose run is complete in the store as skipped."""
    from fssbench.cli.evaluate import plan_run
    from fssbench.harness.evaluation import plan_identity, run_identity
    from fssbench.harness.journal import run_key
    from fssbench.harness.store import STORE_NAME, ResultsStore

    stored = {}
    if (sweep.out / STORE_NAME).is_file():
        with ResultsStore(sweep.out / STORE_NAME) as store:
            stored = {run_key(run_identity(record)): record for record in store.records(status="complete")}
    for job in sweep.jobs:
        try:
            plan = plan_run(job_request(sweep, job))
        except UsageError as exc:
            raise UsageError(f"sweep file {sweep.path}, run {job.label}: {exc}") from None
        record = stored.get(run_key(plan_identity(plan)))
        if record is not None:
            job.status, job.record = "skipped", record


def run_sweep(sweep: Sweep, executor, retries: int) -> None:
    """Run the pending jobs, retrying failed ones up to `retries` times (each retry resumes its journal)."""
    from fssbench.harness.record import parse_record

    pending = [job for job in sweep.jobs if job.status == "pending"]
    for _ in range(retries + 1):
        if not pending:
            break
        outcomes = executor.run([job.argv for job in pending])
        for job, outcome in zip(pending, outcomes):
            job.attempts += 1
            if outcome.returncode == 0:
                job.status, job.record, job.error = "complete", parse_record(outcome.record, job.label), ""
            else:
                job.status, job.error = "failed", outcome.error
        pending = [job for job in pending if job.status == "failed"]


def make_executor(name: str, sweep: Sweep):
    from fssbench.harness import executors

    settings = sweep.settings[name]
    if name == "local":
        devices = settings.get("devices") or [sweep.settings["device"]]
        return executors.LocalExecutor(devices=[str(device) for device in devices],
                                       concurrency=settings.get("concurrency"))
    if name == "ray":
        return executors.RayExecutor(**settings)
    return executors.SlurmExecutor(folder=sweep.out / "slurm" / sweep.settings["name"], **settings)
