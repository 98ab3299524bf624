"""Normalized masked textual inversion (AlignDiff Sec. 3.4, eq. 3).

The prompt is "a photo of a v* <class>": v* is an adjective inserted after the determiner, the row of a
placeholder token in the text encoder's input embeddings. It is optimized with the noise-prediction loss
masked by the support mask and balanced between foreground and background (eq. 3):

    L = sum_{y_i=1} ||eps_i - eps_theta(x_t, t, v)_i||^2 / #{y_i=1}  +  lambda * sum_{y_i=0} ||...||^2 / #{y_i=0}

with i over latent pixels and ||.||^2 over the latent channels; only v* trains (the UNet, VAE and text
encoder are frozen, and every other embedding row is restored after each step, as in the authors' code).

Facts from the authors' code (RogerQi/AlignDiff: aligndiff/nm_inversion.py, aligndiff/utils.py), used as
defaults: lambda (`bg_lambda`) 0.6, learning rate 5e-4, 500 steps, batch 4 (the image repeated, flipped
horizontally with probability 0.5, each with its own noise and timestep), AdamW (0.9, 0.999, weight decay
1e-2, eps 1e-8) with a cosine schedule and no warm-up, v* initialised from the token "good", the mask
resized to the latent grid by nearest neighbour and foreground where > 0.3, the target the noise
(epsilon models) or the velocity (v-prediction models), the image resized to the model's resolution.
Where this differs or the paper is silent:
- The code averages the squared error over channels as well; eq. 3 sums over channels. We follow eq. 3
  (a constant factor of 4 that Adam's step normalisation all but removes).
- The code runs gradient accumulation over 2 batches; we step on every batch of `batch` images.
- An empty foreground or background term (an all-background or all-foreground mask) is left out; the
  code would produce NaN there.
- Where the initializer "good" is not one token (the character tokenizer of random-init models), v*
  starts from the mean of its tokens' embeddings.
- v* is kept per support image (keyed by the image's and mask's hashes and these settings) in the
  synthetic-set store; its random numbers come from a generator seeded with the settings' `seed`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from fssbench.adapters.synthesis.diffusers_source import PLACEHOLDER, StableDiffusion, to_model_input
from fssbench.harness.extras import require

INITIALIZER = "good"
TEMPLATE = "a photo of a {} "  # + the class words; `{}` is where v* goes
MASK_CUT = 0.3
DEFAULTS = {"inversion_steps": 500, "inversion_lr": 5e-4, "inversion_balance": 0.6, "inversion_batch": 4}


def masked_balanced_loss(prediction: torch.Tensor, target: torch.Tensor, foreground: torch.Tensor,
                         balance: float) -> torch.Tensor:
    """Eq. 3 for prediction and target [B, C, h, w] and a boolean foreground [B, h, w]: per sample, the
    squared error summed over channels, averaged over foreground pixels plus `balance` times its average
    over background pixels (an empty side's term left out); the mean over the batch."""
    error = (prediction.float() - target.float()).square().sum(dim=1)  # [B, h, w]
    fg, bg = foreground.float(), (~foreground).float()
    fg_term = (error * fg).flatten(1).sum(1) / fg.flatten(1).sum(1).clamp(min=1)
    bg_term = (error * bg).flatten(1).sum(1) / bg.flatten(1).sum(1).clamp(min=1)
    return (fg_term + balance * bg_term).mean()


def initial_embedding(model: StableDiffusion) -> torch.Tensor:
    ids = model.tokenizer(INITIALIZER, add_special_tokens=False).input_ids
    return model.text_encoder.get_input_embeddings().weight[ids].mean(dim=0).detach().clone()


class Inversion:
    """One optimisation of v* for one (image, mask) pair; `step()` once per optimizer step."""

    def __init__(self, model: StableDiffusion, image: torch.Tensor, mask: torch.Tensor, class_words: str,
                 settings: dict[str, Any], seed: int) -> None:
        diffusers = require("diffusers", "AlignDiff's textual inversion", "synthesis")
        self.model, self.settings = model, {**DEFAULTS, **settings}
        self.noise_scheduler = diffusers.DDPMScheduler.from_config(model.scheduler.config)
        resolution = model.native_resolution
        self.image = to_model_input(image[None].to(model.device), resolution)  # [1, 3, R, R]
        side = resolution // model.vae_scale
        self.foreground = F.interpolate(mask[None, None].float().to(model.device), (side, side),
                                        mode="nearest")[:, 0] > MASK_CUT  # [1, h, w]
        self.ids = model.token_ids((TEMPLATE + class_words).format(PLACEHOLDER))
        self.generator = torch.Generator().manual_seed(seed)
        embeddings = model.text_encoder.get_input_embeddings()
        self.original = embeddings.weight.detach().clone()
        model.set_placeholder(initial_embedding(model))
        embeddings.weight.requires_grad_(True)
        self.optimizer = torch.optim.AdamW([embeddings.weight], lr=float(self.settings["inversion_lr"]),
                                           betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        total = int(self.settings["inversion_steps"])
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1))))

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        size = int(self.settings["inversion_batch"])
        flips = torch.rand(size, generator=self.generator) < 0.5
        images = self.image.expand(size, -1, -1, -1).clone()
        foreground = self.foreground.expand(size, -1, -1).clone()
        images[flips] = images[flips].flip(-1)
        foreground[flips] = foreground[flips].flip(-1)
        return images, foreground

    def loss(self, images: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
        model, scheduler = self.model, self.noise_scheduler
        with torch.no_grad():
            latents = model.vae.encode(images).latent_dist.sample(self.generator) * model.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=self.generator).to(latents)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),),
                                  generator=self.generator).to(latents.device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        text = model.encode_text(self.ids.expand(len(latents), -1))
        prediction = model.unet(noisy, timesteps, encoder_hidden_states=text).sample
        target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, timesteps)
        return masked_balanced_loss(prediction, target, foreground, float(self.settings["inversion_balance"]))

    def step(self) -> float:
        loss = self.loss(*self.batch())
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        weight = self.model.text_encoder.get_input_embeddings().weight
        with torch.no_grad():
            keep = torch.ones(len(weight), dtype=torch.bool, device=weight.device)
            keep[self.model.placeholder_id] = False
            weight[keep] = self.original[keep]
        return float(loss.detach())

    def result(self) -> torch.Tensor:
        weight = self.model.text_encoder.get_input_embeddings().weight
        weight.requires_grad_(False)
        return weight[self.model.placeholder_id].detach().cpu().clone()


def invert(model: StableDiffusion, image: torch.Tensor, mask: torch.Tensor, class_words: str,
           settings: dict[str, Any], seed: int) -> torch.Tensor:
    """v* for one support: image [3, H, W] in [0, 1], mask [H, W] -> [hidden] (on the CPU). Gradients are
    switched back on here: the harness calls predict under torch.inference_mode."""
    with torch.inference_mode(False), torch.enable_grad():
        inversion = Inversion(model, image.clone(), mask.clone(), class_words, settings, seed)
        for _ in range(int(inversion.settings["inversion_steps"])):
            inversion.step()
        return inversion.result()
