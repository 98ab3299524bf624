"""affinity-sam: its three steps on hand-built inputs, weight loading, and tiny models end to end."""

import json

import pytest
import torch

from fssbench.harness.contract import EpisodeBatch, SetupContext
from fssbench.adapters.affinity import Encoded, References
from fssbench.adapters.affinity_sam import (ARCHITECTURES, AffinitySamAdapter, SamAffinity, grow_masks, load_dinov2,
                                            load_sam, prompt_points, prompt_scores)
from fssbench.harness.errors import UsageError

TINY = ARCHITECTURES["tiny"]


@pytest.fixture(autouse=True)
def inference():
    with torch.inference_mode():  # as the harness calls predict
        yield


def hand_encoded() -> tuple[Encoded, References]:
    """A 1x2-token query and two 1x2-token references, at an evaluation size equal to the token grid."""
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)  # tokens along x and along y
    first = torch.tensor([[1.0, 0.0], [0.6, 0.8]]).T.reshape(2, 1, 2)
    second = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).T.reshape(2, 1, 2)
    foreground = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # [B=1, N=2, H=1, W=2]
    references = References(torch.stack([first, second])[None], foreground, 1 - foreground)
    return Encoded(query, references, (1, 2)), references


def test_affinity_is_the_mask_mean_and_max_of_cosine_similarity():
    encoded, references = hand_encoded()
    adapter = AffinitySamAdapter()
    only_first = adapter.affinity(encoded, references, torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    # first reference: foreground token (1, 0), background token (0.6, 0.8)
    assert torch.allclose(only_first.positive, torch.tensor([[[1.0, 0.0]]]))
    assert torch.allclose(only_first.negative, torch.tensor([[[0.6, 0.8]]]))
    assert torch.allclose(only_first.positive_max, only_first.positive)
    mean = adapter.affinity(encoded, references)
    # second reference: foreground token (1, 0), background (0, 1); the mean over both references
    assert torch.allclose(mean.positive, torch.tensor([[[1.0, 0.0]]]))
    assert torch.allclose(mean.negative, torch.tensor([[[0.3, 0.9]]]))


def test_prompts_are_the_best_prior_cells_at_their_centres():
    affinity = SamAffinity(positive=torch.tensor([[[0.9, 0.8], [0.5, 0.1]]]),
                           negative=torch.tensor([[[0.1, 0.1], [0.1, 0.5]]]),
                           positive_max=torch.ones(1, 2, 2))
    scores = prompt_scores(affinity)
    assert scores[0, 1, 1] == 0  # off the prior
    assert scores[0, 0, 0].item() == pytest.approx(1.0, abs=1e-5)  # the highest S+ * M+
    points = prompt_points(scores[0], (8, 8), max_points=128)
    assert points[0].tolist() == [2.0, 2.0]  # (x, y) of the top-left cell's centre
    assert len(points) == int(scores.sum())
    assert len(prompt_points(scores[0], (8, 8), max_points=1)) == 1
    assert len(prompt_points(torch.zeros(2, 2), (8, 8), max_points=128)) == 0


def test_mask_growth_keeps_masks_on_the_prior_and_falls_back_to_the_best_one():
    prior = torch.tensor([[True, True], [False, False]])
    semantic = torch.tensor([[0.5, 0.5], [-0.5, -0.5]])
    on, off = torch.zeros(2, 4, 4, dtype=torch.bool), torch.zeros(2, 4, 4, dtype=torch.bool)
    on[0, :2, :2], on[1, :2, 2:] = True, True
    off[0, 2:, :] = True
    off[1, 1:, :2] = True
    torch.testing.assert_close(grow_masks(torch.cat([off[:1], on]), prior, semantic), on[0] | on[1], rtol=0, atol=0)
    torch.testing.assert_close(grow_masks(off, prior, semantic), off[1], rtol=0, atol=0)  # none kept: the higher mean S+ - S-


def test_tiny_pipeline_is_deterministic_and_binary(tiny_batch):
    predictions = []
    for _ in range(2):
        adapter = AffinitySamAdapter({"config": "tiny"})
        adapter.setup(SetupContext(torch.device("cpu"), {}, True, 2, 64, 0, []))
        predictions.append(adapter.predict(tiny_batch))
    assert predictions[0].shape == (2, 64, 64)
    assert set(predictions[0].unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(predictions[0], predictions[1], rtol=0, atol=0)


@pytest.fixture
def tiny_batch():
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(2, 2, 64, 64)
    masks[..., 16:48, 8:40] = 1
    return EpisodeBatch([], torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 2, 3, 64, 64, generator=g), masks,
                        torch.ones_like(masks), "mask", ["x", "x"])


def test_tiny_config_needs_random_init():
    with pytest.raises(UsageError, match="random-init"):
        AffinitySamAdapter({"config": "tiny"}).setup(SetupContext(torch.device("cpu"), {}, False, 1, 64, 0, []))


def test_official_dinov2_checkpoint_keys_load_into_transformers_model(tmp_path):
    source = load_dinov2(TINY, None)
    state = source.state_dict()
    official = {"cls_token": state["embeddings.cls_token"], "mask_token": state["embeddings.mask_token"],
                "pos_embed": state["embeddings.position_embeddings"],
                "patch_embed.proj.weight": state["embeddings.patch_embeddings.projection.weight"],
                "patch_embed.proj.bias": state["embeddings.patch_embeddings.projection.bias"],
                "norm.weight": state["layernorm.weight"], "norm.bias": state["layernorm.bias"]}
    for i in range(TINY.dinov2["num_hidden_layers"]):
        ours, theirs = f"encoder.layer.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            official[f"{theirs}attn.qkv.{kind}"] = torch.cat(
                [state[f"{ours}attention.{p}_proj.{kind}"] for p in "qkv"])
            official[f"{theirs}attn.proj.{kind}"] = state[f"{ours}attention.o_proj.{kind}"]
            for layer in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                official[f"{theirs}{layer}.{kind}"] = state[f"{ours}{layer}.{kind}"]
        official[f"{theirs}ls1.gamma"] = state[f"{ours}layer_scale1.lambda1"]
        official[f"{theirs}ls2.gamma"] = state[f"{ours}layer_scale2.lambda1"]
    torch.save(official, tmp_path / "dinov2_pretrain.pth")
    torch.manual_seed(1)
    loaded = load_dinov2(TINY, tmp_path / "dinov2_pretrain.pth").state_dict()
    torch.testing.assert_close({key: loaded[key] for key in state}, state, rtol=0, atol=0)


