"""HDIG's prompt bank (paper section III-B, eq. 1): diverse prompts per novel class.

Candidates come from a prompt source: the shipped templates (`template_prompts`) or a user's prompt
file (`read_prompt_file`: one prompt per line, `{name}` replaced by the class name, blank lines and
`#` comments skipped). The paper's source, an LLM agent (DeepSeek-V3), is out of scope; its output
saved as a prompt file fits. Candidates are taken in rounds of `round_size` (the paper's s); each is
embedded with the Stable Diffusion text encoder's pooled embedding, L2-normalized, and accepted when
its largest cosine similarity to the prompts accepted so far (the bank grows within a round, D_t^(i))
is below lambda (0.6); rounds continue until the bank holds `target` prompts (the paper's N_tgt,
about the base classes' images per class). A source that runs out first is an error that says how
many prompts passed.

The encoder (`sd_text_encoder`) reads a local diffusers Stable Diffusion folder: SD 3.5's two CLIP
text encoders (CLIP-L and CLIP-G, `text_encoder` and `text_encoder_2`) give their projected pooled
embeddings, concatenated (768 + 1280 = 2048, as the paper); SD 2.1's single OpenCLIP encoder gives its
pooled output. T5 (SD 3.5's third encoder) has no pooled output and is not read.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fssbench.harness.errors import UsageError
from fssbench.harness.extras import require

TextEncoder = Callable[[list[str]], torch.Tensor]  # prompts -> pooled embeddings [P, D]
DEDUP_THRESHOLD = 0.6  # lambda, the paper's value
ROUND_SIZE = 16

SUBJECTS = ("a photo of a {name}", "a close-up photo of a {name}", "a {name} seen from far away",
            "several {name}s together", "a small {name} in a large scene", "a detailed photograph of a {name}",
            "a {name} partly hidden behind other objects", "an old {name}", "a {name} in motion",
            "a cropped view of a {name}")
SETTINGS = ("indoors", "outdoors in a city street", "in the countryside", "at the beach", "in a forest",
            "on a plain table", "in a crowded room", "in the snow", "at night under street lights", "in a garden")
STYLES = ("natural light", "overcast light", "harsh midday sun", "soft studio light", "a wide-angle lens",
          "a telephoto lens")
TEMPLATES = tuple(f"{subject}, {setting}, {style}" for subject, setting, style in
                  itertools.product(SUBJECTS, SETTINGS, STYLES))


def template_prompts(name: str, seed: int = 0) -> list[str]:
    """The shipped templates (subject x setting x light or lens, 600) for class `name`, in a seeded order."""
    order = np.random.default_rng(seed).permutation(len(TEMPLATES))
    return [TEMPLATES[i].format(name=name) for i in order]


def read_prompt_file(path: Path) -> list[str]:
    """A user's prompts, one per line (`{name}` becomes the class name when the bank is built)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"prompt file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read prompt file {path}: {exc}") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not prompts:
        raise UsageError(f"prompt file {path} holds no prompt (one per line; blank lines and # comments are "
                         "skipped): add prompts or use the shipped templates")
    return prompts


def for_class(prompts: Iterable[str], name: str) -> list[str]:
    """`{name}` filled in, exact repeats dropped (first kept)."""
    return list(dict.fromkeys(prompt.replace("{name}", name) for prompt in prompts))


def deduplicate(candidates: Sequence[str], encode: TextEncoder, threshold: float = DEDUP_THRESHOLD,
                target: int | None = None, round_size: int = ROUND_SIZE) -> list[str]:
    """Eq. 1 greedily, in rounds of `round_size` candidates: a candidate is accepted when its largest cosine
    similarity to the accepted prompts is below `threshold` (the first always is); stops at `target`."""
    accepted: list[str] = []
    bank: list[torch.Tensor] = []
    for start in range(0, len(candidates), round_size):
        chunk = list(candidates[start:start + round_size])
        with torch.no_grad():
            embeddings = F.normalize(encode(chunk).float(), dim=1)
        for prompt, embedding in zip(chunk, embeddings):
            if bank and (torch.stack(bank) @ embedding).max().item() >= threshold:
                continue
            accepted.append(prompt)
            bank.append(embedding)
            if target is not None and len(accepted) == target:
                return accepted
    return accepted


def build_prompt_bank(name: str, prompts: Iterable[str], encode: TextEncoder, target: int,
                      threshold: float = DEDUP_THRESHOLD, round_size: int = ROUND_SIZE) -> list[str]:
    """`target` prompts for class `name`, deduplicated (eq. 1); an error when the source runs out first."""
    if target < 1:
        raise UsageError(f"the prompt bank's target size must be at least 1, got {target}")
    candidates = for_class(prompts, name)
    bank = deduplicate(candidates, encode, threshold, target, round_size)
    if len(bank) < target:
        raise UsageError(f"class {name!r}: only {len(bank)} of {len(candidates)} candidate prompts have a cosine "
                         f"similarity below {threshold} to each other, {target} wanted; add more varied prompts "
                         "(a prompt file), lower the target or raise the threshold")
    return bank


class PooledTextEncoder:
    """Stable Diffusion's CLIP text encoders: prompts -> their pooled embeddings, concatenated [P, D]."""

    def __init__(self, encoders: list[tuple[object, torch.nn.Module]], device: torch.device | str = "cpu") -> None:
        self.encoders = [(tokenizer, model.to(device).eval()) for tokenizer, model in encoders]
        self.device = device

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        pooled = []
        for tokenizer, model in self.encoders:
            tokens = tokenizer(prompts, padding="max_length", max_length=model.config.max_position_embeddings,
                               truncation=True, return_tensors="pt")
            with torch.no_grad():
                output = model(input_ids=tokens.input_ids.to(self.device))
            pooled.append(output.text_embeds if hasattr(output, "text_embeds") else output.pooler_output)
        return torch.cat(pooled, dim=1)


def sd_text_encoder(folder: Path, device: torch.device | str = "cpu") -> PooledTextEncoder:
    """The pooled text encoders of a local diffusers Stable Diffusion folder (SD 3.5: text_encoder and
    text_encoder_2; SD 2.1: text_encoder), read with local_files_only."""
    transformers = require("transformers", "Syn4Seg's prompt deduplication (HDIG)", "synthesis")
    folder = Path(folder)
    encoders = []
    for suffix in ("", "_2"):
        config = folder / f"text_encoder{suffix}" / "config.json"
        if not config.is_file():
            continue
        architecture = json.loads(config.read_text())["architectures"][0]
        if architecture not in ("CLIPTextModel", "CLIPTextModelWithProjection"):
            raise UsageError(f"{config}: a {architecture}, expected a CLIP text encoder of Stable Diffusion")
        model = getattr(transformers, architecture).from_pretrained(config.parent, local_files_only=True)
        tokenizer = transformers.CLIPTokenizer.from_pretrained(folder / f"tokenizer{suffix}", local_files_only=True)
        encoders.append((tokenizer, model))
    if not encoders:
        raise UsageError(f"{folder} holds no text_encoder/config.json: pass the local diffusers folder of Stable "
                         "Diffusion 3.5 (stabilityai/stable-diffusion-3.5-large) or 2.1 "
                         "(stabilityai/stable-diffusion-2-1)")
    return PooledTextEncoder(encoders, device)
