"""DiffewS (Zhu et al., NeurIPS 2024): Stable Diffusion 2.1 fine-tuned for few-shot segmentation.

The final configuration of the paper, run as the authors' released inference code runs it:

- Inputs: query and support images resized to 512x512 (bilinear) and scaled to [-1, 1]; each support
  mask resized (nearest) and rendered white on black, i.e. the 0/1 mask mapped to [-1, 1] and repeated
  over RGB. All three are encoded by the SD-2.1 VAE: the posterior mean times 0.18215 (no sampling).
- Support branch: the UNet's `conv_in_ref` (8 input channels) takes the support image latent
  concatenated with its mask latent; its self-attention layers run as usual and their keys and values
  are cached. It runs once per episode, for all K supports at once.
- Query branch: the UNet's original 4-channel `conv_in` takes the query latent; every self-attention
  layer (attn1 of each transformer block) attends over [K_q, K_s1, ..., K_sK] and [V_q, V_s1, ...,
  V_sK] (KV fusion; n-shot = all supports' keys and values concatenated, appendix A.6).
- Empty text conditioning, timestep 1, one UNet step (OI2M). The scheduler is DDIM with
  beta_start = beta_end = 1 and v-prediction, so alpha_bar_1 = 0 and the predicted clean latent is
  minus the UNet output; the authors train with target = -z_mq for the same reason.
- Decoding: VAE decode of latent / 0.18215, clipped to [-1, 1], mapped to [0, 255] and truncated to
  uint8, then /255. The foreground score is the mean over RGB; the mask is score > tau_r * max, the
  max taken over all three channels of the decoded image (tau_r = 0.25), or score > tau_a.

Facts from the authors' code, read in aim-uofa/DiffewS (commit d12c396: the training script
train_tools/train_icl_multitask_nocrop_nearest_nshot_v3.py, temp_input_ids.pt, diffews/models/), in the fork
ga1i13o/DiffewS (README.md, scripts/, evaluation_util/, diffews/marigold_pipeline_rgb_latent_noise.py,
scheduler_1.0_1.0/scheduler_config.json) and in LeeX-Bruce/SD-FSMIS, which carries a copy of the authors'
diffews/models/unet_2d_condition_v2.py and attention_processor_v2.py.
- README.md, scripts/eval_coco2014_rthres_1shot_nosample.sh: weights at
  https://www.modelscope.cn/zzzmmz/Diffews.git; evaluation_util/main_oss.py runs with --img-size 512
  --denoise_steps 1 --ensemble_size 1 --bsz 1 --threshold 0 --r_threshold 0.25, VAE, tokenizer and text
  encoder from weight/stable-diffusion-2-1-ref8inchannels-tag4inchannels and the fine-tuned UNet from
  weight/coco_fold<i>/unet (weight/incontext/unet for the in-context model), fp32 unless --half_precision.
- main_oss.py loads the UNet with from_pretrained(unet_ckpt_path, subfolder="unet"): config.json and
  diffusion_pytorch_model.{safetensors,bin} in that folder or in its unet/ subfolder. Support masks go in
  as mask * 2 - 1 repeated over 3 channels; supports are flattened into the batch; the relative
  threshold is pred.mean(dim=1) > r_threshold * pred.max() on the 3-channel [0, 1] image.
- evaluation_util/data/dataset.py: Resize((512, 512)), ToTensor, Normalize(0.5, 0.5).
- unet_2d_condition_v2.py: a second input convolution `conv_in_ref` (config key in_channels_ref = 8;
  state-dict keys conv_in_ref.weight [320, 8, 3, 3] and conv_in_ref.bias) used when is_target=False;
  conv_in stays 4-channel for the query. A stored conversion script (repository not named by the index)
  makes it from SD-2.1's conv_in: weight.repeat(1, 2, 1, 1) / 2, bias copied, saved as
  models/stable-diffusion-2-1-ref8inchannels-tag4inchannels.
- attention_processor_v2.py: every BasicTransformerBlock's attn1 keeps a k/v bank; the first (support)
  pass fills it, the query pass appends it after its own keys and values, reshaped (view(batch, -1, C))
  so each query sees its own K supports. Cross-attention is untouched.
- main_oss.py imports diffews/models/unet_2d_condition.py; in aim-uofa/DiffewS (commit d12c396) it
  differs from unet_2d_condition_v2.py only by importing attention_processor.py, which is identical to
  attention_processor_v2.py.
- marigold_pipeline_rgb_latent_noise.py: latent = VAE posterior mean * 0.18215; the empty prompt is
  tokenizer("", padding="do_not_pad") -> [BOS, EOS] -> text encoder -> [1, 2, 1024]; DDIM with one
  step gives t = 1; prediction = scheduler.step(...).pred_original_sample; decode_seg as above.
- scheduler_config.json: DDIMScheduler, beta_start = beta_end = 1.0, prediction_type v_prediction,
  steps_offset 1, timestep_spacing leading. The training script regresses the UNet output on
  -z_mq at timestep 1.

Where this implementation differs or a source is silent:
- The paper's eq. 12 takes the maximum of the channel-mean map; the code takes it over the three
  channels (above). We follow the code. Figure 1's caption swaps the branches; eq. 6, appendix A.6 and
  the code agree that the query attends to the supports' keys and values.
- The authors' training script conditions on `temp_input_ids.pt` (in their repository): the empty prompt
  padded to 77 tokens, [49406, 49407] then zeros. Inference (what we reproduce) uses the unpadded 2-token
  empty prompt. We compute that embedding once in setup from the SD-2.1 folder's tokenizer and text
  encoder, and do not keep the text encoder.
- Images reach the adapter at the protocol's evaluation resolution and are resized to 512 here; to
  evaluate exactly as the authors (original image -> 512, metric at 512) run with `--eval-size 512`.
  At another evaluation size the foreground score is resized bilinearly to it and thresholded with the
  threshold computed at 512.
- With a batch of B episodes the relative threshold uses each episode's own maximum (the authors run
  one episode per batch).
- precision=fp32, the default on every device, is the authors' evaluation. precision=fp16 or bf16 (CUDA
  only, opt-in, recorded as a variant) runs the model under autocast; the authors' --half_precision
  instead casts the whole pipeline's weights to fp16.
- The text encoder runs with eager attention, as in the transformers the authors used; current
  transformers' default (SDPA) changes the empty-prompt embedding by ~4e-7.
- config=tiny (random init only) is a small UNet/VAE with the same code, at 64x64, for tests and smoke
  runs; --random-init with config=full builds the SD-2.1-sized networks with random weights (timing only).
"""

