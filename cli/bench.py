"""`fssbench bench`: fssbench's episode loop against an HSNet-style loop on generated fixtures.

For each fixture (COCO-like, PASCAL-like: protocols/bench_fixtures.py) and shot, both loops run the
same episodes of fold 0 with the oracle and the same torch thread count, each in a fresh process
(its own peak RSS), alternating over `--repeats`; the table gives median seconds, the ratio
(HSNet-style / fssbench), peak RSS and fssbench's decode-cache use. The overlap line runs a sleeping
adapter whose compute time equals the loop's own time: with prefetching the total approaches
max(load, compute) instead of their sum; efficiency = max(load, compute) / total.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from fssbench.cli.app import app, stderr, stdout


def _measure(**fields) -> dict:
    command = [sys.executable, "-m", "fssbench", "bench", "--measure", json.dumps(fields)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench measurement {fields['loop']} {fields['protocol']} failed: {done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_benchmark(fixtures: list[str], shots: list[int], episodes: int, threads: int, prefetch: int,
                  cache_mb: int | None, repeats: int, overlap_episodes: int) -> dict:
    from fssbench.protocols.bench_fixtures import FIXTURES, prepare_fixture

    rows = []
    for fixture in fixtures:
        stderr.print(f"bench: preparing the {fixture}-like fixture (generated once into the cache)")
        root = str(prepare_fixture(fixture, tuple(shots), episodes))
        for shot in shots:
            common = {"fixture": fixture, "protocol": FIXTURES[fixture][1].format(shot=shot), "root": root,
                      "episodes": episodes, "threads": threads}
            runs: dict[str, list[dict]] = {"fssbench": [], "hsnet": []}
            for repeat in range(repeats):
                for loop in ("fssbench", "hsnet") if repeat % 2 == 0 else ("hsnet", "fssbench"):
                    stderr.print(f"bench: {loop} {common['protocol']} ({repeat + 1}/{repeats})")
                    runs[loop].append(_measure(loop=loop, prefetch=prefetch, cache_mb=cache_mb, **common))
            ours, theirs = runs["fssbench"], runs["hsnet"]
            seconds = statistics.median(run["seconds"] for run in ours)
            baseline = statistics.median(run["seconds"] for run in theirs)
            rows.append({**common, "fssbench_s": seconds, "hsnet_s": baseline, "ratio": baseline / seconds,
                         "fssbench_rss_mb": max(run["peak_rss_mb"] for run in ours),
                         "hsnet_rss_mb": max(run["peak_rss_mb"] for run in theirs),
                         "loads": theirs[0]["images_decoded"], "decoded": ours[0]["images_decoded"],
                         "cache_hits": ours[0]["cache_hits"], "cache_peak_mb": ours[0]["cache_peak_mb"],
                         "miou": (ours[0]["miou"], theirs[0]["miou"])})
    overlap = None
    if overlap_episodes:
        fixture, shot = fixtures[0], shots[0]
        stderr.print(f"bench: overlap with a sleeping adapter ({fixture}-like, {shot}-shot)")
        overlap = _measure(loop="overlap", fixture=fixture, protocol=FIXTURES[fixture][1].format(shot=shot),
                           root=str(prepare_fixture(fixture, (shot,), overlap_episodes)), episodes=overlap_episodes,
                           threads=threads, prefetch=prefetch, cache_mb=cache_mb)
        overlap.update(fixture=fixture, shot=shot, episodes=overlap_episodes)
    return {"threads": threads, "prefetch": prefetch, "cache_mb": cache_mb, "rows": rows, "overlap": overlap}


def to_markdown(result: dict) -> str:
    budget = "default" if result["cache_mb"] is None else f"{result['cache_mb']} MB"
    lines = [f"torch threads {result['threads']} (both loops); fssbench --prefetch {result['prefetch']}, "
             f"--cache-mb {budget}", "",
             "| fixture | protocol | episodes | image loads | fssbench decodes | fssbench s | HSNet-style s | ratio "
             "| fssbench peak RSS MB | HSNet-style peak RSS MB | mIoU (both) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['fixture']}-like | {row['protocol']} | {row['episodes']} | {row['loads']} | "
                     f"{row['decoded']} | {row['fssbench_s']:.1f} | {row['hsnet_s']:.1f} | {row['ratio']:.2f}x | "
                     f"{row['fssbench_rss_mb']:.0f} | {row['hsnet_rss_mb']:.0f} | "
                     f"{row['miou'][0]:.1f} / {row['miou'][1]:.1f} |")
    overlap = result["overlap"]
    if overlap:
        lines += ["", f"Overlap ({overlap['fixture']}-like, {overlap['shot']}-shot, {overlap['episodes']} episodes): "
                  f"loop alone {overlap['load_s']:.1f} s, adapter compute {overlap['compute_s']:.1f} s, "
                  f"serial (--prefetch 0) {overlap['serial_s']:.1f} s, overlapped {overlap['overlapped_s']:.1f} s; "
                  f"efficiency max(load, compute) / total = {overlap['efficiency']:.2f}"]
    return "\n".join(lines) + "\n"


def _int_list(text: str, flag: str) -> list[int]:
    from fssbench.harness.errors import UsageError

    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected comma-separated numbers, e.g. 1,5") from None


@app.command("bench")
def bench_command(
    fixture: str = typer.Option("coco,pascal", help="Fixtures: coco and/or pascal (comma-separated)."),
    shot: str = typer.Option("1,5", help="Shots (comma-separated)."),
    episodes: int = typer.Option(1000, min=1, help="Episodes of fold 0 per run."),
    threads: int = typer.Option(1, min=1, help="Torch threads of both loops."),
    prefetch: int = typer.Option(2, min=0, help="fssbench's --prefetch."),
    cache_mb: Optional[int] = typer.Option(None, "--cache-mb", min=0, help="fssbench's --cache-mb (default: its default)."),
    repeats: int = typer.Option(1, min=1, help="Runs of each loop, alternating; the median is reported."),
    overlap_episodes: int = typer.Option(200, min=0, help="Episodes of the overlap measurement (0: skip it)."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Also write the table to this file."),
    json_output: bool = typer.Option(False, "--json", help="Print the results as JSON instead of the table."),
    measure: Optional[str] = typer.Option(None, "--measure", hidden=True),
) -> None:
    """Compare fssbench's loop with an HSNet-style loop on generated COCO-like and PASCAL-like data."""
    from fssbench.harness.errors import UsageError

    if measure is not None:
        from fssbench.cli.bench_measure import main

        main(measure)
        return
    fixtures = fixture.split(",")
    unknown = sorted(set(fixtures) - {"coco", "pascal"})
    if unknown:
        raise UsageError(f"--fixture {fixture!r}: unknown {', '.join(unknown)}; expected coco and/or pascal")
    shots = _int_list(shot, "--shot")
    if any(value not in (1, 5) for value in shots):
        raise UsageError(f"--shot {shot!r}: the fixtures' protocols have 1 and 5 shots")
    result = run_benchmark(fixtures, shots, episodes, threads, prefetch, cache_mb, repeats, overlap_episodes)
    table = to_markdown(result)
    if markdown is not None:
        markdown.write_text(table)
    if json_output:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        stdout.print(table, markup=False, highlight=False)
