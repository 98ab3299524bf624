"""Timing-only cost of one full-size Stable Diffusion 3.5-Large image on this machine's CPU, by parts.

SD 3.5-Large's transformer (8B parameters, 32 GB in fp32) does not fit a 24 GB machine, so its cost is
measured on the same architecture cut to 1 and to 2 of its 38 joint blocks (random weights, fp32) and
extrapolated: one step = t(1) + 37 * (t(2) - t(1)), where t(n) is one forward of batch 2 (classifier-free
guidance: the unconditional and the conditional prompt) over the latent tokens plus 333 text tokens (77 CLIP-L
+ 77 CLIP-G side by side, padded to 4096, and 256 T5 tokens). The VAE decode (SD3's 16-channel VAE) and the
two CLIP text encoders are timed at full size; T5-XXL's encoder (24 layers) the same way as the transformer,
t(1) + 23 * (t(2) - t(1)), at 256 tokens. One image = text encoders + `steps` x one step + one VAE decode.
Every part runs once untimed (allocation and kernel warm-up), then the best of `repeats` timed runs counts
(the VAE decode, the largest, runs once after its warm-up). Weights are random (nothing is downloaded); only
the time is measured.

    python -m fssbench.adapters.synthesis.sd3_timing [--resolutions 1024 768] [--steps 40] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Callable

import torch

from fssbench.harness.extras import require

PURPOSE = "timing SD 3.5-Large's parts"
# stabilityai/stable-diffusion-3.5-large, transformer/config.json
SD35_LARGE_TRANSFORMER = {"sample_size": 128, "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 38,
                          "attention_head_dim": 64, "num_attention_heads": 38, "joint_attention_dim": 4096,
                          "caption_projection_dim": 2432, "pooled_projection_dim": 2048, "pos_embed_max_size": 192,
                          "qk_norm": "rms_norm", "dual_attention_layers": ()}
SD3_VAE = {"block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
           "up_block_types": ["UpDecoderBlock2D"] * 4, "latent_channels": 16, "layers_per_block": 2,
           "norm_num_groups": 32, "sample_size": 1024, "scaling_factor": 1.5305, "shift_factor": 0.0609,
           "use_quant_conv": False, "use_post_quant_conv": False}
CLIP_L = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
          "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768}
CLIP_G = {"vocab_size": 49408, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
          "num_attention_heads": 20, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 1280}
T5_XXL = {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
          "feed_forward_proj": "gated-gelu"}
CLIP_TOKENS, T5_TOKENS, BATCH = 77, 256, 2  # batch 2: classifier-free guidance
REPEATS = 2


def seconds(run: Callable[[], object], repeats: int = REPEATS) -> float:
    """The best of `repeats` timed runs after one untimed warm-up run."""
    times = []
    with torch.inference_mode():
        run()
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return min(times)


def transformer_seconds(layers: int, resolution: int) -> float:
    """One forward of SD 3.5-Large's transformer cut to `layers` joint blocks, batch 2, at `resolution`."""
    diffusers = require("diffusers", PURPOSE, "synthesis")
    model = diffusers.SD3Transformer2DModel(**{**SD35_LARGE_TRANSFORMER, "num_layers": layers}).eval()
    side = resolution // 8
    latents = torch.randn(BATCH, SD35_LARGE_TRANSFORMER["in_channels"], side, side)
    text = torch.randn(BATCH, 2 * CLIP_TOKENS + T5_TOKENS, SD35_LARGE_TRANSFORMER["joint_attention_dim"])
    pooled = torch.randn(BATCH, SD35_LARGE_TRANSFORMER["pooled_projection_dim"])
    timestep = torch.full((BATCH,), 500.0)
    return seconds(lambda: model(hidden_states=latents, encoder_hidden_states=text, pooled_projections=pooled,
                                 timestep=timestep))


def vae_decode_seconds(resolution: int) -> float:
    diffusers = require("diffusers", PURPOSE, "synthesis")
    vae = diffusers.AutoencoderKL(**SD3_VAE).eval()
    latents = torch.randn(1, SD3_VAE["latent_channels"], resolution // 8, resolution // 8)
    return seconds(lambda: vae.decode(latents), repeats=1)


def clip_seconds(config: dict) -> float:
    """CLIP text encoder with projection, batch 2 x 77 tokens (the pipeline encodes prompt and negative)."""
    transformers = require("transformers", PURPOSE, "synthesis")
    model = transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(**config)).eval()
    ids = torch.randint(0, config["vocab_size"], (BATCH, CLIP_TOKENS))
    return seconds(lambda: model(ids, output_hidden_states=True))


def t5_seconds(layers: int) -> float:
    transformers = require("transformers", PURPOSE, "synthesis")
    model = transformers.T5EncoderModel(transformers.T5Config(**{**T5_XXL, "num_layers": layers})).eval()
    ids = torch.randint(0, T5_XXL["vocab_size"], (BATCH, T5_TOKENS))
    return seconds(lambda: model(ids))


def measure(resolutions: list[int], steps: int, t5: bool = True) -> dict:
    """Every part's seconds and the extrapolated seconds per image, per resolution."""
    blocks = SD35_LARGE_TRANSFORMER["num_layers"]
    wall, cpu = time.perf_counter(), time.process_time()
    report: dict = {"threads": torch.get_num_threads(), "load_average_start": os.getloadavg(), "steps": steps,
                    "text_encoders": {"clip_l_s": clip_seconds(CLIP_L), "clip_g_s": clip_seconds(CLIP_G)}}
    if t5:
        one, two = t5_seconds(1), t5_seconds(2)
        report["text_encoders"].update({"t5_1_layer_s": one, "t5_2_layers_s": two,
                                        "t5_xxl_s": one + (T5_XXL["num_layers"] - 1) * (two - one)})
    text_s = sum(value for key, value in report["text_encoders"].items() if key in ("clip_l_s", "clip_g_s", "t5_xxl_s"))
    report["resolutions"] = {}
    for resolution in resolutions:
        one, two = transformer_seconds(1, resolution), transformer_seconds(2, resolution)
        step = one + (blocks - 1) * (two - one)
        decode = vae_decode_seconds(resolution)
        report["resolutions"][str(resolution)] = {
            "transformer_1_block_s": one, "transformer_2_blocks_s": two, "per_block_s": two - one,
            "per_step_s": step, "vae_decode_s": decode, "per_image_s": text_s + steps * step + decode}
    report["load_average_end"] = os.getloadavg()
    # cores this process actually had on average (threads when the machine was its own)
    report["cpu_s_per_wall_s"] = (time.process_time() - cpu) / (time.perf_counter() - wall)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[1024, 768])
    parser.add_argument("--steps", type=int, default=40, help="sampling steps (Syn4Seg's paper: 40)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-t5", action="store_true", help="skip timing T5-XXL")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.resolutions, args.steps, not args.no_t5), indent=2))


if __name__ == "__main__":
    main()
