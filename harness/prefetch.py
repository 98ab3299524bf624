"""Loading overlapped with compute: while the adapter runs batch i, batches i+1..i+depth load on
`depth` background threads (decoding with PIL releases the GIL, so they run in parallel with the
method and with each other). Batches come out in order; a loading error surfaces when the loop
reaches the batch that raised it, after every earlier batch was scored and journaled. Depth 0 loads
each batch when it is reached, in the calling thread.

Results do not depend on the depth: loading is a pure function of the episode (support annotations
are seeded per episode and support), and the decode cache is shared safely between the threads.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

Chunk = TypeVar("Chunk")

DEFAULT_DEPTH = 2


class Prefetcher:
    """`with Prefetcher(load, depth) as batches: for chunk, wait in batches.over(chunks): inputs = wait()`:
    `wait()` returns `load(chunk)`, blocking only as long as the batch is not loaded yet."""

    def __init__(self, load: Callable[[Any], Any], depth: int) -> None:
        if depth < 0:
            raise ValueError(f"prefetch depth {depth} < 0")
        self.load, self.depth = load, depth
        self._executor = ThreadPoolExecutor(depth, thread_name_prefix="fssbench-load") if depth else None

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._executor is not None:  # batches still queued are dropped; running ones finish
            self._executor.shutdown(wait=True, cancel_futures=True)

    def over(self, chunks: Iterable[Chunk]) -> Iterator[tuple[Chunk, Callable[[], Any]]]:
        if self._executor is None:
            for chunk in chunks:
                yield chunk, lambda chunk=chunk: self.load(chunk)
            return
        upcoming = iter(chunks)
        queued: deque[tuple[Chunk, Future]] = deque()
        try:
            while True:
                while len(queued) <= self.depth:  # the batch handed out next, and `depth` behind it
                    chunk = next(upcoming, _END)
                    if chunk is _END:
                        break
                    queued.append((chunk, self._executor.submit(self.load, chunk)))
                if not queued:
                    return
                chunk, future = queued.popleft()
                yield chunk, future.result
        finally:
            for _, future in queued:
                future.cancel()


_END: Any = object()
