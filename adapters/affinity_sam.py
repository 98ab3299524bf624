"""affinity-sam: a training-free GF-SAM-style pipeline of DINOv2 affinities and SAM point prompts.

It follows GF-SAM (Zhang et al., NeurIPS 2024, code github.com/ANDYZAQ/GF-SAM), written as the three
steps of fssbench.adapters.affinity so that GSM can boost it:
0. DINOv2 ViT-L/14 encodes the query and the supports at 518x518 (ImageNet-normalized); the last
   block's patch tokens before the final norm (GF-SAM's "x_prenorm"), L2-normalized, are the dense
   features (37x37). SAM ViT-H encodes the query at 1024 on its longer side.
1. Affinity: C = cosine similarity of each query token to each token of a reference. Per reference,
   S+ is the mean of C over the reference's foreground tokens and S- over its background tokens
   (masks area-resized to the token grid, used as weights), and M+ the maximum over tokens of C
   times the foreground mask (GF-SAM's max similarity map). References are combined by their mean
   (GF-SAM's mean over shots) or by a booster's weights.
2. Prior and prompts: prior = S+ > S-. The prompt score is S+ * M+, min-max normalized per image
   (GF-SAM's cross similarity), on prior cells; the k best cells become positive point prompts at
   their centres, k = min(floor(sum of the scores), max_points), at least 1 (GF-SAM's top-k, 128).
3. Masks: SAM predicts one mask per point (single-mask output, as GF-SAM). Masks are visited in
   decreasing mean S+ - S- inside them, and a mask is kept when the part of it that kept masks do
   not cover yet lies more on the prior than off it (GF-SAM's mask growth). The prediction is the
   union of kept masks, or, when none is kept, the mask with the highest mean S+ - S- (GF-SAM's
   fallback); an empty prior gives an empty prediction.

Simplified against GF-SAM: the prior compares S+ and S- directly (GSM's description of step 2)
where GF-SAM compares min-max normalized maps; GF-SAM's graph over points (connected components of
the point-covers-point graph), its per-component classification and its point-consistency filter
are left out, so mask growth runs over all masks of the image at once. Box and scribble supports
work as for protonet: their unlabelled pixels are in neither S+ nor S-.

Weights: `--weights dinov2=PATH` takes a Hugging Face DINOv2 folder (facebook/dinov2-large) or the
official `dinov2_vitl14_pretrain.pth` (its keys are renamed to transformers' Dinov2Model);
`--weights sam=sam_vit_h_4b8939.pth`. `--option config=tiny` selects a tiny random-weight
architecture of the same code for smoke runs (with --random-init); `config=full` with
--random-init times the full-size models.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from fssbench.harness.contract import EpisodeBatch, SetupContext, WeightSpec
from fssbench.adapters.affinity import Affinity, AffinityAdapter, Encoded, References, combine_references
from fssbench.adapters.backbones import IMAGENET_MEAN, IMAGENET_STD
from fssbench.harness.errors import UsageError
from fssbench.harness.extras import require

POINTS_PER_SAM_CALL = 64  # GF-SAM's batch of prompts per decoder call


@dataclass(frozen=True)
class Architecture:
    dinov2: dict  # transformers Dinov2Config arguments
    dinov2_input: int  # DINOv2 input side
    sam_encoder: dict  # segment_anything ImageEncoderViT arguments
    sam_prompt_dim: int
    sam_decoder_mlp: int
    sam_decoder_heads: int


ARCHITECTURES = {
    # DINOv2 ViT-L/14 and SAM ViT-H exactly as their checkpoints (segment_anything.build_sam_vit_h)
    "full": Architecture(
        dinov2=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4, patch_size=14,
                    image_size=518, layer_norm_eps=1e-6),
        dinov2_input=518,
        sam_encoder=dict(img_size=1024, patch_size=16, embed_dim=1280, depth=32, num_heads=16,
                         global_attn_indexes=(7, 15, 23, 31), window_size=14),
        sam_prompt_dim=256, sam_decoder_mlp=2048, sam_decoder_heads=8),
    "tiny": Architecture(
        dinov2=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, patch_size=14,
                    image_size=112, layer_norm_eps=1e-6),
        dinov2_input=112,
        sam_encoder=dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,),
                         window_size=2),
        sam_prompt_dim=32, sam_decoder_mlp=64, sam_decoder_heads=2),
}

DINOV2_SOURCE = ("https://huggingface.co/facebook/dinov2-large (the folder) or "
                 "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth")
SAM_SOURCE = ("https://github.com/facebookresearch/segment-anything "
              "(https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth)")


@dataclass(frozen=True)
class SamEncoded(Encoded):
    sam_embeddings: torch.Tensor  # [B, prompt_dim, 64, 64] SAM image embeddings of the queries
    sam_input_size: tuple[int, int]  # the query's size inside SAM's padded square input


@dataclass(frozen=True)
class SamAffinity(Affinity):
    positive_max: torch.Tensor  # M+ [B, h, w]


# Building and loading the models


def build_sam(architecture: Architecture):
    require("segment_anything", "affinity-sam (SAM)", "sam")
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    encoder = architecture.sam_encoder
    dim = architecture.sam_prompt_dim
    grid = encoder["img_size"] // encoder["patch_size"]
    return Sam(
        image_encoder=ImageEncoderViT(**encoder, mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                      qkv_bias=True, use_rel_pos=True, out_chans=dim),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(grid, grid),
                                     input_image_size=(encoder["img_size"], encoder["img_size"]), mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=dim, iou_head_depth=3,
                                 iou_head_hidden_dim=dim,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=dim,
                                                               mlp_dim=architecture.sam_decoder_mlp,
                                                               num_heads=architecture.sam_decoder_heads)),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def load_sam(architecture: Architecture, path: Path | None):
    sam = build_sam(architecture)
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            sam.load_state_dict(state)
        except RuntimeError as exc:
            raise UsageError(f"--weights sam={path} is not a SAM ViT-H checkpoint (expected sam_vit_h_4b8939.pth "
                             f"from {SAM_SOURCE}): {str(exc).splitlines()[0]}") from None
    return sam


OFFICIAL_BLOCK_NAMES = {"attn.proj.": "attention.o_proj.", "ls1.gamma": "layer_scale1.lambda1",
                        "ls2.gamma": "layer_scale2.lambda1"}
OFFICIAL_TOP_NAMES = {"cls_token": "embeddings.cls_token", "mask_token": "embeddings.mask_token",
                      "pos_embed": "embeddings.position_embeddings",
                      "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
                      "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
                      "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}


def dinov2_from_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of facebookresearch/dinov2's ViT checkpoints -> transformers' Dinov2Model keys."""
    converted = {}
    for key, value in state.items():
        if not key.startswith("blocks."):
            converted[OFFICIAL_TOP_NAMES.get(key, key)] = value
            continue
        _, index, rest = key.split(".", 2)
        prefix = f"encoder.layer.{index}."
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                converted[f"{prefix}attention.{name}.{kind}"] = part
            continue
        for official, ours in OFFICIAL_BLOCK_NAMES.items():
            rest = rest.replace(official, ours)
        converted[prefix + rest] = value
    return converted


