"""`torchrun -m fssbench eval`: two gloo ranks on the CPU give the single process's record bit for bit in
every metric field; rank 0 alone writes it (and alone prints), with both ranks' facts; a rerun resumes
each rank's journal and redoes nothing."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # two ranks start torch and the protonet backbone: ~30 s on 2 CPU cores

EVAL = ("-m", "fssbench", "eval", "-m", "protonet", "-p", "demo-1shot", "--fold", "0", "--episodes", "6",
        "--device", "cpu", "--json")


def run(command: list[str], out, env) -> dict:
    done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)  # one record: rank 1 prints nothing


def metric_fields(record: dict) -> dict:
    return {"results": record["results"], "metrics": record["metrics"]}


def test_two_gloo_ranks_equal_one_process_and_resume_per_rank(tmp_path, demo_reader):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("WORLD_SIZE", None)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    single = run([sys.executable, *EVAL], tmp_path / "single", env)
    ranked = run([*torchrun, *EVAL], tmp_path / "ranks", env)

    assert metric_fields(ranked) == metric_fields(single)  # exact: the contract
    assert ranked["status"] == "complete" and ranked["world_size"] == 2 and ranked["shard"] is None
    assert [(rank["shard"], rank["units"], rank["device"]) for rank in ranked["ranks"]] == [(0, 3, "cpu"), (1, 3, "cpu")]
    assert all(rank["episodes_per_s"] > 0 and rank["cost"]["cpu_s"] > 0 for rank in ranked["ranks"])
    assert ranked["timing"]["timed_episodes"] + ranked["timing"]["warmup_episodes"] == 6
    assert [path.name for path in (tmp_path / "ranks" / "runs").iterdir()] == [f"{ranked['run_id']}.json"]
    assert len(list((tmp_path / "ranks" / "journals").glob("*.sqlite"))) == 2  # one journal per rank

    again = run([*torchrun, *EVAL], tmp_path / "ranks", env)
    assert again["run_id"] == ranked["run_id"] and again["resumed_episodes"] == 6  # nothing redone
    assert metric_fields(again) == metric_fields(single)
