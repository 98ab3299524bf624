"""The `diffusers` image source: Stable Diffusion (1.x/2.x family) from a local folder, seeded per sample.

`--weights sd=DIR` names a folder in diffusers layout (as `save_pretrained` writes it, e.g. a download of
stabilityai/stable-diffusion-2-1-base or stable-diffusion-2-1):

    DIR/model_index.json  DIR/unet/  DIR/vae/  DIR/text_encoder/  DIR/tokenizer/  DIR/scheduler/

A missing part is named with this layout. Sample s is drawn from a CPU generator seeded with s (as the
authors' generator seeds image i with i), at the run's device; settings: classifier-free guidance scale
`cfg` (7.5, the authors' GUIDANCE_SCALE), `steps` (50, their num_inference_steps), `resolution` (0: the
UNet's native size) and `attention_downscale` (32: the 16x16 cross-attention layers at 512x512). The
folder's own scheduler samples. Every sample comes with the coarse mask of the prompt's class words
(fssbench.adapters.synthesis.attention). Prompts may carry a learned embedding v*: it is written into the
row of the placeholder token added to the tokenizer, which the prompt's `{}` names.

Random weights (`--random-init`): `sd_config=full` builds SD-2.1's UNet, VAE and OpenCLIP-H text encoder
with random weights for timing; `sd_config=tiny` a small UNet/VAE/CLIP at 128x128 for tests. Both use a
character-level tokenizer (the byte alphabet of CLIP's BPE, no merges), since CLIP's vocabulary is part of
the weights; the full config keeps CLIP's 49408-row embedding.

Stable Diffusion 3.x (an MMDiT transformer with joint attention and three text encoders) is the `sd3`
source's (fssbench.adapters.synthesis.sd3_source): a folder whose model_index.json names a
StableDiffusion3Pipeline is refused here, naming `--option source=sd3`.
"""

from __future__ import annotations

import inspect
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fssbench.adapters.synthesis.attention import AttentionRecorder, coarse_mask
from fssbench.harness.errors import UsageError
from fssbench.harness.extras import require
from fssbench.harness.image_sources import ImageSource, Prompt, Sample, SampleRequest, SourceSettings
from fssbench.harness.weights import sha256_of_path

PLACEHOLDER = "<aligndiff-v*>"
SD_PARTS = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler")
SD_LAYOUT = ("a Stable Diffusion 1.x/2.x folder in diffusers layout: model_index.json, unet/, vae/, text_encoder/, "
             "tokenizer/, scheduler/ (e.g. stabilityai/stable-diffusion-2-1-base saved with save_pretrained)")
DEFAULT_SETTINGS = {"cfg": 7.5, "steps": 50, "resolution": 0, "attention_downscale": 32, "sd_config": "tiny"}
TOKENS = 77

SD21_UNET = {
    "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], "layers_per_block": 2, "sample_size": 96,
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "upcast_attention": True,
    "use_linear_projection": True,
}
SD21_VAE = {"block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
            "latent_channels": 4, "layers_per_block": 2, "sample_size": 768,
            "up_block_types": ["UpDecoderBlock2D"] * 4, "scaling_factor": 0.18215}
SD21_TEXT = {"vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
             "num_attention_heads": 16, "max_position_embeddings": TOKENS, "hidden_act": "gelu", "projection_dim": 512}
SD21_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
                  "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": "v_prediction",
                  "num_train_timesteps": 1000}
TINY_UNET = {**SD21_UNET, "attention_head_dim": [2, 2, 2], "block_out_channels": [16, 32, 32],
             "cross_attention_dim": 32, "down_block_types": ["CrossAttnDownBlock2D"] * 3, "layers_per_block": 1,
             "norm_num_groups": 8, "sample_size": 16, "up_block_types": ["CrossAttnUpBlock2D"] * 3}
TINY_VAE = {**SD21_VAE, "block_out_channels": [8, 8, 16, 16], "layers_per_block": 1, "norm_num_groups": 4,
            "sample_size": 128}
TINY_TEXT = {**SD21_TEXT, "vocab_size": 514, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2, "projection_dim": 32}
CONFIGS = {"full": (SD21_UNET, SD21_VAE, SD21_TEXT), "tiny": (TINY_UNET, TINY_VAE, TINY_TEXT)}


