"""`aligndiff+<X>`: AlignDiff's synthetic supports for any registered FSS method X (the paper's "1R+NS").

Per episode: N samples of the episode's class from the run's image source (conditioned on the real
supports through v*, or by plain class prompts), their coarse masks (the source's foreground score
thresholded at `coarse_threshold`), then with `algorithm1` on AlignDiff's Algorithm 1 with X as the FSS
model (fssbench.adapters.aligndiff.algorithm), else the coarse masks as they are; finally X segments the
query with the K real + N synthetic supports. X is conditioned by calling its `predict` with that
enlarged support set, so any FSS method works: its setup sees `shot` = K + N; a method that returns one
prediction per support (`shot_merge = "vote"`) is merged here by HSNet's vote at the evaluation resolution
(with --original-resolution the harness would vote at the original size; composed runs vote before).

`compose(base, name)` builds the class when the registry resolves `aligndiff+<X>`: it takes X's
declarations (annotations: masks only, since both textual inversion and Algorithm 1 need the support
masks; weights: X's plus the source's `sd` and `images`; options: X's next to AlignDiff's; backbones) and
names AlignDiff's modules, the image sources' and X's in `code_modules` (the run's code identity).

Options, with the paper's or the authors' values where they give one (else stated):
- n_samples 20 (the paper's 1R+20S), source "diffusers" (any name in fssbench.registry.sources),
  textual_inversion on, algorithm1 on, alpha 0.8 (the authors' consensus_iou_threshold), accepted_mask
  "coarse" (the paper; "prediction": the authors' code), coarse_threshold 0.4 (the authors' att_cutoff);
- inversion_steps 500, inversion_lr 5e-4, inversion_balance (lambda) 0.6, inversion_batch 4 (the authors');
- cfg 7.5, sample_steps 50 (the authors'), resolution 0 (the model's native size), attention_downscale 32
  (the 16x16 maps at 512), sd_config "full" (random-init architecture: SD-2.1; "tiny" for tests);
- coarse_noise 0.35 (the demo source's degraded coarse mask; fssbench's choice, not the paper's);
- segment_batch 8 (synthetic images per call of X in Algorithm 1: memory, not results).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from fssbench import registry
from fssbench.adapters.aligndiff.algorithm import align_masks
from fssbench.adapters.aligndiff.synthesizer import Synthesizer, check_source, to_resolution
from fssbench.harness.contract import EpisodeBatch, FssAdapter, OptionValue, SetupContext, WeightSpec
from fssbench.harness.errors import UsageError
from fssbench.harness.image_sources import SourceSettings
from fssbench.harness.metrics import vote_merge

ALIGNDIFF_OPTIONS: dict[str, OptionValue] = {
    "n_samples": 20, "source": "diffusers", "textual_inversion": True, "algorithm1": True, "alpha": 0.8,
    "accepted_mask": "coarse", "coarse_threshold": 0.4, "inversion_steps": 500, "inversion_lr": 5e-4,
    "inversion_balance": 0.6, "inversion_batch": 4, "cfg": 7.5, "sample_steps": 50, "resolution": 0,
    "attention_downscale": 32, "sd_config": "full", "coarse_noise": 0.35, "segment_batch": 8,
}
ALIGNDIFF_CHOICES = {"accepted_mask": ("coarse", "prediction"), "sd_config": ("full", "tiny")}
SOURCE_WEIGHTS = (
    WeightSpec("sd", "a Stable Diffusion 1.x/2.x folder in diffusers layout (model_index.json, unet/, vae/, "
               "text_encoder/, tokenizer/, scheduler/), for --option source=diffusers",
               "https://huggingface.co/stabilityai/stable-diffusion-2-1-base (save_pretrained)", required=False),
    WeightSpec("images", "a folder of generated images per class (<class>/<name>.png, optional masks/ and "
               "coarse/), for --option source=folder", "images you generated elsewhere", required=False),
)


class AlignDiffAdapter(FssAdapter):
    """AlignDiff around `base_method`; `compose` makes the subclass for a base."""

    base_method: ClassVar[type[FssAdapter]]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        base = cls.base_method
        clash = sorted(set(base.option_defaults) & set(ALIGNDIFF_OPTIONS))
        if clash:
            raise UsageError(f"{cls.__name__}: the base's options {clash} clash with AlignDiff's; the base cannot be "
                             "composed with AlignDiff until one side renames them")
        cls.support_annotations = base.support_annotations & {"mask"}
        cls.weights = (*base.weights, *SOURCE_WEIGHTS)
        cls.supports_random_init = base.supports_random_init
        cls.needs_query_ground_truth = base.needs_query_ground_truth
        cls.option_defaults = {**base.option_defaults, **ALIGNDIFF_OPTIONS}
        cls.option_choices = {**base.option_choices, **ALIGNDIFF_CHOICES}
        cls.backbones = base.backbones
        sources = tuple(entry.target.partition(":")[0] for entry in registry.sources.entries()
                        if entry.origin == "built-in")
        cls.code_modules = (__name__, *sources, *getattr(base, "code_modules", (base.__module__,)))

    def __init__(self, options: dict[str, OptionValue] | None = None, backbone: str | None = None) -> None:
        super().__init__(options, backbone)
        self.base = self.base_method({name: self.options[name] for name in self.base_method.option_defaults}, backbone)
        self.synthesizer: Synthesizer | None = None
        self.moved = 0

    @property
    def backbone(self) -> str | None:
        return self.base.backbone

    def packaged_weights(self) -> dict[str, Path]:
        return self.base.packaged_weights()

    def setup(self, context: SetupContext) -> None:
        n = int(self.options["n_samples"])
        if n < 0:
            raise UsageError(f"--option n_samples={n}: must be >= 0")
        check_source(self.options)  # before the base or the source loads anything
        base_weights = {spec.name for spec in self.base_method.weights}
        self.base.setup(replace(context, shot=context.shot + n,
                                weights={k: v for k, v in context.weights.items() if k in base_weights}))
        settings = {"cfg": self.options["cfg"], "steps": self.options["sample_steps"],
                    "resolution": self.options["resolution"], "attention_downscale": self.options["attention_downscale"],
                    "sd_config": self.options["sd_config"], "coarse_noise": self.options["coarse_noise"],
                    "seed": context.seed}
        self.synthesizer = Synthesizer(self.options, SourceSettings(
            context.device, {k: v for k, v in context.weights.items() if k not in base_weights}, context.random_init,
            context.class_names, settings))
        self.shot = context.shot

    def base_masks(self, batch: EpisodeBatch) -> torch.Tensor:
        """The base's boolean foreground [B, H, W] (per-support predictions voted)."""
        output = self.base.predict(batch)
        if self.base.shot_merge == "vote":
            output = torch.stack([vote_merge(item > 0.5) for item in output])
        return output > 0.5

    def segment(self, batch: EpisodeBatch, item: int, images: torch.Tensor, good_images: torch.Tensor,
                good_masks: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The base conditioned on (good_images, good_masks), predicting the synthetic images[indices]."""
        episode = batch.episodes[item]
        chunk = max(1, int(self.options["segment_batch"]))
        masks = []
        for start in range(0, len(indices), chunk):
            part = indices[start:start + chunk]
            n, k = len(part), len(good_images)
            masks.append(self.base_masks(EpisodeBatch(
                episodes=[replace(episode, query=f"aligndiff-synthetic-{int(i)}") for i in part],
                query_images=images[part],
                support_images=good_images[None].expand(n, -1, -1, -1, -1),
                support_masks=good_masks[None].float().expand(n, -1, -1, -1),
                support_labelled=torch.ones((n, k, *good_masks.shape[-2:]), device=images.device),
                support_annotation="mask", class_names=[batch.class_names[item]] * n)))
        return torch.cat(masks) if masks else torch.zeros((0, *good_masks.shape[-2:]), dtype=torch.bool)

    def augment(self, batch: EpisodeBatch, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The item's support set, real then synthetic: images [K + N, 3, H, W], masks [K + N, H, W]."""
        synthesizer, episode = self.synthesizer, batch.episodes[item]
        real_images, real_masks = batch.support_images[item], batch.support_masks[item]
        samples = synthesizer.samples(episode.class_id, batch.class_names[item], real_images, real_masks)
        if not samples:
            return real_images, real_masks
        images, scores, truth = to_resolution(samples, tuple(real_images.shape[-2:]), real_images.device)
        if scores is None:
            raise UsageError(f"the {synthesizer.source.name} image source gave samples without coarse masks "
                             "(a folder source needs <class>/coarse/); AlignDiff starts from coarse masks")
        with synthesizer.cost.timed("mask_generation", len(samples)):
            coarse = scores >= float(self.options["coarse_threshold"])
            if self.options["algorithm1"]:
                aligned = align_masks(real_images, real_masks, images, coarse,
                                      lambda gi, gm, idx: self.segment(batch, item, images, gi, gm, idx),
                                      float(self.options["alpha"]), str(self.options["accepted_mask"]))
                masks = aligned.masks
                self.moved += int(aligned.accepted.sum())
            else:
                masks = coarse
        if truth is not None:
            self.score_masks(episode.class_id, coarse, masks, truth, aligned if self.options["algorithm1"] else None)
        return torch.cat([real_images, images]), torch.cat([real_masks, masks.float()])

    def score_masks(self, class_id: int, coarse: torch.Tensor, masks: torch.Tensor, truth: torch.Tensor,
                    aligned) -> None:
        quality = self.synthesizer.quality
        for i in range(len(truth)):
            quality.update("coarse", class_id, coarse[i], truth[i])
            if aligned is not None:
                quality.update("fss_only", class_id, aligned.first_predictions[i], truth[i])
                quality.update("algorithm1", class_id, masks[i], truth[i])
                if aligned.accepted[i]:
                    quality.update("algorithm1_accepted", class_id, masks[i], truth[i])

    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        predictions = []
        for item in range(len(batch.episodes)):
            images, masks = self.augment(batch, item)
            predictions.append(self.base_masks(EpisodeBatch(
                episodes=batch.episodes[item:item + 1], query_images=batch.query_images[item:item + 1],
                support_images=images[None], support_masks=masks[None],
                support_labelled=torch.ones_like(masks)[None], support_annotation="mask",
                class_names=batch.class_names[item:item + 1],
                query_masks=None if batch.query_masks is None else batch.query_masks[item:item + 1])))
        return torch.cat(predictions).float()

    def report(self) -> dict[str, Any]:
        if self.synthesizer is None:
            return {}
        return {"method": "aligndiff", "support_set": f"{self.shot}R+{self.options['n_samples']}S",
                "moved_to_good": self.moved, **self.synthesizer.report()}


def compose(base: type, name: str) -> type[AlignDiffAdapter]:
    """The class of `aligndiff+<base>` (called by the registry when it resolves the name)."""
    if isinstance(base, type) and issubclass(base, AlignDiffAdapter):
        raise UsageError(f"method {name!r}: AlignDiff would augment supports it already augmented; use one aligndiff+")
    if not (isinstance(base, type) and issubclass(base, FssAdapter)):
        raise UsageError(f"method {name!r}: AlignDiff augments the supports of an FSS method; "
                         f"{name.partition('+')[2]!r} is not one (it has no FSS predict)")
    return type(f"AlignDiff[{base.__name__}]", (AlignDiffAdapter,), {
        "base_method": base, "__module__": __name__,
        "description": f"AlignDiff (real + synthetic supports) around {base.__name__}"})
