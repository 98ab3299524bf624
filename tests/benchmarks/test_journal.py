"""What resuming costs: committing one episode to the run journal, under 1 ms
(pytest tests/benchmarks --benchmark-enable for pytest-benchmark's statistics)."""

import itertools

from fssbench.harness.journal import Journal

COMMIT_TARGET_S = 0.001


def test_journal_write_per_episode(median_seconds, tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    counter = itertools.count()
    payload = {"class_id": 3, "inter": [150_000, 9_000], "union": [151_000, 10_000]}

    def commit_one():
        journal.add(0, str(next(counter)), payload, (1.5, 180.0, 1.6), False)

    [seconds] = median_seconds(commit_one, calls=200)
    assert len(journal.units()) == next(counter)  # every call committed one episode
    journal.close()
    assert seconds < COMMIT_TARGET_S, f"journal commit {seconds * 1e3:.3f} ms per episode (target < 1 ms)"
