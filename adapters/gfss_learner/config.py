"""The learner's settings. One preset, `default`, sized for a CPU; tests build smaller ones."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class GfssLearnerConfig:
    name: str
    image_size: int  # training images are resized as the GFSS protocols do: long side to this, padded square
    hidden: int  # channels of the head's 1x1 layer
    embedding: int  # channels of the embedding the cosine classifier (and the novel prototypes) work on
    scale: float  # cosine logits are scale * cos(embedding, class weight)
    batch_size: int
    learning_rate: float
    weight_decay: float
    steps: int  # default training length
    checkpoint_every: int  # training steps between checkpoints
    cache_features: bool  # keep each training image's backbone features after their first computation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GfssLearnerConfig":
        return cls(**{field.name: data[field.name] for field in fields(cls)})


DEFAULT = GfssLearnerConfig(name="default", image_size=417, hidden=128, embedding=64, scale=10.0, batch_size=8,
                            learning_rate=2e-3, weight_decay=1e-4, steps=100, checkpoint_every=50,
                            cache_features=True)