from __future__ import annotations

import contextlib
import inspect
import json
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from fssbench.harness.contract import EpisodeBatch, FssAdapter, SetupContext, WeightSpec
from fssbench.harness.errors import UsageError
from fssbench.harness.extras import require

AUTHORS_WEIGHTS = "https://www.modelscope.cn/zzzmmz/Diffews.git"
SD21_SOURCE = (f"{AUTHORS_WEIGHTS} (weight/stable-diffusion-2-1-ref8inchannels-tag4inchannels) "
               "or stabilityai/stable-diffusion-2-1")
SD21_EXPECTED = "a Stable Diffusion 2.1 folder in diffusers layout (vae/, tokenizer/, text_encoder/)"
UNET_EXPECTED = ("the authors' fine-tuned UNet folder, e.g. weight/coco_fold0/unet (config.json and "
                 "diffusion_pytorch_model.safetensors or .bin, there or in its unet/ subfolder)")
LATENT_SCALE = 0.18215  # SD's VAE factor, hard-coded in the authors' pipeline
ONE_STEP_TIMESTEP = 1
METHOD_RESOLUTION = 512
TINY_RESOLUTION = 64

SD21_UNET_CONFIG: dict[str, Any] = {
    "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 1024, "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2, "norm_eps": 1e-5,
    "norm_num_groups": 32, "out_channels": 4, "sample_size": 96,
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "upcast_attention": True,
    "use_linear_projection": True,
}
SD21_VAE_CONFIG: dict[str, Any] = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
    "sample_size": 768, "up_block_types": ["UpDecoderBlock2D"] * 4, "scaling_factor": LATENT_SCALE,
}
TINY_UNET_CONFIG: dict[str, Any] = {
    **SD21_UNET_CONFIG, "attention_head_dim": [2, 4], "block_out_channels": [32, 64], "cross_attention_dim": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "layers_per_block": 1, "norm_num_groups": 8,
    "sample_size": 8, "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
}
TINY_VAE_CONFIG: dict[str, Any] = {
    **SD21_VAE_CONFIG, "block_out_channels": [8, 8, 16, 16], "layers_per_block": 1, "norm_num_groups": 4,
    "sample_size": TINY_RESOLUTION,
}
EMPTY_PROMPT_TOKENS = 2  # [BOS, EOS]: the authors tokenize "" without padding


