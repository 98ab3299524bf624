"""Coarse masks from cross-attention (Hertz et al.'s prompt-to-prompt aggregation, as AlignDiff uses it).

`AttentionRecorder` installs a processor on every cross-attention layer of a diffusers UNet. During
sampling it sums, for the conditional half of the classifier-free-guidance batch, the attention
probabilities of the layers whose map is `grid` x `grid` (at 512x512, SD's 16x16 layers: the image side /
32), averaged over heads, and counts the calls; `maps()` is the average over those layers and all steps:
[tokens, grid, grid]. `coarse_mask` takes the class words' tokens: each map upsampled (bicubic) to the
image, clipped at 0 and divided by its maximum, then averaged over the class tokens: a foreground score in
[0, 1] (the threshold that makes a mask is the caller's). The authors' code (RogerQi/AlignDiff,
scripts/diffuse_img_attention.py) averages the 16, 32 and 64 maps at 512; the paper and Hertz et al. name
the 16x16 layers, which we follow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class CrossAttentionCapture:
    """A diffusers attention processor that computes attention like `AttnProcessor` and records the maps."""

    def __init__(self, recorder: AttentionRecorder) -> None:
        self.recorder = recorder

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        probabilities = attn.get_attention_scores(query, key, attention_mask)
        self.recorder.add(probabilities.view(batch, attn.heads, length, -1))
        out = attn.batch_to_head_dim(torch.bmm(probabilities, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


class AttentionRecorder:
    def __init__(self) -> None:
        self.grid = 0
        self.total: torch.Tensor | None = None
        self.calls = 0

    def install(self, unet) -> None:
        """Cross-attention layers (attn2) get the capturing processor; the others keep theirs."""
        processors = {name: (CrossAttentionCapture(self) if name.endswith("attn2.processor") else processor)
                      for name, processor in unet.attn_processors.items()}
        unet.set_attn_processor(processors)

    def start(self, grid: int) -> None:
        self.grid, self.total, self.calls = grid, None, 0

    def add(self, probabilities: torch.Tensor) -> None:
        """probabilities [batch, heads, pixels, tokens]; batch = [unconditional, conditional] halves."""
        if probabilities.shape[2] != self.grid * self.grid:
            return
        conditional = probabilities[probabilities.shape[0] // 2:].mean(dim=1).detach().float()  # [b, pixels, tokens]
        self.total = conditional if self.total is None else self.total + conditional
        self.calls += 1

    def maps(self) -> torch.Tensor:
        """[b, tokens, grid, grid]: the average over the recorded layers and steps."""
        if self.total is None:
            raise RuntimeError(f"no cross-attention layer works at {self.grid}x{self.grid}: choose another "
                               "attention_downscale for this UNet and resolution")
        average = self.total / self.calls
        return average.transpose(1, 2).reshape(average.shape[0], -1, self.grid, self.grid)


def coarse_mask(maps: torch.Tensor, tokens: list[int], size: tuple[int, int]) -> torch.Tensor:
    """maps [tokens, g, g], the class words' token positions -> foreground score [H, W] in [0, 1]."""
    selected = F.interpolate(maps[tokens][None].float(), size, mode="bicubic", align_corners=False)[0].clamp(min=0)
    selected = selected / selected.flatten(1).amax(dim=1).clamp(min=1e-12)[:, None, None]
    return selected.mean(dim=0)
