"""Tasks as strategies: what the one episode loop (runner.py) asks of a task.

A task (episodic FSS, generalized FSS, and the augmented or trained tasks to come) owns its manifest
kind, the adapter interface it calls, how a batch of work units is loaded, called and checked, its
metric state, the journal payload of a scored unit and its record section. The runner knows none of
this: it walks a fold's groups of units (FSS: one group of episodes; GFSS: one group per run, adapted
to once) in batches, times each phase and journals each unit before the next batch starts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable

import torch

from fssbench.harness.contract import Adapter
from fssbench.harness.datasets import DatasetReader
from fssbench.harness.errors import UsageError
from fssbench.harness.loading import EpisodeLoader
from fssbench.harness.metrics import MetricSpec
from fssbench.harness.record import FoldResult, MetricValue
from fssbench.harness.specs import ProtocolSpec

Payload = dict[str, Any]  # a scored unit as the journal keeps it (JSON)


@dataclass(frozen=True)
class FoldContext:
    """What a fold's work needs besides its manifest."""

    method: str
    adapter: Adapter
    loader: EpisodeLoader
    reader: DatasetReader
    device: torch.device
    predictions: Callable[[Any, torch.Tensor], None] | None = None  # save(unit, its scored prediction)


@dataclass
class Group:
    """Units of work that share one preparation (GFSS: a run's supports, adapted to once)."""

    units: list[Any]
    prepare: Callable[[], None] | None = None
    name: str = ""  # the meta key under which the preparation time is journaled


class FoldRun(ABC):
    """One fold of one task: its metric state, its groups of units and how each batch is handled."""

    @abstractmethod
    def key(self, unit: Any) -> str:
        """The unit's journal key, unique within the fold."""

    @abstractmethod
    def groups(self) -> Iterable[Group]: ...

    def expect(self, units: list[Any]) -> None:
        """The units about to be loaded, in order, before the first is (the decode cache keeps what they
        reuse); a run whose loading caches nothing ignores them."""

    @abstractmethod
    def load(self, units: list[Any]) -> Any:
        """The batch's inputs on the device (timed as data loading)."""

    @abstractmethod
    def call(self, inputs: Any) -> Any:
        """The adapter's output for the batch (timed as compute, under inference mode)."""

    @abstractmethod
    def score(self, units: list[Any], inputs: Any, output: Any) -> list[Payload]:
        """Check the output (errors name the unit) and score each unit."""

    @abstractmethod
    def update(self, key: str, payload: Payload) -> None:
        """Add a scored unit (fresh or from the journal) to the fold's metric state."""

    @abstractmethod
    def done(self) -> set[str]:
        """Keys of the units scored so far."""

    @abstractmethod
    def running_score(self) -> float | None:
        """The headline metric so far, for progress displays."""

    @abstractmethod
    def result(self, preparation_ms: dict[str, float]) -> FoldResult: ...


class Task(ABC):
    name: ClassVar[str]
    metrics: ClassVar[tuple[MetricSpec, ...]]
    interface: ClassVar[type[Adapter]]  # the adapter interface this task calls

    def check(self, method: str, adapter_class: type[Adapter], spec: ProtocolSpec,
              original_resolution: bool) -> None:
        """Refuse, before any work, what this task cannot run."""
        if not issubclass(adapter_class, self.interface):
            raise UsageError(f"method {method!r} does not do task {spec.task!r} of protocol {spec.name!r} "
                             f"(it does: {', '.join(sorted(adapter_class.tasks)) or 'none'})")
        if spec.support not in adapter_class.support_annotations:
            raise UsageError(f"method {method!r} does not accept {spec.support!r} support annotations of protocol "
                             f"{spec.name!r} (it accepts: {', '.join(sorted(adapter_class.support_annotations))})")

    @abstractmethod
    def fold_run(self, context: FoldContext, manifest: Any) -> FoldRun: ...

    def summarize(self, results: list[FoldResult]) -> list[MetricValue]:
        """The declared metrics as the mean over folds (tasks add intervals where they have them)."""
        return [MetricValue(name=spec.name, label=spec.label, higher_is_better=spec.higher_is_better,
                            value=sum(result.metrics[spec.name] for result in results) / len(results)
                            if results else None)
                for spec in self.metrics]