class SupportMemory:
    """The support branch's self-attention keys and values, per layer, kept for the query pass."""

    def __init__(self) -> None:
        self.recording = False
        self.banks: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @contextlib.contextmanager
    def record(self) -> Iterator[None]:
        self.banks.clear()
        self.recording = True
        try:
            yield
        finally:
            self.recording = False

    def clear(self) -> None:
        self.banks.clear()

    def exchange(self, layer: str, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """key, value [N, heads, L, d]: stored while recording; afterwards extended by the supports'."""
        if self.recording:
            self.banks[layer] = (key, value)
            return key, value
        if not self.banks:
            return key, value
        support_key, support_value = self.banks[layer]
        return (torch.cat([key, per_query(support_key, key.shape[0])], dim=2),
                torch.cat([value, per_query(support_value, value.shape[0])], dim=2))


def per_query(bank: torch.Tensor, queries: int) -> torch.Tensor:
    """[B*K, heads, L, d] (supports grouped by episode) -> [B, heads, K*L, d]."""
    return bank.unflatten(0, (queries, -1)).transpose(1, 2).flatten(2, 3)


class KVFusionAttnProcessor:
    """Self-attention (diffusers' SDPA processor, maskless) whose keys and values pass through a SupportMemory."""

    def __init__(self, memory: SupportMemory, layer: str) -> None:
        self.memory = memory
        self.layer = layer

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("KV fusion applies to maskless self-attention only")
        batch = hidden_states.shape[0]
        query, key, value = (split_heads(project(hidden_states), attn.heads)
                             for project in (attn.to_q, attn.to_k, attn.to_v))
        key, value = self.memory.exchange(self.layer, key, value)
        attended = F.scaled_dot_product_attention(query, key, value)
        attended = attended.transpose(1, 2).reshape(batch, -1, attended.shape[1] * attended.shape[3]).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](attended)) / attn.rescale_output_factor


