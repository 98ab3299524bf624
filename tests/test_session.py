"""The run session owns the lifecycle: a record for any exception, signal handlers restored, and the
CLI's error boundary (one line and exit 4 for an internal error, the traceback only on request)."""

import json
import signal
import sys

import pytest

from fssbench import registry
from adapters_for_tests import Crashes


@pytest.fixture
def crashes():
    registry.methods.register("test-Crashes", "adapters_for_tests:Crashes", "test adapter")
    Crashes.calls = 0
    return Crashes


def test_an_adapter_exception_of_any_type_writes_a_failed_record_and_exits_4(cli, tmp_path, crashes):
    result = cli("eval", "-m", "test-Crashes", "-p", "demo-1shot", "--fold", "0", "--episodes", "5",
                 "--out", str(tmp_path))
    assert result.code == 4
    assert "internal error: RuntimeError: CUDA out of memory (simulated)" in result.stderr
    assert "Traceback" not in result.stderr and "--debug" in result.stderr
    [record_file] = (tmp_path / "runs").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "failed"
    assert record["error"] == {"type": "RuntimeError", "message": "CUDA out of memory (simulated)"}
    assert str(record_file) in result.stderr  # the message says where the record is
    assert record["timing"]["warmup_episodes"] + record["timing"]["timed_episodes"] == 2  # scored before the crash


def test_debug_shows_the_traceback_of_an_internal_error(cli, tmp_path, crashes):
    result = cli("--debug", "eval", "-m", "test-Crashes", "-p", "demo-1shot", "--fold", "0", "--episodes", "5",
                 "--out", str(tmp_path))
    assert result.code == 4 and "Traceback" in result.stderr and "RuntimeError" in result.stderr


def test_eval_restores_the_callers_sigterm_handler(cli, tmp_path):
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        assert cli("eval", "-m", "oracle", "-p", "demo-1shot", "--fold", "0", "--episodes", "3",
                   "--out", str(tmp_path)).code == 0
        assert signal.getsignal(signal.SIGTERM) is mine
        assert cli("eval", "-m", "oracle", "-p", "nonexistent", "--out", str(tmp_path)).code == 2
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_changed_adapter_starts_a_new_run_instead_of_resuming_the_old_journal(cli, tmp_path, monkeypatch):
    """A user inverted their adapter's output and re-ran: the old journal must not be resumed."""
    site = tmp_path / "site"
    site.mkdir()
    source = ("import torch\nfrom fssbench.harness.contract import FssAdapter\n\n"
              "class Mine(FssAdapter):\n    description = 'a user adapter'\n\n"
              "    def setup(self, context):\n        pass\n\n"
              "    def predict(self, batch):\n        return (batch.query_images[:, 1] > 0.45).float()\n")
    (site / "my_adapter.py").write_text(source)
    monkeypatch.syspath_prepend(str(site))
    registry.methods.register("mine", "my_adapter:Mine")
    args = ("eval", "-m", "mine", "-p", "demo-1shot", "--fold", "0", "--episodes", "6", "--json", "--out", str(tmp_path))
    first = json.loads(cli(*args).stdout)
    (site / "my_adapter.py").write_text(source.replace("> 0.45).float()", "<= 0.45).float()"))  # inverted
    monkeypatch.delitem(sys.modules, "my_adapter")
    registry.methods._loaded.pop("mine")
    second = json.loads(cli(*args).stdout)
    assert second["resumed_episodes"] == 0 and second["run_id"] != first["run_id"]
    assert second["code"]["adapter"] != first["code"]["adapter"]
    assert second["metrics"][0]["value"] != first["metrics"][0]["value"]
    assert first["code"] == {"fssbench": first["environment"]["fssbench"], "adapter": first["code"]["adapter"]}
