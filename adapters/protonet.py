"""ProtoNet: a training-free prototype baseline on real ImageNet features.

Features of EfficientNet-Lite0 at strides 8, 16 and 32 are L2-normalized per layer, brought to
stride 8 and concatenated. Masked average pooling of each support gives a foreground and a
background prototype (from the pixels the support annotation labels: all of them for masks, the
box or scribble regions otherwise); the K supports' prototypes are averaged. The query's foreground probability is
a softmax over its scaled cosine similarity to the two prototypes (scale 20, as PANet), upsampled
bilinearly to the evaluation resolution.

In the three steps of affinity-based segmentation (fssbench.adapters.affinity), the affinities S+
and S- are the query's cosine similarities to the foreground and background prototypes, and the
references are combined at the prototype (their mean, or a weighted sum when a booster gives
weights); steps 2-3 are the scaled softmax.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from fssbench.harness.contract import EpisodeBatch, SetupContext
from fssbench.adapters.affinity import (Affinity, AffinityAdapter, Encoded, References, combine_references,
                                        masked_average, reference_prototypes)
from fssbench.adapters.backbones import EfficientNetLiteFeatures, efficientnet_lite_weights

__all__ = ["ProtoNetAdapter", "dense_features", "masked_average", "prototype_probabilities"]

COSINE_SCALE = 20.0


def dense_features(backbone: EfficientNetLiteFeatures, images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> [N, C, H/8, W/8] unit-norm multi-layer features."""
    layers = backbone(images)
    size = layers[0].shape[-2:]
    upsampled = [F.interpolate(F.normalize(f, dim=1), size, mode="bilinear", align_corners=False) for f in layers]
    return F.normalize(torch.cat(upsampled, dim=1), dim=1)


def prototype_affinity(query: torch.Tensor, foreground: torch.Tensor, background: torch.Tensor) -> Affinity:
    """query [B, C, h, w] (unit norm), prototypes [B, C] -> cosine similarities S+ and S- [B, h, w]."""
    prototypes = F.normalize(torch.stack([background, foreground], dim=1), dim=2)  # [B, 2, C]
    similarity = torch.einsum("bchw,bkc->bkhw", query, prototypes)
    return Affinity(positive=similarity[:, 1], negative=similarity[:, 0])


def affinity_probabilities(affinity: Affinity) -> torch.Tensor:
    """Foreground probability [B, h, w]: softmax over the scaled similarities to the two prototypes."""
    return (COSINE_SCALE * torch.stack([affinity.negative, affinity.positive], dim=1)).softmax(dim=1)[:, 1]


def prototype_probabilities(query: torch.Tensor, foreground: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """query [B, C, h, w], prototypes [B, C] -> foreground probability [B, h, w]."""
    return affinity_probabilities(prototype_affinity(query, foreground, background))


class ProtoNetAdapter(AffinityAdapter):
    description = "training-free prototypes + cosine similarity on ImageNet EfficientNet-Lite features (Lite0 default)"
    support_annotations = frozenset({"mask", "box", "scribble"})
    backbones = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")

    @property
    def variant(self) -> int:
        return int(self.backbone[-1])

    def packaged_weights(self) -> dict[str, Path]:
        return {self.backbone: efficientnet_lite_weights(self.variant)}

    def setup(self, context: SetupContext) -> None:
        torch.manual_seed(context.seed)
        self.features = EfficientNetLiteFeatures(self.variant, random_init=context.random_init).to(context.device)

    def encode(self, batch: EpisodeBatch) -> Encoded:
        b, k = batch.support_masks.shape[:2]
        supports = batch.support_images
        shared = b > 1 and supports.stride(0) == 0  # one support set expanded over the batch (AlignDiff's
        # conditioning): its K images are encoded once, not once per query
        images = torch.cat([batch.query_images, supports[0] if shared else supports.flatten(0, 1)])
        features = dense_features(self.features, images)
        support = (features[b:][None].expand(b, -1, -1, -1, -1) if shared
                   else features[b:].view(b, k, *features.shape[1:]))
        return Encoded(features[:b], References.of_supports(support, batch), tuple(batch.query_images.shape[-2:]))

    def affinity(self, encoded: Encoded, references: References, foreground_weights: torch.Tensor | None = None,
                 background_weights: torch.Tensor | None = None) -> Affinity:
        foreground, background = reference_prototypes(references)
        return prototype_affinity(encoded.query_features, combine_references(foreground, foreground_weights),
                                  combine_references(background, background_weights))

    def mask(self, encoded: Encoded, affinity: Affinity) -> torch.Tensor:
        probability = affinity_probabilities(affinity)
        return F.interpolate(probability[:, None], encoded.image_size, mode="bilinear", align_corners=False)[:, 0]