def split_heads(states: torch.Tensor, heads: int) -> torch.Tensor:
    return states.view(states.shape[0], -1, heads, states.shape[-1] // heads).transpose(1, 2)


def install_kv_fusion(unet: nn.Module, memory: SupportMemory) -> None:
    """KV fusion on every transformer block's self-attention (attn1); cross-attention stays as it is."""
    unet.set_attn_processor({
        name: KVFusionAttnProcessor(memory, name) if name.endswith("attn1.processor") else processor
        for name, processor in unet.attn_processors.items()})


def widened_conv_in(conv_in: nn.Conv2d) -> nn.Conv2d:
    """An 8-channel copy of a 4-channel input conv, weights duplicated and halved (Marigold's init)."""
    conv = nn.Conv2d(2 * conv_in.in_channels, conv_in.out_channels, conv_in.kernel_size, padding=conv_in.padding)
    with torch.no_grad():
        conv.weight.copy_(conv_in.weight.repeat(1, 2, 1, 1) / 2)
        conv.bias.copy_(conv_in.bias)
    return conv


class DiffewsModel(nn.Module):
    """VAE + UNet with the support-branch `conv_in_ref` and KV fusion; image tensors in [-1, 1]."""

    def __init__(self, unet: nn.Module, vae: nn.Module, empty_text: torch.Tensor) -> None:
        super().__init__()
        self.unet = unet
        self.vae = vae
        self.register_buffer("empty_text", empty_text, persistent=False)  # [1, tokens, cross_attention_dim]
        self.memory = SupportMemory()
        install_kv_fusion(unet, self.memory)
        self.eval()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images).latent_dist.mode() * LATENT_SCALE

    def unet_step(self, latents: torch.Tensor) -> torch.Tensor:
        text = self.empty_text.expand(latents.shape[0], -1, -1)
        timestep = torch.tensor(ONE_STEP_TIMESTEP, device=latents.device)
        return self.unet(latents, timestep, encoder_hidden_states=text).sample

    def record_supports(self, support_images: torch.Tensor, support_masks: torch.Tensor) -> torch.Tensor:
        """Run the support branch, caching its keys and values; returns its UNet output."""
        latents = torch.cat([self.encode(support_images), self.encode(support_masks)], dim=1)
        query_conv_in = self.unet.conv_in
        self.unet.conv_in = self.unet.conv_in_ref
        try:
            with self.memory.record():
                return self.unet_step(latents)
        finally:
            self.unet.conv_in = query_conv_in

    def forward(self, query_images: torch.Tensor, support_images: torch.Tensor,
                support_masks: torch.Tensor) -> torch.Tensor:
        """query [B, 3, R, R], supports and rendered masks [B*K, 3, R, R] -> mask images [B, 3, R, R] in [0, 1]."""
        self.record_supports(support_images, support_masks)
        try:
            mask_latents = -self.unet_step(self.encode(query_images))  # v-prediction at alpha_bar = 0
        finally:
            self.memory.clear()
        decoded = self.vae.decode(mask_latents / LATENT_SCALE).sample.clamp(-1, 1)
        return torch.floor((decoded.float() * 0.5 + 0.5) * 255) / 255  # the authors' pipeline goes through uint8


def build_networks(unet_config: dict[str, Any], vae_config: dict[str, Any],
                   in_channels_ref: int = 8) -> tuple[nn.Module, nn.Module]:
    require("diffusers", "DiffewS", "diffews")
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(known_arguments(UNet2DConditionModel, unet_config))
    unet.conv_in_ref = nn.Conv2d(in_channels_ref, unet.conv_in.out_channels, unet.conv_in.kernel_size,
                                 padding=unet.conv_in.padding)
    vae = AutoencoderKL.from_config(known_arguments(AutoencoderKL, vae_config))
    return unet, vae


def known_arguments(model_class: type, config: dict[str, Any]) -> dict[str, Any]:
    """The config keys the diffusers class takes (the authors' UNet config adds in_channels_ref, _class_name)."""
    accepted = inspect.signature(model_class.__init__).parameters
    return {key: value for key, value in config.items() if key in accepted}


def random_model(config: str) -> DiffewsModel:
    """SD-2.1-sized (config 'full') or tiny networks with random weights, conv_in_ref widened from conv_in."""
    unet_config, vae_config = (SD21_UNET_CONFIG, SD21_VAE_CONFIG) if config == "full" else (
        TINY_UNET_CONFIG, TINY_VAE_CONFIG)
    unet, vae = build_networks(unet_config, vae_config)
    unet.conv_in_ref = widened_conv_in(unet.conv_in)
    empty_text = torch.randn(1, EMPTY_PROMPT_TOKENS, unet_config["cross_attention_dim"])
    return DiffewsModel(unet, vae, empty_text)