def load_dinov2(architecture: Architecture, path: Path | None):
    require("transformers", "affinity-sam (DINOv2)", "sam")
    from transformers import Dinov2Config, Dinov2Model

    if path is not None and path.is_dir():
        try:
            return Dinov2Model.from_pretrained(path, local_files_only=True).eval()
        except OSError as exc:
            raise UsageError(f"--weights dinov2={path}: not a Hugging Face DINOv2 folder ({exc}); expected "
                             f"config.json and model.safetensors from {DINOV2_SOURCE}") from None
    model = Dinov2Model(Dinov2Config(**architecture.dinov2)).eval()
    if path is not None:
        state = dinov2_from_official(torch.load(path, map_location="cpu", weights_only=True))
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise UsageError(f"--weights dinov2={path} is not a DINOv2 ViT-L/14 checkpoint (expected "
                             f"dinov2_vitl14_pretrain.pth or a folder, from {DINOV2_SOURCE}): "
                             f"{str(exc).splitlines()[0]}") from None
    return model


# The three steps


def token_weights(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[B, N, H, W] masks -> [B, N, h*w] fraction of each token's cell that the mask covers."""
    return F.interpolate(masks.flatten(0, 1)[:, None], grid, mode="area").view(*masks.shape[:2], -1)


def mask_mean(similarity: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """similarity [B, N, n, m], token weights [B, N, m] -> weighted mean over m, [B, N, n]."""
    return (similarity @ weights[..., None])[..., 0] / weights.sum(dim=-1, keepdim=True).clamp(min=1e-6)


def prompt_scores(affinity: SamAffinity) -> torch.Tensor:
    """[B, h, w]: S+ * M+ min-max normalized per image, zero off the prior S+ > S-."""
    cross = (affinity.positive * affinity.positive_max).flatten(1)
    low, high = cross.min(dim=1, keepdim=True).values, cross.max(dim=1, keepdim=True).values
    normalized = ((cross - low) / (high - low + 1e-6)).view_as(affinity.positive)
    return normalized * (affinity.positive > affinity.negative)


def prompt_points(scores: torch.Tensor, image_size: tuple[int, int], max_points: int) -> torch.Tensor:
    """scores [h, w] -> [P, 2] (x, y) pixel coordinates of the best cells' centres."""
    total = float(scores.sum())
    count = min(max(int(total), 1 if total > 0 else 0), max_points)
    cells = scores.flatten().topk(count).indices
    h, w = scores.shape
    rows, cols = (cells // w).float(), (cells % w).float()
    return torch.stack([(cols + 0.5) * image_size[1] / w, (rows + 0.5) * image_size[0] / h], dim=1)


def grow_masks(masks: torch.Tensor, prior: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
    """GF-SAM's mask growth: masks [P, H, W] bool, prior and S+ - S- [h, w] -> prediction [H, W] bool."""
    coverage = F.interpolate(masks[:, None].float(), prior.shape, mode="area")[:, 0]  # [P, h, w]
    prior = prior.float()
    order = ((coverage * semantic).sum(dim=(1, 2)) / coverage.sum(dim=(1, 2)).clamp(min=1e-6)).argsort(descending=True)
    covered = torch.zeros_like(prior)
    kept = []
    for index in order.tolist():
        new = coverage[index] * (1 - covered)
        if (new * prior).sum() > (new * (1 - prior)).sum():
            covered = torch.maximum(covered, coverage[index])
            kept.append(index)
    return masks[kept].any(dim=0) if kept else masks[order[0]]


class AffinitySamAdapter(AffinityAdapter):
    description = "GF-SAM/Matcher-style pipeline: DINOv2 ViT-L/14 affinities -> prior and point prompts -> SAM ViT-H"
    support_annotations = frozenset({"mask", "box", "scribble"})
    weights = (WeightSpec("dinov2", "a Hugging Face DINOv2 ViT-L/14 folder or dinov2_vitl14_pretrain.pth",
                          DINOV2_SOURCE),
               WeightSpec("sam", "sam_vit_h_4b8939.pth", SAM_SOURCE))
    option_defaults = {"config": "full", "max_points": 128}
    option_choices = {"config": tuple(ARCHITECTURES)}

    @property
    def backbone(self) -> str:
        return "dinov2-vitl14+sam-vit-h" if self.options["config"] == "full" else "tiny-dinov2+tiny-sam"

    def setup(self, context: SetupContext) -> None:
        config = self.options["config"]
        if config == "tiny" and not context.random_init:
            raise UsageError("--option config=tiny is a random-weight architecture for smoke runs: add --random-init")
        torch.manual_seed(context.seed)
        self.architecture = ARCHITECTURES[config]
        self.dinov2 = load_dinov2(self.architecture, context.weights.get("dinov2")).to(context.device)
        self.sam = load_sam(self.architecture, context.weights.get("sam")).to(context.device)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.normalization = mean.view(1, 3, 1, 1).to(context.device), std.view(1, 3, 1, 1).to(context.device)

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> unit-norm pre-norm DINOv2 patch tokens [N, C, h, w]."""
        side = self.architecture.dinov2_input
        resized = F.interpolate(images, (side, side), mode="bilinear", align_corners=False, antialias=True)
        mean, std = self.normalization
        tokens = self.dinov2.encoder(self.dinov2.embeddings((resized - mean) / std)).last_hidden_state[:, 1:]
        grid = side // self.architecture.dinov2["patch_size"]
        return F.normalize(tokens.transpose(1, 2).reshape(len(images), -1, grid, grid), dim=1)

    def sam_embeddings(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        from segment_anything.utils.transforms import ResizeLongestSide

        size = ResizeLongestSide.get_preprocess_shape(*images.shape[-2:], self.sam.image_encoder.img_size)
        resized = F.interpolate(255 * images, size, mode="bilinear", align_corners=False, antialias=True)
        return self.sam.image_encoder(self.sam.preprocess(resized)), size

    def encode(self, batch: EpisodeBatch) -> SamEncoded:
        b, k = batch.support_masks.shape[:2]
        features = self.dense_features(torch.cat([batch.query_images, batch.support_images.flatten(0, 1)]))
        support = features[b:].view(b, k, *features.shape[1:])
        embeddings, input_size = self.sam_embeddings(batch.query_images)
        return SamEncoded(features[:b], References.of_supports(support, batch), tuple(batch.query_images.shape[-2:]),
                          embeddings, input_size)

    def affinity(self, encoded: Encoded, references: References, foreground_weights: torch.Tensor | None = None,
                 background_weights: torch.Tensor | None = None) -> SamAffinity:
        query = encoded.query_features
        grid = tuple(query.shape[-2:])
        similarity = torch.einsum("bcn,bkcm->bknm", query.flatten(2), references.features.flatten(3))
        foreground = token_weights(references.foreground, grid)
        background = token_weights(references.background, grid)
        positive_max = (similarity * foreground[:, :, None, :]).amax(dim=-1)
        return SamAffinity(
            positive=combine_references(mask_mean(similarity, foreground), foreground_weights).view_as(query[:, 0]),
            negative=combine_references(mask_mean(similarity, background), background_weights).view_as(query[:, 0]),
            positive_max=combine_references(positive_max, foreground_weights).view_as(query[:, 0]))

    def mask(self, encoded: SamEncoded, affinity: SamAffinity) -> torch.Tensor:
        scores = prompt_scores(affinity)
        prior = affinity.positive > affinity.negative
        semantic = affinity.positive - affinity.negative
        predictions = []
        for item in range(len(scores)):
            points = prompt_points(scores[item], encoded.image_size, int(self.options["max_points"]))
            if len(points) == 0:
                predictions.append(torch.zeros(encoded.image_size, dtype=torch.bool, device=scores.device))
                continue
            masks = self.sam_masks(encoded, item, points)
            predictions.append(grow_masks(masks, prior[item], semantic[item]))
        return torch.stack(predictions).float()

    def sam_masks(self, encoded: SamEncoded, item: int, points: torch.Tensor) -> torch.Tensor:
        """One SAM mask per positive point: points [P, 2] (x, y) -> [P, H, W] bool."""
        scale = torch.tensor([encoded.sam_input_size[1] / encoded.image_size[1],
                              encoded.sam_input_size[0] / encoded.image_size[0]], device=points.device)
        coordinates = (points * scale)[:, None]
        masks = []
        for chunk in coordinates.split(POINTS_PER_SAM_CALL):
            labels = torch.ones(chunk.shape[:2], dtype=torch.int, device=chunk.device)
            sparse, dense = self.sam.prompt_encoder(points=(chunk, labels), boxes=None, masks=None)
            low_resolution, _ = self.sam.mask_decoder(
                image_embeddings=encoded.sam_embeddings[item:item + 1], image_pe=self.sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
            logits = self.sam.postprocess_masks(low_resolution, encoded.sam_input_size, encoded.image_size)
            masks.append(logits[:, 0] > self.sam.mask_threshold)
        return torch.cat(masks)
