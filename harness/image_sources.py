"""The image-source contract of the synthesis layer: one labelled synthetic sample per request.

It lives in the core because image sources live on both sides of the adapters | protocols line: the
`diffusers` and `folder` sources in fssbench.adapters.synthesis, the `demo` source next to the demo
dataset in fssbench.protocols.demo_synthesis.

A source is opened once per run (`open(settings)`), states its `identity()` (name, weights hashes or
"random-init", settings: everything that changes its output besides the request) and makes samples with
`generate(request)`. A `Sample` carries the RGB image and, where the source knows them, a coarse mask (a
foreground score in [0, 1], e.g. cross-attention) and the true mask (the demo's composites, a folder with
masks). `sample_key` is what the synthetic-set store files a sample under.

Sources are looked up by name in `fssbench.registry.sources` (a plugin can add one), so the synthesis
methods never import a source module directly.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch


@dataclass(frozen=True)
class SourceSettings:
    """What a run gives its source: device, seed, local weights (`--weights NAME=PATH`), random init, the
    class names of the dataset, and the source's own settings (cfg, steps, resolution, config)."""

    device: torch.device
    weights: dict[str, Path]
    random_init: bool
    class_names: list[str]
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prompt:
    """Text conditioning: `text` with `{}` where the learned adjective goes (e.g. "a photo of a {} cell"),
    the class words whose cross-attention gives the coarse mask, and the learned embedding v* (None: the
    plain text prompt, with the `{}` removed)."""

    template: str
    class_words: str
    embedding: torch.Tensor | None = None

    @property
    def plain_text(self) -> str:
        return " ".join(self.template.replace("{}", "").split())

    def key(self) -> dict[str, Any]:
        return {"template": self.template, "class_words": self.class_words,
                "embedding": tensor_sha256(self.embedding) if self.embedding is not None else None}


@dataclass(frozen=True)
class SampleRequest:
    class_id: int  # the dataset's class id
    class_name: str
    seed: int  # the sample's own seed: the same request gives the same sample
    prompt: Prompt | None = None  # for text-conditioned sources

    def key(self) -> dict[str, Any]:
        return {"class_id": self.class_id, "class_name": self.class_name, "seed": self.seed,
                "prompt": self.prompt.key() if self.prompt else None}


@dataclass
class Sample:
    image: np.ndarray  # HxWx3 uint8
    coarse: np.ndarray | None = None  # HxW float32 foreground score in [0, 1]
    truth: np.ndarray | None = None  # HxW bool



class ImageSource(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    gives_coarse_masks: ClassVar[bool] = False
    gives_true_masks: ClassVar[bool] = False
    takes_embeddings: ClassVar[bool] = False  # can condition on a learned embedding v* (textual inversion)

    @classmethod
    @abstractmethod
    def open(cls, settings: SourceSettings) -> ImageSource: ...

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What besides the request determines a sample (recorded, and part of every sample key)."""

    @abstractmethod
    def generate(self, request: SampleRequest) -> Sample: ...


def sample_key(source: ImageSource, request: SampleRequest) -> dict[str, Any]:
    """What the synthetic-set store files a sample under."""
    return {"kind": "sample", "source": source.identity(), "request": request.key()}


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes (e.g. a support image, a learned embedding)."""
    array = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{array.dtype}{tuple(array.shape)}".encode())
    digest.update(array.view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    return digest.hexdigest()


def canonical_sha256(content: Any) -> str:
    """sha256 of `content` as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
