"""Faults around a run's files: one process per journal (the others stop with exit 2 or wait), several
runs into one store at once, a corrupt results store (rebuilt from the run records) and a corrupt journal
(moved aside by --no-resume). Nothing is lost and nothing ends in a traceback."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

GARBAGE = b"this is not an SQLite database\n" * 100


def eval_args(out: Path, *more: str, episodes: int = 3) -> tuple[str, ...]:
    return ("eval", "-m", "oracle", "-p", "demo-1shot", "--fold", "0", "--episodes", str(episodes), "--device", "cpu",
            "--json", "--out", str(out), *more)


def record_of(result) -> dict:
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def journal_of(out: Path) -> Path:
    [journal] = (out / "journals").glob("*.sqlite")
    return journal


def stored_run_ids(out: Path) -> list[str]:
    with sqlite3.connect(out / "fssbench.sqlite") as db:
        return sorted(row[0] for row in db.execute("SELECT run_id FROM runs"))


# --- one process per journal ---


def test_a_second_process_on_a_running_run_stops_with_exit_2_naming_the_holder_and_the_journal(cli, tmp_path):
    from fssbench.harness.journal import lock_journal

    first = record_of(cli(*eval_args(tmp_path)))
    journal = journal_of(tmp_path)
    with lock_journal(journal, wait=False):  # as a running `fssbench eval` of this run holds it
        result = cli(*eval_args(tmp_path))
    assert result.code == 2
    message = " ".join(result.stderr.split())
    assert f"pid {os.getpid()}" in message and socket.gethostname() in message and str(journal) in message
    assert "--wait" in message and "Traceback" not in message
    assert [path.stem for path in (tmp_path / "runs").glob("*.json")] == [first["run_id"]]
    assert record_of(cli(*eval_args(tmp_path)))["run_id"] == first["run_id"]  # released: resumes


def test_wait_waits_for_the_holder_then_resumes_the_run(cli, tmp_path):
    from fssbench.harness.journal import lock_journal

    first = record_of(cli(*eval_args(tmp_path)))
    lock = lock_journal(journal_of(tmp_path), wait=False)
    threading.Timer(1.0, lock.close).start()
    started = time.monotonic()
    waited = record_of(cli(*eval_args(tmp_path, "--wait")))
    assert time.monotonic() - started >= 1.0
    assert waited["run_id"] == first["run_id"] and waited["resumed_episodes"] == 3 and waited["status"] == "complete"


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fssbench", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


@pytest.mark.slow
def test_a_second_process_on_a_running_run_stops_with_exit_2_and_the_first_finishes(tmp_path, demo_reader):
    first = spawn(*eval_args(tmp_path, episodes=40))
    deadline = time.monotonic() + 120
    while f"pid {first.pid} " not in "".join(path.read_text() for path in tmp_path.glob("journals/*.lock")):
        assert first.poll() is None and time.monotonic() < deadline, finish(first)
        time.sleep(0.02)
    first.send_signal(signal.SIGSTOP)  # caught mid-run, the lock held
    try:
        code, _, err = finish(spawn(*eval_args(tmp_path, episodes=40)))
    finally:
        first.send_signal(signal.SIGCONT)
    assert code == 2 and f"pid {first.pid}" in " ".join(err.split()) and "--wait" in err, err
    code, out, err = finish(first)
    assert code == 0, err
    record = json.loads(out)
    assert record["status"] == "complete" and record["results"][0]["episodes"] == 40
    assert stored_run_ids(tmp_path) == [record["run_id"]]


@pytest.mark.slow
def test_two_processes_started_at_once_with_wait_both_finish_the_same_run(tmp_path, demo_reader):
    processes = [spawn(*eval_args(tmp_path, "--wait", episodes=12)) for _ in range(2)]
    results = [finish(process) for process in processes]
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    first, second = (json.loads(out) for _, out, _ in results)
    assert first["run_id"] == second["run_id"]
    assert sorted([first["resumed_episodes"], second["resumed_episodes"]]) == [0, 12]
    assert first["results"] == second["results"] and stored_run_ids(tmp_path) == [first["run_id"]]


@pytest.mark.slow
def test_different_runs_into_one_store_at_once_all_complete(tmp_path, demo_reader):
    processes = [spawn(*eval_args(tmp_path, "--seed", str(seed), episodes=5)) for seed in (1, 2, 3)]
    results = [finish(process) for process in processes]
    assert [code for code, _, _ in results] == [0, 0, 0], [err for _, _, err in results]
    assert stored_run_ids(tmp_path) == sorted(json.loads(out)["run_id"] for _, out, _ in results)


# --- a corrupt results store ---


def test_reading_commands_on_a_corrupt_store_name_it_and_say_how_to_rebuild(cli, tmp_path):
    record_of(cli(*eval_args(tmp_path)))
    (tmp_path / "fssbench.sqlite").write_bytes(GARBAGE)
    for command in (("runs", "list"), ("leaderboard",), ("runs", "show", "2")):
        result = cli(*command, "--results", str(tmp_path))
        message = " ".join(result.stderr.split())
        assert result.code == 1, (command, result.stderr)
        assert str(tmp_path / "fssbench.sqlite") in message and f"fssbench runs rebuild --results {tmp_path}" in message
        assert "internal error" not in message


def test_eval_with_a_corrupt_store_warns_and_keeps_the_record_then_rebuild_restores_every_run(cli, tmp_path):
    first = record_of(cli(*eval_args(tmp_path)))
    store = tmp_path / "fssbench.sqlite"
    store.write_bytes(GARBAGE)
    result = cli(*eval_args(tmp_path, "--seed", "7"))
    second = record_of(result)
    message = " ".join(result.stderr.split())
    assert "warning:" in message and str(store) in message and f"fssbench runs rebuild --results {tmp_path}" in message
    assert (tmp_path / "runs" / f"{second['run_id']}.json").is_file() and store.read_bytes() == GARBAGE

    (tmp_path / "runs" / "broken.json").write_text("{not json")
    journal_of_first = tmp_path / "journals" / Path(first["journal"]).name
    journal_of_first.rename(tmp_path / "elsewhere.sqlite")  # the first run's journal is gone
    rebuilt = cli("runs", "rebuild", "--results", str(tmp_path))
    assert rebuilt.code == 0, rebuilt.stderr
    report = " ".join((rebuilt.stdout + rebuilt.stderr).split())
    assert "broken.json" in report and "2 run records" in report
    [aside] = tmp_path.glob("fssbench.sqlite.corrupt-*")
    assert aside.read_bytes() == GARBAGE  # moved aside, never deleted
    assert stored_run_ids(tmp_path) == sorted([first["run_id"], second["run_id"]])
    listed = cli("runs", "list", "--results", str(tmp_path))
    assert listed.code == 0 and first["run_id"] in listed.stdout and second["run_id"] in listed.stdout

    exported = cli("runs", "export", second["run_id"], "--csv", str(tmp_path / "2.csv"), "--results", str(tmp_path))
    assert exported.code == 0 and len((tmp_path / "2.csv").read_text().splitlines()) == 1 + 3  # from its journal
    missing = cli("runs", "export", first["run_id"], "--csv", str(tmp_path / "1.csv"), "--results", str(tmp_path))
    assert missing.code == 2 and "journal" in missing.stderr and first["run_id"] in missing.stderr


def test_rebuilding_a_readable_store_moves_it_aside_and_keeps_the_per_episode_statistics(cli, tmp_path):
    record = record_of(cli(*eval_args(tmp_path)))
    assert cli("runs", "rebuild", "--results", str(tmp_path)).code == 0
    [aside] = tmp_path.glob("fssbench.sqlite.old-*")
    with sqlite3.connect(aside) as db:
        assert db.execute("SELECT run_id FROM runs").fetchall() == [(record["run_id"],)]
    exported = cli("runs", "export", record["run_id"], "--csv", str(tmp_path / "e.csv"), "--results", str(tmp_path))
    assert exported.code == 0 and len((tmp_path / "e.csv").read_text().splitlines()) == 1 + 3


def test_rebuild_without_run_records_says_where_it_looked(cli, tmp_path):
    result = cli("runs", "rebuild", "--results", str(tmp_path))
    assert result.code == 2 and str(tmp_path / "runs") in " ".join(result.stderr.split())


# --- a corrupt journal ---


def test_resuming_a_corrupt_journal_names_it_and_offers_no_resume_which_moves_it_aside(cli, tmp_path):
    first = record_of(cli(*eval_args(tmp_path)))
    journal = journal_of(tmp_path)
    journal.write_bytes(GARBAGE)
    result = cli(*eval_args(tmp_path))
    message = " ".join(result.stderr.split())
    assert result.code == 2 and str(journal) in message and "--no-resume" in message and "internal error" not in message

    fresh = cli(*eval_args(tmp_path, "--no-resume"))
    restarted = record_of(fresh)
    assert restarted["run_id"] != first["run_id"] and restarted["resumed_episodes"] == 0
    [aside] = (tmp_path / "journals").glob(f"{journal.name}.old-*")
    assert aside.read_bytes() == GARBAGE and str(aside) in " ".join(fresh.stderr.split())


def test_no_resume_moves_a_healthy_journal_aside_intact(cli, tmp_path):
    first = record_of(cli(*eval_args(tmp_path)))
    journal = journal_of(tmp_path)
    assert record_of(cli(*eval_args(tmp_path, "--no-resume")))["run_id"] != first["run_id"]
    [aside] = (tmp_path / "journals").glob(f"{journal.name}.old-*[0-9]")
    with sqlite3.connect(aside) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'run_id'").fetchone()[0] == json.dumps(first["run_id"])
        assert db.execute("SELECT COUNT(*) FROM units").fetchone()[0] == 3