def model_folder(candidates: tuple[Path, ...], weight_name: str, expected: str, source: str) -> Path:
    """The first candidate holding config.json."""
    for folder in candidates:
        if (folder / "config.json").is_file():
            return folder
    raise UsageError(f"{candidates[-1] / 'config.json'} not found: --weights {weight_name}= expects {expected}; "
                     f"get it from {source}")


def read_state_dict(folder: Path, weight_name: str, source: str) -> dict[str, torch.Tensor]:
    safetensors_file = folder / "diffusion_pytorch_model.safetensors"
    if safetensors_file.is_file():
        require("safetensors", "DiffewS", "diffews")
        from safetensors.torch import load_file

        return load_file(safetensors_file)
    pickle_file = folder / "diffusion_pytorch_model.bin"
    if pickle_file.is_file():
        return torch.load(pickle_file, map_location="cpu", weights_only=True)
    raise UsageError(f"{safetensors_file} not found (nor {pickle_file.name}): --weights {weight_name}= lacks "
                     f"its weights; get them from {source}")


def load_weights(module: nn.Module, folder: Path, weight_name: str, source: str) -> None:
    # older diffusers checkpoints name the VAE's attention query/key/value/proj_attn; diffusers renames them
    state = module._fix_state_dict_keys_on_load(read_state_dict(folder, weight_name, source))
    expected = module.state_dict()
    wrong_shape = {key for key in expected.keys() & state.keys() if expected[key].shape != state[key].shape}
    missing = sorted((expected.keys() - state.keys()) | wrong_shape)
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise UsageError(f"{folder}: the weights do not fit the network its config.json describes "
                         f"(missing or misshapen: {missing[:3]}, unexpected: {unexpected[:3]}); --weights "
                         f"{weight_name}= expects the files as published at {source}")
    module.load_state_dict(state)