def test_dinov2_loads_from_a_hugging_face_folder_with_the_hub_key_names(tmp_path):
    from safetensors.torch import load_file, save_file

    source = load_dinov2(TINY, None)
    source.save_pretrained(tmp_path / "dinov2")
    weights = tmp_path / "dinov2" / "model.safetensors"
    hub_names = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
                 "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense"}

    def as_on_the_hub(key):  # facebook/dinov2-large predates transformers' renaming of the attention layers
        for ours, hub in hub_names.items():
            key = key.replace(ours, hub)
        return key

    save_file({as_on_the_hub(key): value for key, value in load_file(weights).items()}, weights,
              metadata={"format": "pt"})
    torch.manual_seed(1)
    loaded = load_dinov2(TINY, tmp_path / "dinov2").state_dict()
    torch.testing.assert_close(loaded, source.state_dict(), rtol=0, atol=0)


def test_wrong_checkpoints_are_usage_errors_naming_the_expected_file(tmp_path):
    torch.save({"unrelated": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UsageError, match="sam_vit_h_4b8939.pth"):
        load_sam(TINY, tmp_path / "other.pth")
    with pytest.raises(UsageError, match="dinov2_vitl14_pretrain.pth"):
        load_dinov2(TINY, tmp_path / "other.pth")
    with pytest.raises(UsageError, match="config.json"):
        load_dinov2(TINY, tmp_path)


def test_gsm_affinity_sam_tiny_runs_timing_only_on_the_demo(cli, tmp_path):
    result = cli("eval", "-m", "gsm+affinity-sam", "-p", "demo-1shot", "--fold", "0", "--episodes", "1",
                 "--option", "config=tiny", "--random-init", "--json", "--out", str(tmp_path))
    assert result.code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["timing_only"] and record["status"] == "complete"
    assert record["backbone"] == "tiny-dinov2+tiny-sam"
