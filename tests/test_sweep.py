"""`fssbench sweep`: a validated grid, run through each executor; a rerun skips every complete run, and a
job killed mid-way is the only one a rerun redoes (resuming its journal)."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

GRID = """methods: [oracle, protonet]
protocols: [demo-1shot, demo-5shot]
folds: [0, 1]
episodes: {episodes}
device: cpu
retries: 0
out: {out}
"""


def sweep_file(tmp_path: Path, extra: str = "", episodes: int = 2) -> Path:
    (tmp_path / "grid.yaml").write_text(GRID.format(episodes=episodes, out=tmp_path / "out"))
    path = tmp_path / "sweep.yaml"
    path.write_text("include: grid.yaml\n" + extra)
    return path


def statuses(summary: str) -> list[str]:
    """The status column of the sweep's summary table."""
    return re.findall(r"│ (skipped|complete|failed) +│", summary)


def records(out: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((out / "runs").glob("*.json"))]


def test_unknown_keys_are_named_with_the_file(cli, tmp_path):
    path = sweep_file(tmp_path, "method: [oracle]\n")
    result = cli("sweep", str(path), "--dry-run")
    assert result.code == 2 and "'method'" in result.stderr and "sweep.yaml" in result.stderr
    path.write_text("include: grid.yaml\nlocal: {workers: 2}\n")
    result = cli("sweep", str(path), "--dry-run")
    assert result.code == 2 and "local.workers" in result.stderr
    path.write_text("include: grid.yaml\nfolds: [7]\n")
    assert "no fold 7" in cli("sweep", str(path), "--dry-run").stderr


def test_dry_run_lists_the_grid_with_include_and_overrides(cli, tmp_path):
    path = sweep_file(tmp_path, "methods: [oracle]\nseeds: [0, 3]\n")
    result = cli("sweep", str(path), "--dry-run")
    assert result.code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 * 2 * 2 * 2 and all(line.startswith("run: fssbench eval -m oracle") for line in lines)
    assert sum("--seed 3" in line for line in lines) == 4 and not (tmp_path / "out" / "runs").exists()


def run_sweep(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fssbench", "sweep", str(path), *args], capture_output=True,
                          text=True, timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
@pytest.mark.parametrize("executor,settings", [
    ("local", "local: {concurrency: 2}\n"),
    ("ray", "ray: {num_cpus: 2, cpus_per_job: 1}\n"),
    ("slurm", "slurm: {cluster: local, time_min: 20}\n"),
])
def test_a_grid_completes_through_each_executor_and_a_rerun_skips_it(tmp_path, demo_reader, executor, settings):
    path = sweep_file(tmp_path, settings)
    first = run_sweep(path, "--executor", executor)
    assert first.returncode == 0, first.stderr[-3000:]
    done = records(tmp_path / "out")
    assert len(done) == 8 and all(record["status"] == "complete" and record["cost"]["cpu_s"] > 0 for record in done)
    assert {(r["method"], r["protocol"], tuple(r["folds"])) for r in done} == {
        (m, p, (f,)) for m in ("oracle", "protonet") for p in ("demo-1shot", "demo-5shot") for f in (0, 1)}
    assert "cost of this sweep's runs" in first.stdout and "| protonet |" in first.stdout

    again = run_sweep(path, "--executor", executor)
    assert again.returncode == 0, again.stderr[-3000:]
    assert statuses(again.stdout) == ["skipped"] * 8 and len(records(tmp_path / "out")) == 8  # nothing ran


def journaled_units(journal: Path) -> int:
    try:
        with sqlite3.connect(journal) as db:
            return db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_a_job_killed_mid_way_is_the_only_one_a_rerun_redoes_and_it_resumes(tmp_path, demo_reader):
    path = sweep_file(tmp_path, "methods: [protonet]\nprotocols: [demo-5shot]\nlocal: {concurrency: 1}\n", episodes=6)
    sweep = subprocess.Popen([sys.executable, "-m", "fssbench", "sweep", str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    journals, victim = tmp_path / "out" / "journals", None
    deadline = time.monotonic() + 600
    while victim is None and time.monotonic() < deadline:  # the first job, once it has journaled 2 episodes
        for journal in journals.glob("*.sqlite") if journals.exists() else []:
            if 2 <= journaled_units(journal) < 6:
                victim = journal
        time.sleep(0.2)
    assert victim is not None
    pid = int(victim.with_name(victim.name + ".lock").read_text().split()[1])  # "pid N on HOST"
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = sweep.communicate(timeout=600)
    assert sweep.returncode == 1 and "1 of 2 runs failed" in stderr
    killed_at = journaled_units(victim)
    assert [record["status"] for record in records(tmp_path / "out")] == ["complete"]

    rerun = run_sweep(path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert sorted(statuses(rerun.stdout)) == ["complete", "skipped"]
    redone = [record for record in records(tmp_path / "out") if record["journal"].endswith(victim.name)]
    assert len(redone) == 1 and redone[0]["resumed_episodes"] == killed_at and killed_at >= 2
