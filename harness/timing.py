"""Latency and memory measurement, done as the field's best tools do.

Data loading, adapter compute and scoring are timed separately; on CUDA the device is synchronized
around the adapter call only. Warm-up episodes are scored but excluded from the latency statistics
(and counted; on a resumed run, the first episodes of each session). Statistics are medians, interquartile ranges and 95th percentiles, never means of
noisy samples. Peak memory is CUDA's allocated/reserved peak on GPU, the process's peak RSS on CPU.
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np
import torch

PHASES = ("data", "compute", "scoring")


def resolve_device(name: str) -> torch.device:
    """The device of `--device auto|cpu|cuda|cuda:N` (auto: CUDA when available)."""
    from fssbench.harness.errors import UsageError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UsageError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}); "
                         "use --device cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now() -> float:
    return time.perf_counter()


def latency_summary(episodes: list[tuple[tuple[float, float, float], bool]]) -> dict[str, object]:
    """Statistics over (data, compute, scoring) milliseconds of each episode, warm-up ones left out."""
    timed = [latencies for latencies, warmup in episodes if not warmup]
    result: dict[str, object] = {"warmup_episodes": len(episodes) - len(timed), "timed_episodes": len(timed)}
    for position, phase in enumerate(PHASES):
        result[f"{phase}_ms"] = _stats([latencies[position] for latencies in timed])
    total_s = sum(sum(latencies) for latencies in timed) / 1000
    result["episodes_per_s"] = len(timed) / total_s if total_s > 0 else None
    result["s_per_episode"] = total_s / len(timed) if timed else None
    return result


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "iqr": None, "p95": None}
    q25, median, q75, p95 = np.percentile(np.asarray(values), [25, 50, 75, 95])
    return {"median": float(median), "iqr": float(q75 - q25), "p95": float(p95)}


class MemoryProbe:
    """Peak memory over a run: CUDA allocator peaks on GPU, peak resident set size on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def read(self) -> dict[str, object]:
        if self.device.type == "cuda":
            allocated = torch.cuda.max_memory_allocated(self.device) / 2**20
            reserved = torch.cuda.max_memory_reserved(self.device) / 2**20
            return {"kind": "cuda", "peak_memory_mb": allocated,
                    "peak_allocated_mb": allocated, "peak_reserved_mb": reserved}
        rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss_mb = rss_kb / 2**20 if sys.platform == "darwin" else rss_kb / 2**10  # bytes on macOS
        return {"kind": "cpu-peak-rss", "peak_memory_mb": rss_mb,
                "peak_allocated_mb": None, "peak_reserved_mb": None}
