"""ProtoNet: a training-free prototype baseline on real ImageNet features.

Features of EfficientNet-Lite0 at strides 8, 16 and 32 are L2-normalized per layer, brought to
stride 8 and concatenated. Masked average pooling of each support gives a foreground and a
background prototype (from the pixels the support annotation labels: all of them for masks, the
box or scribble regions otherwise); the K supports' prototypes are averaged. The query's foreground probability is
a softmax over its scaled cosine similarity to the two prototypes (scale 20, as PANet), upsampled
bilinearly to the evaluation resolution.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from fssbench.adapter import Adapter, EpisodeBatch, SetupContext
from fssbench.adapters.backbones import EfficientNetLiteFeatures, efficientnet_lite_weights

COSINE_SCALE = 20.0


def dense_features(backbone: EfficientNetLiteFeatures, images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> [N, C, H/8, W/8] unit-norm multi-layer features."""
    layers = backbone(images)
    size = layers[0].shape[-2:]
    upsampled = [F.interpolate(F.normalize(f, dim=1), size, mode="bilinear", align_corners=False) for f in layers]
    return F.normalize(torch.cat(upsampled, dim=1), dim=1)


def masked_average(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """features [N, C, h, w], masks [N, H, W] in [0, 1] -> prototypes [N, C]."""
    weights = F.interpolate(masks[:, None], features.shape[-2:], mode="bilinear", align_corners=False)
    return (features * weights).sum(dim=(2, 3)) / weights.sum(dim=(2, 3)).clamp(min=1e-6)


def prototype_probabilities(query: torch.Tensor, foreground: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """query [B, C, h, w], prototypes [B, C] -> foreground probability [B, h, w]."""
    prototypes = F.normalize(torch.stack([background, foreground], dim=1), dim=2)  # [B, 2, C]
    similarity = torch.einsum("bchw,bkc->bkhw", query, prototypes)
    return (COSINE_SCALE * similarity).softmax(dim=1)[:, 1]


class ProtoNetAdapter(Adapter):
    description = "training-free prototypes + cosine similarity on ImageNet EfficientNet-Lite0 features"
    support_annotations = frozenset({"mask", "box", "scribble"})
    variant = 0

    @property
    def backbone(self) -> str:
        return f"efficientnet-lite{self.variant}"

    def packaged_weights(self) -> dict[str, Path]:
        return {self.backbone: efficientnet_lite_weights(self.variant)}

    def setup(self, context: SetupContext) -> None:
        torch.manual_seed(context.seed)
        self.features = EfficientNetLiteFeatures(self.variant, random_init=context.random_init).to(context.device)

    def prototypes(self, batch: EpisodeBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query features [B, C, h, w] and the K-averaged foreground and background prototypes [B, C]."""
        b, k = batch.support_masks.shape[:2]
        images = torch.cat([batch.query_images, batch.support_images.flatten(0, 1)])
        features = dense_features(self.features, images)
        query, support = features[:b], features[b:]
        masks = batch.support_masks.flatten(0, 1)
        labelled_background = batch.support_labelled.flatten(0, 1) * (1 - masks)
        foreground = masked_average(support, masks).view(b, k, -1).mean(dim=1)
        background = masked_average(support, labelled_background).view(b, k, -1).mean(dim=1)
        return query, foreground, background

    def predict(self, batch: EpisodeBatch) -> torch.Tensor:
        query, foreground, background = self.prototypes(batch)
        probability = prototype_probabilities(query, foreground, background)
        return F.interpolate(probability[:, None], batch.query_images.shape[-2:], mode="bilinear",
                             align_corners=False)[:, 0]
