"""AlignDiff's synthesis of one class's samples, on the synthesis layer: the run's image source (looked up
in fssbench.registry.sources), v* per support image (textual inversion, kept in the store), N samples per
class kept in the synthetic-set store, with the cost per stage, the mask quality per stage and the hash of
the synthetic set used, for the run record.

Prompts: "a photo of a v* <class>" (v* of support k conditions samples k, k + K, k + 2K, ...), or with
textual inversion off the plain "a photo of a <class>" (the paper's Table 1 "Text" rows). Sample i is
generated with seed i (as the authors' generator). Class words are the dataset's class name with
underscores as spaces. Samples are shared by every episode and run that asks for the same key: with text
prompts, every episode of a class uses the same N samples; with v*, every episode with the same support.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fssbench import registry
from fssbench.adapters.synthesis.cost import SynthesisCost
from fssbench.adapters.synthesis.quality import MaskQuality
from fssbench.adapters.synthesis.store import SyntheticStore, bytes_tensors, files_sample, sample_files, tensor_bytes
from fssbench.harness.errors import UsageError
from fssbench.harness.image_sources import (ImageSource, Prompt, Sample, SampleRequest, SourceSettings,
                                            canonical_sha256, sample_key, tensor_sha256)

TEMPLATE = "a photo of a {} "  # + the class words; `{}`: v*, or nothing with textual inversion off
INVERSION_OPTIONS = ("inversion_steps", "inversion_lr", "inversion_balance", "inversion_batch")


def class_words(class_name: str) -> str:
    return class_name.replace("_", " ")


def check_source(options: dict[str, Any]) -> type[ImageSource]:
    """The run's image source class, refused (before anything is loaded) when it lacks what AlignDiff needs."""
    source = registry.sources.get(str(options["source"]))
    if not source.gives_coarse_masks:
        raise UsageError(f"the {source.name} image source gives no coarse masks, and AlignDiff starts every synthetic "
                         "sample from its coarse mask (the class words' cross-attention): use --option "
                         "source=diffusers (Stable Diffusion 1.x/2.x), folder (with <class>/coarse/) or demo")
    if options["textual_inversion"] and not source.takes_embeddings:
        raise UsageError(f"the {source.name} image source cannot condition on a learned embedding: "
                         "add --option textual_inversion=false (plain class prompts) or use the diffusers source")
    return source


class Synthesizer:
    def __init__(self, options: dict[str, Any], settings: SourceSettings, store: SyntheticStore | None = None) -> None:
        self.options = options
        self.source: ImageSource = check_source(options).open(settings)
        self.store = store or SyntheticStore()
        self.seed = settings.settings.get("seed", 0)
        self.cost = SynthesisCost()
        self.quality = MaskQuality()
        self.used: dict[str, str] = {}  # sample key sha256 -> image sha256: the synthetic set of this run

    def prompts(self, class_name: str, images: torch.Tensor, masks: torch.Tensor) -> list[Prompt]:
        words = class_words(class_name)
        if not self.options["textual_inversion"]:
            return [Prompt(TEMPLATE + words, words)]
        return [Prompt(TEMPLATE + words, words, self.embedding(words, image, mask)) for image, mask in zip(images, masks)]

    def embedding(self, words: str, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from fssbench.adapters.aligndiff.inversion import invert

        settings = {name: self.options[name] for name in INVERSION_OPTIONS}
        identity = self.source.identity()
        key = {"kind": "embedding", "method": "aligndiff-nm-inversion-v1", "source": identity["weights"],
               "image": tensor_sha256(image.cpu()), "mask": tensor_sha256((mask > 0.5).cpu()), "class_words": words,
               "settings": settings, "seed": self.seed}

        def make() -> tuple[dict[str, bytes], dict[str, Any]]:
            with self.cost.timed("inversion"):
                vector = invert(self.source.model, image, mask, words, settings, self.seed)
            return {"embedding.safetensors": tensor_bytes({"v": vector})}, {}

        return bytes_tensors(self.store.get_or_make(key, make)["embedding.safetensors"])["v"]

    def samples(self, class_id: int, class_name: str, images: torch.Tensor, masks: torch.Tensor) -> list[Sample]:
        """N samples of the class, conditioned on the supports images [K, 3, H, W] in [0, 1], masks [K, H, W]."""
        prompts = self.prompts(class_name, images, masks)
        samples = []
        for index in range(int(self.options["n_samples"])):
            request = SampleRequest(class_id, class_name, seed=index, prompt=prompts[index % len(prompts)])
            key = sample_key(self.source, request)

            def make() -> tuple[dict[str, bytes], dict[str, Any]]:
                with self.cost.timed("generation"):
                    return sample_files(self.source.generate(request)), {}

            files = self.store.get_or_make(key, make)
            self.used[canonical_sha256(key)] = hashlib.sha256(files["image.png"]).hexdigest()
            samples.append(files_sample(files))
        return samples

    def report(self) -> dict[str, Any]:
        return {"source": self.source.identity(),
                "synthetic_set_sha256": canonical_sha256(sorted(self.used.items())),
                "samples_used": len(self.used),
                "store": {"root": str(self.store.root), "hits": self.store.counts.hits, "made": self.store.counts.made,
                          "corrupt": self.store.counts.corrupt},
                "cost": self.cost.summary(), "mask_quality": self.quality.summary()}


def to_resolution(samples: list[Sample], size: tuple[int, int], device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Images [N, 3, H, W] in [0, 1] (bilinear, antialiased), coarse scores [N, H, W] (bilinear) and true
    masks [N, H, W] bool (nearest) at the evaluation size; None where a sample lacks them."""
    def resized(array: np.ndarray, mode: str) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array)).float()
        tensor = tensor.permute(2, 0, 1)[None] if tensor.dim() == 3 else tensor[None, None]
        if tuple(tensor.shape[-2:]) == tuple(size):
            return tensor[0]
        return F.interpolate(tensor, size, mode=mode, **({} if mode == "nearest" else
                                                         {"align_corners": False, "antialias": True}))[0]

    images = torch.stack([resized(sample.image, "bilinear") / 255 for sample in samples]).clamp(0, 1).to(device)
    coarse = (torch.stack([resized(sample.coarse, "bilinear")[0] for sample in samples]).to(device)
              if all(sample.coarse is not None for sample in samples) else None)
    truth = (torch.stack([resized(sample.truth.astype(np.uint8), "nearest")[0] > 0.5 for sample in samples]).to(device)
             if all(sample.truth is not None for sample in samples) else None)
    return images, coarse, truth
