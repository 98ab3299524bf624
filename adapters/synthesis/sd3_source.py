"""The `sd3` image source: Stable Diffusion 3.x (3.5 Large/Medium) from a local diffusers folder, seeded per sample.

`--weights sd=DIR` names a folder in diffusers layout (as `save_pretrained` writes it, e.g. a download of
stabilityai/stable-diffusion-3.5-large or stable-diffusion-3.5-medium); it is the folder Syn4Seg's prompt
deduplication reads its CLIP-L/CLIP-G text encoders from, so one folder serves both:

    DIR/model_index.json  DIR/transformer/  DIR/vae/  DIR/text_encoder/  DIR/text_encoder_2/  DIR/tokenizer/
    DIR/tokenizer_2/  DIR/scheduler/  and optionally DIR/text_encoder_3/ + DIR/tokenizer_3/ (T5-XXL)

A missing part is named with this layout; a folder whose model_index.json names a Stable Diffusion 1.x/2.x
pipeline is refused, naming the `diffusers` source. The folder is read with local_files_only (nothing is
downloaded) by diffusers' StableDiffusion3Pipeline, whose own scheduler (FlowMatchEulerDiscreteScheduler for
the 3.5 releases) samples.

Settings: `cfg` (5.0) and `steps` (40), Syn4Seg's paper values for SD 3.5-Large; `resolution` (0: the
transformer's native size, 1024 for 3.5); `t5` (`auto`: on when the folder has text_encoder_3/, `on`, `off`:
T5 is not loaded and its tokens are zeros, which SD3 supports); `dtype` (`float32`; `float16`/`bfloat16` on
CUDA only, where SD 3.5-Large's 8B transformer needs them to fit). Sample s starts from a CPU torch.Generator
seeded with s, at the run's device, so a sample is reproducible.

What it does not do: coarse masks (SD3's joint attention has no UNet cross-attention maps to read, so
`gives_coarse_masks` is False) and textual inversion (a prompt carrying a learned embedding v* is refused:
AlignDiff's inversion trains one token of SD 1.x/2.x's single CLIP text encoder, while SD3 conditions on two
CLIP encoders and T5 at once).

Random weights (`--random-init`): `sd_config=tiny` (the setting name the `diffusers` source and both synthesis
methods already use) builds a small SD3Transformer2DModel, AutoencoderKL, two CLIPTextModelWithProjection with
the character-level tokenizer of fssbench.adapters.synthesis.diffusers_source, no T5, at 64x64, for tests. A
full-size SD 3.5 at random init is not offered: its transformer alone is 8B parameters (32 GB in fp32); its
cost is measured by fssbench.adapters.synthesis.sd3_timing instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fssbench.adapters.synthesis.diffusers_source import char_tokenizer
from fssbench.harness.errors import UsageError
from fssbench.harness.extras import require
from fssbench.harness.image_sources import ImageSource, Sample, SampleRequest, SourceSettings
from fssbench.harness.weights import sha256_of_path

PURPOSE = "the sd3 image source (Stable Diffusion 3.x)"
SD3_PARTS = ("model_index.json", "transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2",
             "scheduler")
T5_PARTS = ("text_encoder_3", "tokenizer_3")
SD3_LAYOUT = ("a Stable Diffusion 3.x folder in diffusers layout: model_index.json, transformer/, vae/, text_encoder/, "
              "text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/, optionally text_encoder_3/ + tokenizer_3/ (T5) "
              "(e.g. stabilityai/stable-diffusion-3.5-large saved with save_pretrained)")
DEFAULT_SETTINGS = {"cfg": 5.0, "steps": 40, "resolution": 0, "t5": "auto", "dtype": "float32", "sd_config": "tiny"}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SWITCH = {"auto": None, "on": True, "true": True, "off": False, "false": False}

# The tiny random config (tests): the dimension rules of SD3 kept at small sizes. The transformer's
# caption_projection_dim is its inner width (heads x head_dim); joint_attention_dim takes the two CLIP hidden
# states side by side (32 + 32) and pooled_projection_dim their two projections (32 + 32); 16 latent channels
# as SD3's VAE; a 2-level VAE (scale 2) and 32x32 latents give 64x64 images.
TINY_TRANSFORMER = {"sample_size": 32, "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 2,
                    "attention_head_dim": 8, "num_attention_heads": 2, "joint_attention_dim": 64,
                    "caption_projection_dim": 16, "pooled_projection_dim": 64, "pos_embed_max_size": 32,
                    "qk_norm": "rms_norm"}
TINY_VAE = {"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2, "latent_channels": 16, "layers_per_block": 1,
            "norm_num_groups": 4, "sample_size": 64, "scaling_factor": 1.5305, "shift_factor": 0.0609,
            "use_quant_conv": False, "use_post_quant_conv": False}
TINY_CLIP = {"vocab_size": 514, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 32}
SD3_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0}  # SD 3.x's scheduler_config.json


def random_pipeline(config: str, seed: int):
    """StableDiffusion3Pipeline with random weights (`tiny` only), built after torch.manual_seed(seed)."""
    if config != "tiny":
        raise UsageError(f"--option sd_config={config} with --random-init: the sd3 source builds only the tiny "
                         "config (--option sd_config=tiny); a full-size SD 3.5 at random init does not fit in memory "
                         "here (its transformer is 8B parameters); time it with "
                         "`python -m fssbench.adapters.synthesis.sd3_timing`")
    diffusers = require("diffusers", PURPOSE, "synthesis")
    transformers = require("transformers", PURPOSE, "synthesis")
    torch.manual_seed(seed)
    tokenizers = [char_tokenizer(), char_tokenizer()]
    encoders = [transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(
        **TINY_CLIP, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)) for tokenizer in tokenizers]
    return diffusers.StableDiffusion3Pipeline(
        transformer=diffusers.SD3Transformer2DModel(**TINY_TRANSFORMER),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER),
        vae=diffusers.AutoencoderKL(**TINY_VAE),
        text_encoder=encoders[0], tokenizer=tokenizers[0], text_encoder_2=encoders[1], tokenizer_2=tokenizers[1],
        text_encoder_3=None, tokenizer_3=None)


def check_layout(folder: Path) -> bool:
    """Refuse a folder that is not an SD 3.x pipeline, naming what is missing; True when it holds T5."""
    if not folder.is_dir():
        raise UsageError(f"--weights sd={folder}: no such folder; expected {SD3_LAYOUT}")
    index_file = folder / "model_index.json"
    if index_file.is_file():
        try:
            index = json.loads(index_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"cannot read {index_file}: {exc}; expected {SD3_LAYOUT}") from None
        pipeline = str(index.get("_class_name", "")) if isinstance(index, dict) else ""
        if "unet" in index or pipeline.startswith("StableDiffusionPipeline"):
            raise UsageError(f"--weights sd={folder} holds a Stable Diffusion 1.x/2.x pipeline ({pipeline}): use the "
                             "diffusers image source (--option source=diffusers) for it; the sd3 source takes "
                             f"{SD3_LAYOUT}")
        if not pipeline.startswith("StableDiffusion3"):
            raise UsageError(f"--weights sd={folder} holds a {pipeline or 'pipeline without _class_name'}; the sd3 "
                             f"image source takes {SD3_LAYOUT}")
    missing = [part for part in SD3_PARTS if not (folder / part).exists()]
    if missing:
        raise UsageError(f"--weights sd={folder} lacks {', '.join(missing)}; expected {SD3_LAYOUT}")
    t5 = [(folder / part).exists() for part in T5_PARTS]
    if any(t5) and not all(t5):
        absent = T5_PARTS[t5.index(False)]
        raise UsageError(f"--weights sd={folder} has T5 only in part: {absent}/ is missing (T5 needs both "
                         f"{' and '.join(T5_PARTS)}); expected {SD3_LAYOUT}")
    return all(t5)


def pretrained_pipeline(folder: Path, t5: bool, dtype: torch.dtype):
    diffusers = require("diffusers", PURPOSE, "synthesis")
    require("transformers", PURPOSE, "synthesis")
    without_t5 = {} if t5 else {"text_encoder_3": None, "tokenizer_3": None}
    try:
        return diffusers.StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True, dtype=dtype,
                                                                  **without_t5)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--weights sd={folder}: cannot load it as a Stable Diffusion 3.x pipeline ({exc}); expected "
                         f"{SD3_LAYOUT}") from None


def setting_switch(name: str, value: Any) -> bool | None:
    key = str(value).lower()
    if key not in SWITCH:
        raise UsageError(f"sd3 image source: {name}={value!r}; expected one of auto, on, off")
    return SWITCH[key]


class SD3Source(ImageSource):
    name = "sd3"
    description = "Stable Diffusion 3.x (3.5 Large/Medium) from a local diffusers folder, seeded per sample"
    gives_coarse_masks = False
    takes_embeddings = False

    def __init__(self, pipeline, weights: str, device: torch.device, settings: dict[str, Any]) -> None:
        self.weights, self.device = weights, device
        self.settings = {key: settings.get(key, default) for key, default in DEFAULT_SETTINGS.items()}
        self.dtype = self.settings["dtype"] = str(self.settings["dtype"])
        self.pipeline = pipeline.to(device)
        self.pipeline.set_progress_bar_config(disable=True)
        self.t5 = pipeline.text_encoder_3 is not None
        transformer = pipeline.transformer.config
        native = transformer.sample_size * pipeline.vae_scale_factor
        self.resolution = int(self.settings["resolution"]) or native
        step = pipeline.vae_scale_factor * transformer.patch_size
        largest = transformer.pos_embed_max_size * step
        if self.resolution % step or not 0 < self.resolution <= largest:
            raise UsageError(f"resolution {self.resolution}: the sd3 source needs a multiple of {step} up to {largest} "
                             f"(0: the model's native {native})")

    @classmethod
    def open(cls, settings: SourceSettings) -> SD3Source:
        given = settings.settings
        dtype = str(given.get("dtype", DEFAULT_SETTINGS["dtype"]))
        if dtype not in DTYPES:
            raise UsageError(f"sd3 image source: dtype={dtype!r}; expected one of {', '.join(DTYPES)}")
        if dtype != "float32" and settings.device.type != "cuda":
            raise UsageError(f"sd3 image source: dtype={dtype} needs a CUDA device (--device cuda); on "
                             f"{settings.device.type} it runs in float32")
        t5 = setting_switch("t5", given.get("t5", DEFAULT_SETTINGS["t5"]))
        if settings.random_init:
            config = str(given.get("sd_config", DEFAULT_SETTINGS["sd_config"]))
            seed = int(given.get("seed", 0))
            if t5:
                raise UsageError("sd3 image source: t5=on with --random-init; the tiny config has no T5 (t5=auto/off)")
            pipeline = random_pipeline(config, seed)
            if dtype != "float32":
                pipeline.to(dtype=DTYPES[dtype])
            return cls(pipeline, f"random-init:{config}:seed{seed}", settings.device, given)
        if "sd" not in settings.weights:
            raise UsageError(f"the sd3 image source needs --weights sd=DIR ({SD3_LAYOUT}), or --random-init")
        folder = Path(settings.weights["sd"])
        has_t5 = check_layout(folder)
        if t5 and not has_t5:
            raise UsageError(f"sd3 image source: t5=on but --weights sd={folder} lacks {' and '.join(T5_PARTS)}; "
                             "use t5=auto or t5=off")
        pipeline = pretrained_pipeline(folder, has_t5 if t5 is None else t5, DTYPES[dtype])
        return cls(pipeline, sha256_of_path(folder), settings.device, given)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "weights": self.weights, "scheduler": type(self.pipeline.scheduler).__name__,
                "cfg": float(self.settings["cfg"]), "steps": int(self.settings["steps"]),
                "resolution": self.resolution, "t5": self.t5, "dtype": self.dtype}

    @torch.no_grad()
    def generate(self, request: SampleRequest) -> Sample:
        prompt = request.prompt
        if prompt is None:
            raise UsageError("the sd3 image source generates from a text prompt")
        if prompt.embedding is not None:
            raise UsageError("the sd3 image source cannot condition on a learned embedding (textual inversion): "
                             "AlignDiff's inversion trains one token of SD 1.x/2.x's single CLIP text encoder, while "
                             "SD 3.x conditions on two CLIP encoders and T5 at once; use plain text prompts "
                             "(--option textual_inversion=false) or the diffusers source with an SD 1.x/2.x folder")
        generator = torch.Generator().manual_seed(request.seed)
        images = self.pipeline(prompt=prompt.plain_text, height=self.resolution, width=self.resolution,
                               num_inference_steps=int(self.settings["steps"]),
                               guidance_scale=float(self.settings["cfg"]), generator=generator, output_type="pt").images
        image = (images[0].float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)
        return Sample(image=np.ascontiguousarray(image.cpu().numpy()))
