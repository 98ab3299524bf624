"""What resuming costs: committing one episode to the run journal (pytest tests/benchmarks --benchmark-enable)."""

import itertools

from fssbench.harness.journal import Journal
from fssbench.harness.metrics import EpisodeScore


def test_journal_write_per_episode(benchmark, tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    counter = itertools.count()

    def commit_one():
        index = next(counter)
        journal.add(0, EpisodeScore(index, 3, (150_000, 9_000), (151_000, 10_000)), (1.5, 180.0, 1.6), False)

    benchmark(commit_one)
    assert len(journal.episodes()) >= 1
    journal.close()
