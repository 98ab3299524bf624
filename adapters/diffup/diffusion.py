"""The diffusion process over masks: DDPM's forward process for training (eqs. 5-8) and deterministic
DDIM sampling (eta = 0) for inference.

The paper trains with 250 DDPM steps and samples with 50 DDIM steps but gives no noise schedule; this
is DDPM's linear schedule rescaled to 250 steps (beta from 1e-4 to 0.02 at 1000 steps, times
1000/T, as improved DDPM does). The network predicts the noise (epsilon, eq. 8: the paper's config)
or the clean mask x0 (the small config, see config.py); either gives the other through eq. 6. Eq. 13
adds a condition-dependent offset mu_c to the forward process without defining it; the forward
process here is DDPM's own, and the condition enters through the denoiser only. Each DDIM step
clips the predicted clean mask to [-1, 1] and re-derives the noise from it (as guided-diffusion does).
"""

from __future__ import annotations

from typing import Callable

import torch

PREDICTIONS = ("epsilon", "x0")


class Diffusion:
    def __init__(self, timesteps: int, prediction: str = "epsilon") -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        scale = 1000 / timesteps
        betas = torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
        self.timesteps = timesteps
        self.prediction = prediction
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0).float()

    def _alpha_bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.alphas_cumprod.to(like.device)[t].view(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Eq. 6: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, t per sample [B]."""
        alpha_bar = self._alpha_bar(t, x0)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def predicted_x0(self, x_t: torch.Tensor, output: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The clean mask the network's output (noise or x0, by `prediction`) implies."""
        if self.prediction == "x0":
            return output
        alpha_bar = self._alpha_bar(t, x_t)
        return (x_t - (1 - alpha_bar).sqrt() * output) / alpha_bar.sqrt()

    def target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network learns to output: the noise or the clean mask."""
        return x0 if self.prediction == "x0" else noise

    def ddim_timesteps(self, steps: int) -> list[int]:
        """`steps` timesteps from T - 1 down to 0, evenly spaced."""
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"DDIM steps must lie in 1..{self.timesteps}, got {steps}")
        return torch.linspace(self.timesteps - 1, 0, steps).round().long().tolist()

    def ddim_sample(self, denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    noise: torch.Tensor, steps: int) -> torch.Tensor:
        """Denoise x_T = `noise` in `steps` deterministic DDIM steps; `denoise(x_t, t [B])` is the network."""
        x = noise
        times = self.ddim_timesteps(steps)
        alphas = self.alphas_cumprod.to(noise.device)
        for index, t in enumerate(times):
            alpha_bar = alphas[t]
            alpha_bar_next = alphas[times[index + 1]] if index + 1 < len(times) else torch.ones_like(alpha_bar)
            batch_t = torch.full((len(x),), t, device=x.device, dtype=torch.long)
            x0 = self.predicted_x0(x, denoise(x, batch_t), batch_t).clamp(-1, 1)
            noise_estimate = (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
            x = alpha_bar_next.sqrt() * x0 + (1 - alpha_bar_next).sqrt() * noise_estimate
        return x