class StableDiffusion:
    """The parts of a Stable Diffusion model the synthesis methods use, on one device, in fp32."""

    def __init__(self, tokenizer, text_encoder, unet, vae, scheduler, device: torch.device) -> None:
        self.tokenizer, self.scheduler, self.device = tokenizer, scheduler, device
        self.tokenizer.add_tokens([PLACEHOLDER])
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # the row is always set before use
        self.placeholder_id = tokenizer.convert_tokens_to_ids(PLACEHOLDER)
        self.text_encoder, self.unet, self.vae = (m.to(device).eval().requires_grad_(False)
                                                  for m in (text_encoder, unet, vae))
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.native_resolution = unet.config.sample_size * self.vae_scale

    def token_ids(self, text: str) -> torch.Tensor:
        return self.tokenizer(text, padding="max_length", max_length=TOKENS, truncation=True,
                              return_tensors="pt").input_ids.to(self.device)

    def set_placeholder(self, embedding: torch.Tensor) -> None:
        with torch.no_grad():
            self.text_encoder.get_input_embeddings().weight[self.placeholder_id] = embedding.to(self.device)

    def prompt_ids(self, prompt: Prompt) -> torch.Tensor:
        if prompt.embedding is None:
            return self.token_ids(prompt.plain_text)
        self.set_placeholder(prompt.embedding)
        return self.token_ids(prompt.template.format(PLACEHOLDER))

    def class_tokens(self, ids: torch.Tensor, words: str) -> list[int]:
        """Positions of the class words' tokens in `ids` (the first occurrence, as the authors search it)."""
        wanted = self.tokenizer(words, add_special_tokens=False).input_ids
        row = ids[0].tolist()
        for start in range(len(row) - len(wanted) + 1):
            if row[start:start + len(wanted)] == wanted:
                return list(range(start, start + len(wanted)))
        raise UsageError(f"the prompt does not contain the class words {words!r} within {TOKENS} tokens")

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(ids)[0]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """RGB [N, 3, R, R] in [-1, 1] -> scaled latents (a sample of the posterior, as in training)."""
        return self.vae.encode(images).latent_dist.sample() * self.vae.config.scaling_factor


def char_tokenizer():
    """A CLIP tokenizer over the byte alphabet of CLIP's BPE without merges (random-init models only)."""
    transformers = require("transformers", "the diffusers image source", "synthesis")
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    vocab = {token: index for index, token in enumerate(alphabet + [c + "</w>" for c in alphabet]
                                                          + ["<|startoftext|>", "<|endoftext|>"])}
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(vocab))
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n")
        return transformers.CLIPTokenizer(str(Path(folder) / "vocab.json"), str(Path(folder) / "merges.txt"),
                                          model_max_length=TOKENS, pad_token="<|endoftext|>")


def random_model(config: str, seed: int, device: torch.device) -> StableDiffusion:
    diffusers = require("diffusers", "the diffusers image source", "synthesis")
    transformers = require("transformers", "the diffusers image source", "synthesis")
    unet_config, vae_config, text_config = CONFIGS[config]
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(**unet_config)
    vae = diffusers.AutoencoderKL(**vae_config)
    tokenizer = char_tokenizer()
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        **text_config, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    scheduler = diffusers.DDIMScheduler(**SD21_SCHEDULER)
    return StableDiffusion(tokenizer, text_encoder, unet, vae, scheduler, device)


def check_layout(folder: Path) -> None:
    if not folder.is_dir():
        raise UsageError(f"--weights sd={folder}: no such folder; expected {SD_LAYOUT}")
    index = folder / "model_index.json"
    pipeline = json.loads(index.read_text()).get("_class_name", "") if index.is_file() else ""
    if pipeline.startswith("StableDiffusion3"):  # before the parts: an SD 3.x folder has no unet/
        raise UsageError(f"--weights sd={folder} holds a {pipeline}: use the sd3 image source for it "
                         f"(--option source=sd3); the diffusers image source takes Stable Diffusion 1.x/2.x "
                         f"({SD_LAYOUT})")
    missing = [part for part in SD_PARTS if not (folder / part).exists()]
    if missing:
        raise UsageError(f"--weights sd={folder} lacks {', '.join(missing)}; expected {SD_LAYOUT}")
    if "3" in pipeline or "XL" in pipeline or "Flux" in pipeline:
        raise UsageError(f"--weights sd={folder} holds a {pipeline}; the diffusers image source takes "
                         f"Stable Diffusion 1.x/2.x ({SD_LAYOUT})")


