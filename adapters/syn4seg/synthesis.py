"""Syn4Seg's synthetic images (HDIG, paper section III-B): a prompt bank per novel class, one image per
prompt from the synthesis layer's image source, kept in the synthetic-set store.

Prompts (`--option prompts`): `hdig` builds the bank from the shipped templates, or from a user's prompt
file (`--weights prompts=FILE`, hashed into the record like any --weights), deduplicated as eq. 1 says;
`class-name` gives every image the plain "a photo of a <class>" (Table II's row without HDIG).

Deduplication needs the Stable Diffusion text encoder (`--weights sd=DIR`, the diffusers folder).
`--option dedup`: `auto` deduplicates when that folder is given and takes the first N candidates in the
source's order otherwise; `on` requires it; `off` never deduplicates. With the `demo` source there is no
text encoder: the bank is then the first N (seeded) templates, and since the demo's composites depend on
the class and the seed only, never on the prompt, HDIG cannot change a demo image at all. A random or
tiny text encoder would give similarities that mean nothing, so none is offered.

Image i of a class is generated from prompt i of its bank with seed i. The images depend on the prompts
only, never on the supports: every run and fold that asks for a class gets the same store entries.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fssbench import registry
from fssbench.adapters.syn4seg.prompts import build_prompt_bank, read_prompt_file, sd_text_encoder, template_prompts
from fssbench.adapters.synthesis.cost import SynthesisCost
from fssbench.adapters.synthesis.store import SyntheticStore, files_sample, sample_files
from fssbench.harness.errors import UsageError
from fssbench.harness.image_sources import (ImageSource, Prompt, Sample, SampleRequest, SourceSettings,
                                            canonical_sha256, sample_key)

CLASS_NAME_PROMPT = "a photo of a {name}"


@dataclass
class SyntheticImage:
    class_id: int
    key: str  # sha256 of the store key of the sample
    image_sha256: str
    sample: Sample


def class_words(class_name: str) -> str:
    return class_name.replace("_", " ")


class SyntheticImages:
    """The run's image source, prompt banks (made once per class and process) and samples."""

    def __init__(self, options: dict[str, Any], settings: SourceSettings, store: SyntheticStore,
                 cost: SynthesisCost) -> None:
        self.options, self.store, self.cost = options, store, cost
        self.weights = settings.weights
        if int(options["n_per_class"]) < 1:
            raise UsageError(f"--option n_per_class={options['n_per_class']}: each novel class needs at least one "
                             "synthetic image")
        self.prompt_file = self.weights.get("prompts")
        self.candidates = read_prompt_file(self.prompt_file) if self.prompt_file else None
        dedup = str(options["dedup"])
        if dedup == "on" and "sd" not in self.weights:
            raise UsageError("--option dedup=on needs the Stable Diffusion text encoder: pass --weights sd=DIR "
                             "(a local diffusers Stable Diffusion 3.5 or 2.1 folder), or use dedup=auto/off")
        self.dedup = options["prompts"] == "hdig" and dedup != "off" and "sd" in self.weights
        self.encoder = None
        self.banks: dict[int, list[str]] = {}
        self.source: ImageSource = registry.sources.get(str(options["source"])).open(settings)

    def prompt_source(self) -> dict[str, Any]:
        """How the prompts were made, for the run record."""
        if self.options["prompts"] == "class-name":
            return {"prompts": "class-name", "template": CLASS_NAME_PROMPT, "dedup": "off (one prompt)"}
        reason = ("on: pooled embeddings of the SD text encoder at --weights sd" if self.dedup else
                  "off (--option dedup=off)" if self.options["dedup"] == "off" else
                  "off (no SD text encoder: pass --weights sd=DIR to deduplicate)")
        return {"prompts": "hdig", "candidates": f"prompt file {self.prompt_file}" if self.prompt_file else "templates",
                "dedup": reason, "lambda": float(self.options["lambda"]) if self.dedup else None}

    def bank(self, class_id: int, class_name: str) -> list[str]:
        if class_id in self.banks:
            return self.banks[class_id]
        n, words = int(self.options["n_per_class"]), class_words(class_name)
        if self.options["prompts"] == "class-name":
            bank = [CLASS_NAME_PROMPT.format(name=words)] * n
        else:
            candidates = self.candidates if self.candidates is not None else template_prompts(words, seed=class_id)
            if self.dedup:
                if self.encoder is None:
                    self.encoder = sd_text_encoder(Path(self.weights["sd"]))
                with self.cost.timed("prompt_dedup"):
                    bank = build_prompt_bank(words, candidates, self.encoder, n, float(self.options["lambda"]))
            else:
                bank = list(dict.fromkeys(prompt.replace("{name}", words) for prompt in candidates))[:n]
                if len(bank) < n:
                    source = f"prompt file {self.prompt_file}" if self.prompt_file else "the templates"
                    raise UsageError(f"class {class_name!r}: {source} give {len(bank)} distinct prompts, "
                                     f"--option n_per_class={n} wanted; add prompts or lower n_per_class")
        self.banks[class_id] = bank
        return bank

    def images(self, class_id: int, class_name: str) -> list[SyntheticImage]:
        """The class's N images (store hits or made now)."""
        made = []
        for seed, text in enumerate(self.bank(class_id, class_name)):
            request = SampleRequest(class_id, class_name, seed, Prompt(text, class_words(class_name)))
            key = sample_key(self.source, request)

            def make() -> tuple[dict[str, bytes], dict[str, Any]]:
                with self.cost.timed("generation"):
                    return sample_files(self.source.generate(request)), {"prompt": text}

            files = self.store.get_or_make(key, make)
            made.append(SyntheticImage(class_id, canonical_sha256(key), hashlib.sha256(files["image.png"]).hexdigest(),
                                       files_sample(files)))
        return made