def load_text_encoder(sd21: Path) -> nn.Module:
    """The SD-2.1 CLIP text encoder in fp32 with eager attention, as the authors' transformers ran it
    (SDPA, the default of current transformers, changes the empty-prompt embedding by ~4e-7; transformers
    5 would otherwise take the dtype a config.json declares)."""
    require("transformers", "DiffewS", "diffews")
    from transformers import CLIPTextModel

    try:
        return CLIPTextModel.from_pretrained(sd21 / "text_encoder", local_files_only=True, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    except OSError as exc:
        raise UsageError(f"{sd21 / 'text_encoder'}: {exc}; get it from {SD21_SOURCE}") from None


def empty_prompt_embedding(sd21: Path) -> torch.Tensor:
    """The SD-2.1 text encoder's embedding of "" tokenized without padding: [1, 2, 1024]."""
    from transformers import CLIPTokenizer

    for required in ("tokenizer/vocab.json", "tokenizer/merges.txt", "text_encoder/config.json"):
        if not (sd21 / required).is_file():
            raise UsageError(f"{sd21 / required} not found: --weights sd21= expects {SD21_EXPECTED}; "
                             f"get it from {SD21_SOURCE}")
    tokenizer = CLIPTokenizer.from_pretrained(sd21 / "tokenizer", local_files_only=True)
    tokens = tokenizer("", padding="do_not_pad", return_tensors="pt").input_ids
    with torch.no_grad():
        return load_text_encoder(sd21)(tokens)[0]


def pretrained_model(sd21: Path, unet_path: Path) -> DiffewsModel:
    unet_folder = model_folder((unet_path, unet_path / "unet"), "unet", UNET_EXPECTED, AUTHORS_WEIGHTS)
    vae_folder = model_folder((sd21 / "vae",), "sd21", SD21_EXPECTED, SD21_SOURCE)
    unet_config = json.loads((unet_folder / "config.json").read_text())
    vae_config = json.loads((vae_folder / "config.json").read_text())
    unet, vae = build_networks(unet_config, vae_config, unet_config.get("in_channels_ref", 8))
    load_weights(unet, unet_folder, "unet", AUTHORS_WEIGHTS)
    load_weights(vae, vae_folder, "sd21", SD21_SOURCE)
    return DiffewsModel(unet, vae, empty_prompt_embedding(sd21))


def to_model_input(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """RGB in [0, 1] -> [-1, 1] at the method's resolution (bilinear, antialiased as PIL's resize)."""
    if images.shape[-1] != resolution or images.shape[-2] != resolution:
        images = F.interpolate(images, (resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return images * 2 - 1


def render_masks(masks: torch.Tensor, resolution: int) -> torch.Tensor:
    """0/1 masks [N, H, W] -> white-on-black RGB in [-1, 1], [N, 3, R, R] (nearest resize)."""
    masks = F.interpolate(masks[:, None].float(), (resolution, resolution), mode="nearest")
    return (masks * 2 - 1).expand(-1, 3, -1, -1)


def threshold_masks(mask_images: torch.Tensor, size: tuple[int, int], relative: bool, tau: float) -> torch.Tensor:
    """[B, 3, R, R] in [0, 1] -> 0/1 masks [B, H, W]: channel mean > tau * max (relative) or > tau."""
    score = mask_images.mean(dim=1, keepdim=True)
    cut = tau * mask_images.amax(dim=(1, 2, 3), keepdim=True) if relative else tau
    if tuple(score.shape[-2:]) != tuple(size):
        score = F.interpolate(score, size, mode="bilinear", align_corners=False)
    return (score > cut).float()[:, 0]


class DiffewsAdapter(FssAdapter):
    description = "DiffewS: Stable Diffusion 2.1 UNet with KV-fusion, one-step image-to-mask (authors' weights)"
    weights = (WeightSpec("sd21", SD21_EXPECTED, SD21_SOURCE), WeightSpec("unet", UNET_EXPECTED, AUTHORS_WEIGHTS))
    option_defaults = {"config": "full", "threshold": "relative", "tau": 0.25, "precision": "fp32"}
    option_choices = {"config": ("full", "tiny"), "threshold": ("relative", "absolute"),
                      "precision": ("fp32", "fp16", "bf16")}

    @property
    def backbone(self) -> str:
        return "stable-diffusion-2.1" if self.options["config"] == "full" else "tiny-sd (test config)"

    def setup(self, context: SetupContext) -> None:
        self.autocast_dtype = self._autocast_dtype(context.device)
        if context.random_init:
            torch.manual_seed(context.seed)
            model = random_model(self.options["config"])
        elif self.options["config"] == "tiny":
            raise UsageError("--option config=tiny is for --random-init runs; with --weights the architecture "
                             "comes from the weights' config.json")
        else:
            model = pretrained_model(context.weights["sd21"], context.weights["unet"])
        self.model = model.to(context.device)
        self.resolution = METHOD_RESOLUTION if self.options["config"] == "full" else TINY_RESOLUTION

    def _autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        precision = self.options["precision"]
        if precision != "fp32" and device.type != "cuda":
            raise UsageError(f"--option precision={precision} needs a CUDA device; on {device.type} use fp32")
        return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]

    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        query = to_model_input(batch.query_images, self.resolution)
        supports = to_model_input(batch.support_images.flatten(0, 1), self.resolution)
        masks = render_masks(batch.support_masks.flatten(0, 1), self.resolution)
        autocast = (torch.autocast(query.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                    else contextlib.nullcontext())
        with autocast:
            mask_images = self.model(query, supports, masks)
        return threshold_masks(mask_images, tuple(batch.query_images.shape[-2:]),
                               self.options["threshold"] == "relative", float(self.options["tau"]))
