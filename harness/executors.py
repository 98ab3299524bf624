"""Where a sweep's runs execute: a local pool of processes, Ray tasks or Slurm jobs (submitit).

A job is an `fssbench` command line (`eval ... --json`); every executor runs it as its own process with
this Python, so a job that crashes or is killed takes nothing else down and its journal lets a rerun
resume it. Each executor maps a list of jobs to their outcomes in the same order. Scheduling is the
engines' own: a thread per device slot hands jobs to child processes (local), Ray places tasks by their
CPU and GPU resources, Slurm runs a job array (submitit).
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fssbench.harness.extras import require

TAIL = 2000  # characters of a failed job's stderr kept for the summary


@dataclass
class Outcome:
    """How one job ended: its run record's JSON value when it succeeded, else the end of its stderr."""

    returncode: int
    record: dict[str, Any] | None = None
    error: str = ""


def run_job(argv: list[str], device: str) -> Outcome:
    """Run `fssbench ARGV --device DEVICE` in a child process (the unit every executor schedules)."""
    done = subprocess.run([sys.executable, "-m", "fssbench", *argv, "--device", device], capture_output=True,
                          text=True)
    if done.returncode != 0:
        return Outcome(done.returncode, None, done.stderr[-TAIL:].strip() or f"exit {done.returncode}")
    try:
        return Outcome(0, json.loads(done.stdout))
    except ValueError:
        return Outcome(1, None, f"the job printed no run record: {done.stdout[-TAIL:]}")


@dataclass
class LocalExecutor:
    """A pool of child processes on this machine: at most `concurrency` at once, one per device slot
    (`devices` [cuda:0, cuda:1] runs one job per GPU; [cpu] with concurrency 2 runs two CPU jobs)."""

    devices: list[str] = field(default_factory=lambda: ["auto"])
    concurrency: int | None = None

    def run(self, jobs: list[list[str]]) -> list[Outcome]:
        slots = self.concurrency or len(self.devices)
        free: queue.Queue[str] = queue.Queue()
        for slot in range(slots):
            free.put(self.devices[slot % len(self.devices)])

        def on_a_device(argv: list[str]) -> Outcome:
            device = free.get()
            try:
                return run_job(argv, device)
            finally:
                free.put(device)

        with ThreadPoolExecutor(max_workers=slots) as pool:
            return list(pool.map(on_a_device, jobs))


@dataclass
class RayExecutor:
    """Ray tasks, each asking for `gpus_per_job` GPUs and `cpus_per_job` CPUs; Ray places them on its
    cluster (`address`: an existing cluster, "auto" for the local one's head; None starts a local cluster
    of `num_cpus` CPUs). A task with GPUs sees only its own (Ray sets CUDA_VISIBLE_DEVICES): device cuda."""

    address: str | None = None
    gpus_per_job: float = 0
    cpus_per_job: float = 1
    num_cpus: int | None = None

    def run(self, jobs: list[list[str]]) -> list[Outcome]:
        ray = require("ray", "sweeps on Ray", "ray")
        if not ray.is_initialized():
            ray.init(address=self.address, num_cpus=self.num_cpus if self.address is None else None,
                     include_dashboard=False, log_to_driver=False)
        task = ray.remote(num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job)(run_job)
        device = "cuda" if self.gpus_per_job else "cpu"
        return ray.get([task.remote(argv, device) for argv in jobs])


@dataclass
class SlurmExecutor:
    """A Slurm job array through submitit: one array task per job, with the partition, time limit, GPUs,
    memory and CPUs given; `cluster` "local" runs the same jobs with submitit's LocalExecutor (tests,
    a workstation). submitit keeps each task's logs under `folder`."""

    folder: Path
    partition: str | None = None
    time_min: int = 60
    gpus_per_job: int = 0
    mem_gb: int | None = None
    cpus_per_job: int = 1
    array_parallelism: int = 64
    cluster: str | None = None  # None: Slurm when sbatch is there; "local"; "slurm"

    def run(self, jobs: list[list[str]]) -> list[Outcome]:
        submitit = require("submitit", "sweeps on Slurm", "slurm")
        executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        parameters: dict[str, Any] = {"timeout_min": self.time_min, "gpus_per_node": self.gpus_per_job,
                                      "cpus_per_task": self.cpus_per_job, "slurm_array_parallelism":
                                      self.array_parallelism}
        if self.partition:
            parameters["slurm_partition"] = self.partition
        if self.mem_gb:
            parameters["mem_gb"] = self.mem_gb
        executor.update_parameters(**parameters)
        device = "cuda" if self.gpus_per_job else "cpu"
        submitted = executor.map_array(run_job, jobs, [device] * len(jobs))
        outcomes = []
        for job in submitted:
            try:
                outcomes.append(job.result())
            except Exception as exc:  # submitit's: the task was killed, timed out or its node failed
                outcomes.append(Outcome(1, None, f"{type(exc).__name__}: {str(exc)[-TAIL:]}"))
        return outcomes
