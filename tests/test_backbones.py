"""Registered backbones: multi-layer features, local weight formats, CLIP text towers (tiny random models)."""

import json
import string

import pytest
import torch

from fssbench.adapters import backbones
from fssbench.adapters.backbones import (BACKBONES, ClipResNetConfig, ClipResNetFeatures, ClipViTFeatures,
                                         build_backbone)
from fssbench.harness.errors import UsageError

TINY_CLIP_RN = ClipResNetConfig(layers=(1, 1, 1, 1), width=8, embed_dim=16, heads=2, text_width=16, text_heads=2,
                                text_layers=1, context_length=16, vocab_size=58)


def write_tiny_tokenizer(folder):
    """CLIP's tokenizer files with a character vocabulary of 58 ids; start and end of text are the last two."""
    characters = list(string.ascii_lowercase + ".,")
    vocab = {token: index for index, token in enumerate(characters + [c + "</w>" for c in characters])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def tiny_clip_vit():
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=58, max_position_embeddings=16, bos_token_id=56, eos_token_id=57),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=12)
    return ClipViTFeatures("clip-vit-b16", CLIPModel(config))


def test_every_backbone_is_described_and_the_default_comes_first():
    assert list(BACKBONES)[0] == "efficientnet-lite0"
    assert set(BACKBONES) == {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "resnet50",
                              "resnet101", "clip-rn50", "clip-rn101", "clip-vit-b16"}


@pytest.mark.parametrize("make", [
    lambda: build_backbone("efficientnet-lite1", random_init=True),
    lambda: ClipResNetFeatures("clip-rn50", TINY_CLIP_RN),
    tiny_clip_vit,
], ids=["efficientnet-lite1", "clip-rn", "clip-vit"])
def test_three_layers_with_the_declared_channels_and_strides(make):
    assert_three_layers(make())


def assert_three_layers(backbone):
    with torch.no_grad():
        features = backbone(torch.rand(2, 3, 64, 96))
    assert len(features) == 3
    assert [f.shape[1] for f in features] == backbone.channels
    assert [tuple(f.shape[-2:]) for f in features] == [(64 // s, 96 // s) for s in backbone.strides]


@pytest.mark.parametrize("make", [lambda: ClipResNetFeatures("clip-rn50", TINY_CLIP_RN), tiny_clip_vit],
                         ids=["clip-rn", "clip-vit"])
def test_clip_text_and_dense_image_embeddings_share_the_joint_space(make):
    backbone = make()
    with torch.no_grad():
        features = backbone(torch.rand(2, 3, 64, 64))
        dense = backbone.embed_dense(features)
        text = backbone.embed_text(["a photo of a cat.", "a photo of a dog."])
    assert dense.shape[:2] == (2, text.shape[1]) and dense.shape[-2:] == features[-1].shape[-2:]
    assert text.shape[0] == 2 and not torch.allclose(text[0], text[1])


def write_tiny_clip_rn50_folder(folder, monkeypatch) -> ClipResNetFeatures:
    """open_clip's clip-rn50 folder layout holding a tiny random model (which `clip-rn50` then builds)."""
    from safetensors.torch import save_file

    monkeypatch.setitem(backbones.CLIP_RESNETS, "clip-rn50", TINY_CLIP_RN)
    saved = ClipResNetFeatures("clip-rn50", TINY_CLIP_RN)
    state = {k: v for k, v in saved.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file({**state, "logit_scale": torch.tensor(4.6)}, folder / "open_clip_model.safetensors")
    write_tiny_tokenizer(folder)
    return saved


def test_clip_resnet_loads_open_clip_safetensors_and_its_tokenizer(tmp_path, monkeypatch):
    saved = write_tiny_clip_rn50_folder(tmp_path, monkeypatch)
    loaded = build_backbone("clip-rn50", weights=tmp_path)
    torch.testing.assert_close(loaded.visual.layer4[0].conv2.weight, saved.visual.layer4[0].conv2.weight, rtol=0, atol=0)
    torch.testing.assert_close(loaded.text_projection, saved.text_projection, rtol=0, atol=0)
    tokens = loaded.tokenizer(["a cat."]).input_ids
    assert tokens[0][0] == 56 and tokens[0][-1] == 57  # start and end of text from the folder's vocabulary
    with torch.no_grad():
        assert loaded.embed_text(["a cat."]).shape == (1, TINY_CLIP_RN.embed_dim)


def test_torchvision_resnet_loads_a_plain_state_dict(tmp_path):
    import torchvision

    model = torchvision.models.resnet50(weights=None)
    torch.save(model.state_dict(), tmp_path / "resnet50-0676ba61.pth")
    loaded = build_backbone("resnet50", weights=tmp_path / "resnet50-0676ba61.pth")
    torch.testing.assert_close(loaded.layers[2][0].conv1.weight, model.layer4[0].conv1.weight, rtol=0, atol=0)
    assert_three_layers(loaded)


@pytest.mark.parametrize("name, weights, expected", [
    ("resnet101", None, "resnet101-63fe2227.pth"),
    ("clip-rn50", None, "huggingface.co/timm/resnet50_clip.openai"),
    ("clip-vit-b16", None, "huggingface.co/openai/clip-vit-base-patch16"),
    ("clip-rn101", "folder", "open_clip_model.safetensors does not exist"),
    ("efficientnet-lite0", "folder", "takes no weights file"),
])
def test_missing_or_wrong_weights_name_the_file_and_its_source(tmp_path, name, weights, expected):
    with pytest.raises(UsageError, match=expected.replace(".", r"\.")):
        build_backbone(name, weights=tmp_path if weights == "folder" else None)


def test_unknown_backbone_suggests_a_close_name():
    with pytest.raises(UsageError, match="Did you mean 'resnet50'"):
        build_backbone("resnet-50", random_init=True)
