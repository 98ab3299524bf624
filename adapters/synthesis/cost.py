"""The cost of synthesis, per stage (inversion, generation, mask generation), reported apart from the
segmenter's compute: seconds summed and items counted in this process (store hits cost nothing and are
not counted)."""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from fssbench.harness.timing import now


@dataclass
class SynthesisCost:
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    items: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @contextmanager
    def timed(self, stage: str, items: int = 1) -> Iterator[None]:
        started = now()
        try:
            yield
        finally:
            self.seconds[stage] += now() - started
            self.items[stage] += items

    def summary(self) -> dict[str, Any]:
        """{stage: {"s_per_item", "items", "seconds"}}."""
        return {stage: {"s_per_item": self.seconds[stage] / self.items[stage] if self.items[stage] else None,
                        "items": self.items[stage], "seconds": self.seconds[stage]} for stage in self.seconds}
