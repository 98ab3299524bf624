"""Journaled runs: interrupted runs resume to the bit-identical result without redoing episodes."""

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fssbench import registry
from fssbench.cli.evaluate import EvalRequest, evaluate

from adapters_for_tests import Flaky

COMPARED = ("fold", "metrics", "episodes", "manifest_sha256", "per_class_iou", "episode_scores", "miou_ci95")


def results_of(record):
    return [{key: result[key] for key in COMPARED} for result in record["results"]]


def evaluated(request: EvalRequest):
    """The run's record as its JSON value, and the record file."""
    record, path = evaluate(request)
    return record.model_dump(mode="json"), path


@pytest.fixture
def flaky():
    registry.methods.register("test-Flaky", "adapters_for_tests:Flaky", "test adapter")
    Flaky.calls, Flaky.interrupt_at = 0, None
    yield Flaky
    Flaky.interrupt_at = None


def test_interrupted_several_times_then_finished_equals_one_uninterrupted_run(flaky, tmp_path):
    def request(out):
        return EvalRequest(method="test-Flaky", protocol="demo-1shot", fold="all", episodes=12, out=out, device="cpu")

    whole, _ = evaluated(request(tmp_path / "whole"))
    assert flaky.calls == 48 and whole["resumed_episodes"] == 0

    rng = np.random.default_rng(0)
    flaky.calls, interruptions = 0, 0
    while True:
        flaky.interrupt_at = flaky.calls + int(rng.integers(1, 20))
        try:
            resumed, path = evaluated(request(tmp_path / "resumed"))
            break
        except KeyboardInterrupt:
            interruptions += 1
            [record_file] = (tmp_path / "resumed" / "runs").glob("*.json")
            assert json.loads(record_file.read_text())["status"] == "interrupted"
    assert interruptions >= 2
    flaky.interrupt_at = None
    assert flaky.calls == 48 + interruptions  # each interrupted call was the only one redone
    assert results_of(resumed) == results_of(whole)
    assert resumed["metrics"][0]["value"] == whole["metrics"][0]["value"] and resumed["status"] == "complete"
    assert resumed["run_id"] == json.loads(path.read_text())["run_id"]
    assert resumed["timing"]["timed_episodes"] + resumed["timing"]["warmup_episodes"] == 48

    again, _ = evaluated(request(tmp_path / "resumed"))  # complete: nothing is recomputed
    assert flaky.calls == 48 + interruptions and results_of(again) == results_of(whole)
    fresh, _ = evaluated(EvalRequest(**{**request(tmp_path / "resumed").__dict__, "resume": False}))
    assert fresh["run_id"] != resumed["run_id"] and results_of(fresh) == results_of(whole)


def journaled(out: Path) -> int:
    journals = list((out / "journals").glob("*.sqlite"))
    if not journals:
        return 0
    with sqlite3.connect(journals[0]) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


@pytest.mark.slow
def test_kill_9_of_a_real_eval_process_loses_at_most_the_episode_in_flight(tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "fssbench", "eval", "-m", "protonet", "-p", "demo-1shot", "--fold", "0",
               "--episodes", "16", "--device", "cpu", "--json", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while journaled(out) < 4 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    survived = journaled(out)
    assert 4 <= survived < 16
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    resumed = json.loads(finished.stdout)
    assert resumed["resumed_episodes"] == survived
    uninterrupted = subprocess.run([*command[:-1], str(tmp_path / "whole")], capture_output=True, text=True, timeout=600)
    assert results_of(resumed) == results_of(json.loads(uninterrupted.stdout))


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_the_run_resumes(tmp_path):
    out = tmp_path / "terminated"
    command = [sys.executable, "-m", "fssbench", "eval", "-m", "oracle", "-p", "demo-5shot", "--fold", "all",
               "--device", "cpu", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while journaled(out) < 20 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "run the same command again to resume" in err
    [record_file] = (out / "runs").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "interrupted" and journaled(out) < 1000


def test_a_resumed_run_with_nothing_left_to_compute_keeps_the_method_report(tmp_path):
    registry.methods.register("test-Reporting", "adapters_for_tests:Reporting", "test adapter")
    request = EvalRequest(method="test-Reporting", protocol="demo-1shot", fold="0", episodes=3, out=tmp_path)
    first, _ = evaluated(request)
    again, _ = evaluated(request)
    assert first["method_report"] == {"batches": 3}
    assert again["resumed_episodes"] == 3 and again["method_report"] == {"batches": 3}
