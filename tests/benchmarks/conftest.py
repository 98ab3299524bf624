"""Timing for the benchmarks' targets. The default run passes --benchmark-disable, so pytest-benchmark
calls each operation once and keeps no statistics: the targets are timed here, in every run."""

import statistics
import time

import pytest


@pytest.fixture
def median_seconds(benchmark):
    """median_seconds(operation, *others, calls=30) benchmarks `operation` (statistics only with
    --benchmark-enable), then times it and the others in turn, `calls` rounds, and returns each one's
    median seconds per call: interleaved, they share whatever else the machine is doing."""

    def measure(*operations, calls: int = 30) -> list[float]:
        benchmark(operations[0])
        samples = [[] for _ in operations]
        for _ in range(calls):
            for operation, times in zip(operations, samples):
                start = time.perf_counter()
                operation()
                times.append(time.perf_counter() - start)
        return [statistics.median(times) for times in samples]

    return measure
