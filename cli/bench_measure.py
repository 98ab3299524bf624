"""One measurement of `fssbench bench`, run in a fresh process so each has its own peak RSS:
fssbench's loop or the HSNet-style loop over fold 0 of a generated fixture, with the oracle (the time
is the harness's own), or the prefetcher's overlap with an adapter that sleeps a fixed compute time.
Prints one JSON object."""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fssbench import registry
from fssbench.adapters.oracle import OracleAdapter
from fssbench.harness.contract import EpisodeBatch

SLEEPING = "bench-sleeping-oracle"


class SleepingOracle(OracleAdapter):
    """The oracle after sleeping `sleep_ms` per episode: compute that takes time but no CPU."""

    description = "the oracle after sleeping sleep_ms per episode (fssbench bench's overlap measurement)"
    option_defaults = {"sleep_ms": 0.0}

    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        time.sleep(self.options["sleep_ms"] * len(batch.episodes) / 1000)
        return batch.query_masks


@dataclass
class Measurement:
    loop: str  # fssbench | hsnet | overlap
    fixture: str
    protocol: str
    root: str
    episodes: int
    threads: int
    prefetch: int = 2
    cache_mb: int | None = None


def peak_rss_mb() -> float:
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kilobytes / 2**20 if sys.platform == "darwin" else kilobytes / 2**10


def fssbench_run(m: Measurement, method: str = "oracle", options: tuple[str, ...] = (),
                 prefetch: int | None = None) -> tuple[float, dict]:
    """Seconds of the fold's episode loop (from its first load to its last journal entry) and the record."""
    from fssbench.cli.evaluate import EvalRequest, plan_run
    from fssbench.harness.evaluation import run_plan

    with tempfile.TemporaryDirectory() as out:
        request = EvalRequest(method=method, protocol=m.protocol, fold="0", data_root=Path(m.root), out=Path(out),
                              device="cpu", episodes=m.episodes, warmup=0, resume=False, options=list(options))
        request.prefetch = m.prefetch if prefetch is None else prefetch
        request.cache_mb, request.threads = m.cache_mb, m.threads
        marks: list[float] = []  # the fold's start, then the end of each batch: the loop's time, as HSNet's

        def on_progress(fold: int, units: int, done: int):
            marks.append(time.perf_counter())
            return lambda done, score: marks.append(time.perf_counter())

        record, _ = run_plan(plan_run(request), on_progress)
        return marks[-1] - marks[0], record.model_dump(mode="json")


def hsnet_run(m: Measurement) -> tuple[float, float, int]:
    from fssbench.harness.cache import cache_dir
    from fssbench.harness.episodes import build_manifest
    from fssbench.harness.hsnet_loop import hsnet_style_miou

    spec = registry.protocols.get(m.protocol)
    reader = registry.open_dataset(spec, Path(m.root))
    manifest = build_manifest(spec, reader, registry.samplers.get(spec.sampler["name"]), 0, spec.seed, cache_dir())
    episodes = list(manifest.head(m.episodes).episodes)
    started = time.perf_counter()
    miou = hsnet_style_miou(reader, episodes, spec.resolution.size)
    loads = sum(1 + len(episode.supports) for episode in episodes)
    return time.perf_counter() - started, miou, loads


def measure(m: Measurement) -> dict:
    torch.set_num_threads(m.threads)
    if m.loop == "hsnet":
        seconds, miou, loads = hsnet_run(m)
        return {"seconds": seconds, "miou": miou, "images_decoded": loads, "peak_rss_mb": peak_rss_mb()}
    if m.loop == "fssbench":
        seconds, record = fssbench_run(m)
        return {"seconds": seconds, "miou": record["metrics"][0]["value"], "peak_rss_mb": peak_rss_mb(),
                "images_decoded": record["timing"]["images_decoded"], **record["loading"]}
    registry.methods.register(SLEEPING, "fssbench.cli.bench_measure:SleepingOracle")
    alone, _ = fssbench_run(m, prefetch=0)  # all the loop does besides the adapter, synchronously
    sleep_ms = 1000 * alone / m.episodes  # compute as long as the rest: the case overlap helps most
    overlapped, _ = fssbench_run(m, SLEEPING, (f"sleep_ms={sleep_ms}",))
    serial, _ = fssbench_run(m, SLEEPING, (f"sleep_ms={sleep_ms}",), prefetch=0)
    return {"load_s": alone, "compute_s": sleep_ms * m.episodes / 1000, "overlapped_s": overlapped,
            "serial_s": serial, "efficiency": max(alone, sleep_ms * m.episodes / 1000) / overlapped}


def main(argument: str) -> None:
    result = measure(Measurement(**json.loads(argument)))
    sys.stdout.write(json.dumps(result) + "\n")
