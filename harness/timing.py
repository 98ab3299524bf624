"""Latency and memory measurement, done as the field's best tools do.

Data loading, adapter compute and scoring are timed separately; on CUDA the device is synchronized
around the adapter call only. Warm-up episodes are scored but excluded from the latency statistics
(and counted). Statistics are medians, interquartile ranges and 95th percentiles, never means of
noisy samples. Peak memory is CUDA's allocated/reserved peak on GPU, the process's peak RSS on CPU.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

PHASES = ("data", "compute", "scoring")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now() -> float:
    return time.perf_counter()


@dataclass
class LatencyLog:
    warmup: int
    seen: int = 0
    samples: dict[str, list[float]] = field(default_factory=lambda: {phase: [] for phase in PHASES})

    def add(self, data_s: float, compute_s: float, scoring_s: float, episodes: int = 1) -> None:
        """Record one adapter call's phases (per episode when the call covered several episodes)."""
        self.seen += episodes
        if self.seen <= self.warmup:
            return
        for phase, seconds in zip(PHASES, (data_s, compute_s, scoring_s)):
            self.samples[phase].extend([seconds * 1000 / episodes] * episodes)

    def summary(self) -> dict[str, object]:
        timed = len(self.samples["compute"])
        result: dict[str, object] = {"warmup_episodes": min(self.seen, self.warmup), "timed_episodes": timed}
        for phase in PHASES:
            result[f"{phase}_ms"] = _stats(self.samples[phase])
        result["compute_ms_median"] = result["compute_ms"]["median"]
        total_s = sum(sum(values) for values in self.samples.values()) / 1000
        result["episodes_per_s"] = timed / total_s if total_s > 0 else None
        result["s_per_episode"] = total_s / timed if timed else None
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