def pretrained_model(folder: Path, device: torch.device) -> StableDiffusion:
    check_layout(folder)
    diffusers = require("diffusers", "the diffusers image source", "synthesis")
    transformers = require("transformers", "the diffusers image source", "synthesis")
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    scheduler = getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config)
    return StableDiffusion(
        transformers.CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
        transformers.CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True, dtype=torch.float32),
        diffusers.UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True, torch_dtype=torch.float32),
        diffusers.AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True, torch_dtype=torch.float32),
        scheduler, device)


class DiffusersSource(ImageSource):
    name = "diffusers"
    description = "Stable Diffusion 1.x/2.x from a local folder (--weights sd=DIR), seeded per sample"
    gives_coarse_masks = True
    takes_embeddings = True

    def __init__(self, model: StableDiffusion, weights: str, settings: dict[str, Any]) -> None:
        self.model, self.weights = model, weights
        self.settings = {key: settings.get(key, default) for key, default in DEFAULT_SETTINGS.items()}
        self.resolution = int(self.settings["resolution"]) or model.native_resolution
        if self.resolution % (model.vae_scale * 4):
            raise UsageError(f"resolution {self.resolution}: must be a multiple of {model.vae_scale * 4}")
        self.recorder = AttentionRecorder()
        self.recorder.install(model.unet)

    @classmethod
    def open(cls, settings: SourceSettings) -> DiffusersSource:
        if settings.random_init:
            config = str(settings.settings.get("sd_config", DEFAULT_SETTINGS["sd_config"]))
            seed = int(settings.settings.get("seed", 0))
            return cls(random_model(config, seed, settings.device), f"random-init:{config}:seed{seed}",
                       settings.settings)
        if "sd" not in settings.weights:
            raise UsageError(f"the diffusers image source needs --weights sd=DIR ({SD_LAYOUT}), or --random-init")
        folder = Path(settings.weights["sd"])
        model = pretrained_model(folder, settings.device)
        return cls(model, sha256_of_path(folder), {**settings.settings, "sd_config": "folder"})

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "weights": self.weights, "scheduler": type(self.model.scheduler).__name__,
                "cfg": float(self.settings["cfg"]), "steps": int(self.settings["steps"]), "resolution": self.resolution,
                "attention_downscale": int(self.settings["attention_downscale"])}

    @torch.no_grad()
    def generate(self, request: SampleRequest) -> Sample:
        if request.prompt is None:
            raise UsageError("the diffusers image source generates from a prompt")
        model, scheduler = self.model, self.model.scheduler
        ids = model.prompt_ids(request.prompt)
        tokens = model.class_tokens(ids, request.prompt.class_words)
        text = torch.cat([model.encode_text(model.token_ids("")), model.encode_text(ids)])
        side = self.resolution // model.vae_scale
        generator = torch.Generator().manual_seed(request.seed)
        latents = torch.randn((1, model.unet.config.in_channels, side, side), generator=generator).to(model.device)
        scheduler.set_timesteps(int(self.settings["steps"]), device=model.device)
        latents = latents * scheduler.init_noise_sigma
        self.recorder.start(self.resolution // int(self.settings["attention_downscale"]))
        cfg = float(self.settings["cfg"])
        step_options = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
        for timestep in scheduler.timesteps:
            inputs = scheduler.scale_model_input(torch.cat([latents, latents]), timestep)
            unconditional, conditional = model.unet(inputs, timestep, encoder_hidden_states=text).sample.chunk(2)
            noise = unconditional + cfg * (conditional - unconditional)
            latents = scheduler.step(noise, timestep, latents, **step_options).prev_sample
        decoded = model.vae.decode(latents / model.vae.config.scaling_factor).sample
        image = ((decoded[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)
        coarse = coarse_mask(self.recorder.maps()[0], tokens, (self.resolution, self.resolution))
        return Sample(image=image.cpu().numpy(), coarse=coarse.cpu().numpy().astype(np.float32))


def to_model_input(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """RGB [N, 3, H, W] in [0, 1] -> [-1, 1] at resolution x resolution (bilinear, antialiased)."""
    if tuple(images.shape[-2:]) != (resolution, resolution):
        images = F.interpolate(images, (resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return images * 2 - 1
