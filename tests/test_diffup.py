"""DiffUp: BAFT and UAPF by hand, SCM/DQM shapes, the loss, DDIM, checkpoints across backbones and
training. Tiny decoders; backbones at random init except where real weights are the point."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fssbench.harness.contract import EpisodeBatch, SetupContext
from fssbench.adapters.backbones import ClipResNetFeatures, build_backbone
from fssbench.adapters.diffup.adapter import DiffUpAdapter
from fssbench.adapters.diffup.training import train_diffup
from fssbench.adapters.diffup.checkpoint import load_checkpoint, save_checkpoint
from fssbench.adapters.diffup.config import DiffUpConfig
from fssbench.adapters.diffup.diffusion import Diffusion
from fssbench.adapters.diffup.priors import (Conditions, affinity_enhanced, build_conditions, cosine_priors,
                                             fuse_priors, query_affinity)
from fssbench.adapters.diffup.training import TrainingBatch, diffup_losses, mask_target, step_noise, train_step
from fssbench.adapters.diffup.unet import UQDD, Modulation, QualityHeads
from fssbench.harness.episodes import Episode
from fssbench.harness.errors import UsageError
from test_backbones import TINY_CLIP_RN, write_tiny_clip_rn50_folder

TINY = DiffUpConfig(name="tiny", image_size=64, mask_size=16, widths=(4, 8, 8), blocks=1, embedding=8, hidden=4,
                    timesteps=20, prediction="epsilon", support_views=3, extra_priors=2, batch_size=2,
                    learning_rate=1e-3, epochs=1, checkpoint_every=2, cache_features=True, lambda_error=1.0,
                    lambda_iou=1.0)
SIZE = 48  # evaluation resolution of the synthetic batches


def tiny_conditions(batch: int = 2, seed: int = 0) -> Conditions:
    generator = torch.Generator().manual_seed(seed)
    priors = [torch.rand(batch, 2 + TINY.extra_priors, side, side, generator=generator) * 2 - 1 for side in (8, 4, 2)]
    return Conditions(priors, torch.rand(batch, 2, 16, 16, generator=generator),
                      torch.rand(batch, 3, 16, 16, generator=generator) * 2 - 1)


def synthetic_batch(annotation: str, shot: int = 1, batch: int = 2) -> EpisodeBatch:
    generator = torch.Generator().manual_seed(1)
    masks = torch.zeros(batch, shot, SIZE, SIZE)
    masks[..., 10:30, 12:40] = 1
    return EpisodeBatch(
        episodes=[Episode(index, 0, 0, f"q{index}", tuple(f"s{k}" for k in range(shot))) for index in range(batch)],
        query_images=torch.rand(batch, 3, SIZE, SIZE, generator=generator),
        support_images=torch.rand(batch, shot, 3, SIZE, SIZE, generator=generator),
        support_masks=masks, support_labelled=torch.ones_like(masks), support_annotation=annotation,
        class_names=["cat"] * batch)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("diffup") / "tiny.pt"
    save_checkpoint(path, {"config": TINY.to_dict(), "backbone": "efficientnet-lite0", "step": 0,
                           "decoder": UQDD(TINY).state_dict()})
    return path


def tiny_adapter(checkpoint: Path, backbone: str = "efficientnet-lite0", backbone_weights: Path | None = None,
                 **options) -> DiffUpAdapter:
    adapter = DiffUpAdapter({"ddim_steps": 3, "ensemble": 2, **options}, backbone)
    weights = {"decoder": checkpoint, **({"backbone": backbone_weights} if backbone_weights else {})}
    adapter.setup(SetupContext(torch.device("cpu"), weights, False, 1, SIZE, 0, ["cat"]))
    return adapter


# --- BAFT and UAPF ---


@pytest.mark.parametrize("channels", [3, 40, 2048])
def test_baft_priors_have_one_shape_and_lie_in_minus_one_one_whatever_the_channels(channels):
    query = torch.randn(2, channels, 6, 5)
    prototypes = torch.randn(2, 4, channels)
    priors = cosine_priors(query, prototypes)
    enhanced = affinity_enhanced(query_affinity(query), priors)
    for prior in (priors, enhanced):
        assert prior.shape == (2, 4, 6, 5)
        assert prior.min() >= -1 - 1e-6 and prior.max() <= 1 + 1e-6


def test_cosine_prior_is_one_where_the_query_matches_the_prototype_and_affinity_rows_sum_to_one():
    query = torch.zeros(1, 2, 1, 2)
    query[0, :, 0, 0] = torch.tensor([3.0, 0.0])  # points along the prototype
    query[0, :, 0, 1] = torch.tensor([0.0, 1.0])  # orthogonal to it
    prior = cosine_priors(query, torch.tensor([[[1.0, 0.0]]]))
    assert prior.flatten().tolist() == [1.0, 0.0]
    affinity = query_affinity(torch.randn(2, 7, 3, 4))
    assert torch.allclose(affinity.sum(dim=-1), torch.ones(2, 12))


def test_uapf_mean_unbiased_variance_and_extra_priors_by_hand():
    views = torch.tensor([1.0, 2.0, 6.0]).view(1, 3, 1, 1)  # three views of one pixel
    fused = fuse_priors(views, extra=2)
    assert fused.flatten().tolist() == [3.0, 7.0, 1.0, 2.0]  # mean 3, ((1-3)^2 + (2-3)^2 + (6-3)^2) / 2 = 7
    single = fuse_priors(views[:, :1], extra=2)
    assert single.flatten().tolist() == [1.0, 0.0, 1.0, 1.0]  # one view: variance 0, the extras repeat it


def test_conditions_have_the_same_channels_for_backbones_of_different_widths():
    batch = synthetic_batch("mask")
    shapes = []
    backbones = (build_backbone("efficientnet-lite0", random_init=True), ClipResNetFeatures("clip-rn50", TINY_CLIP_RN))
    for backbone in backbones:
        with torch.no_grad():
            conditions = build_conditions(backbone, TINY, batch.query_images, batch.support_images,
                                          batch.support_masks, "mask", batch.class_names)
        shapes.append([tuple(p.shape[:2]) for p in conditions.priors])
        assert conditions.edges.shape == (2, 2, 16, 16) and conditions.image.shape == (2, 3, 16, 16)
    assert shapes[0] == shapes[1] == [(2, 2 + TINY.extra_priors)] * 3


def test_text_priors_need_a_text_tower():
    batch = synthetic_batch("text")
    with torch.no_grad():
        conditions = build_conditions(ClipResNetFeatures("clip-rn50", TINY_CLIP_RN), TINY, batch.query_images,
                                      batch.support_images, batch.support_masks, "text", batch.class_names)
        assert [p.shape[1] for p in conditions.priors] == [2 + TINY.extra_priors] * 3
        with pytest.raises(UsageError, match="text supports need a backbone with a text tower"):
            build_conditions(build_backbone("efficientnet-lite0", random_init=True), TINY, batch.query_images,
                             batch.support_images, batch.support_masks, "text", batch.class_names)


# --- UQDD ---


def test_scm_keeps_the_feature_shape_and_dqm_predicts_an_error_map_and_an_iou():
    modulation = Modulation(channels=6, condition_channels=5, embedding=8, hidden=4)
    features = torch.randn(3, 6, 8, 8)
    assert modulation(features, torch.randn(3, 5, 8, 8), torch.randn(3, 8)).shape == features.shape
    quality = QualityHeads(hidden=4, embedding=8)(torch.randn(3, 1, 16, 16), torch.rand(3, 3, 16, 16))
    assert quality.error.shape == (3, 1, 16, 16) and quality.embedding.shape == (3, 8)
    assert quality.iou.shape == (3,) and ((quality.iou >= 0) & (quality.iou <= 1)).all()
    prediction = UQDD(TINY)(torch.randn(2, 1, 16, 16), torch.tensor([0, 19]), UQDD(TINY).prepare(tiny_conditions()))
    assert prediction.output.shape == (2, 1, 16, 16)


def test_one_training_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    backbone = build_backbone("efficientnet-lite0", random_init=True)
    decoder = UQDD(TINY)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=TINY.learning_rate)
    episodes = synthetic_batch("mask")
    batch = TrainingBatch(episodes.query_images, episodes.support_masks[:, 0], episodes.support_images,
                          episodes.support_masks, "mask", episodes.class_names)
    diffusion = Diffusion(TINY.timesteps)
    before = train_step(backbone, decoder, optimizer, diffusion, batch, seed=0, step=0, device=torch.device("cpu"))
    with torch.no_grad():
        conditions = build_conditions(backbone, TINY, batch.query_images, batch.support_images, batch.support_masks,
                                      "mask", batch.class_names)
        x0 = mask_target(batch.query_masks, TINY.mask_size)
        after = diffup_losses(decoder, diffusion, conditions, x0, *step_noise(x0, TINY.timesteps, 0, 0))
    assert after.total < before.total


def test_the_loss_is_the_weighted_sum_of_its_parts():
    decoder = UQDD(replace(TINY, lambda_error=0.5, lambda_iou=2.0))
    x0 = torch.ones(2, 1, 16, 16)
    losses = diffup_losses(decoder, Diffusion(TINY.timesteps), tiny_conditions(), x0, torch.tensor([3, 10]),
                           torch.randn(2, 1, 16, 16))
    assert torch.isclose(losses.total, losses.diffusion + 0.5 * losses.error + 2.0 * losses.iou)


# --- diffusion ---


@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
def test_ddim_with_an_oracle_denoiser_returns_its_clean_mask(prediction):
    diffusion = Diffusion(250, prediction)
    clean = torch.tensor([-1.0, 1.0, 0.5]).view(3, 1, 1, 1)

    def oracle(x_t, t):  # the output that makes x_t a noisy version of `clean`
        alpha_bar = diffusion.alphas_cumprod[t].view(-1, 1, 1, 1)
        return diffusion.target(clean, (x_t - alpha_bar.sqrt() * clean) / (1 - alpha_bar).sqrt())

    assert torch.allclose(diffusion.ddim_sample(oracle, torch.randn(3, 1, 1, 1), steps=50), clean, atol=1e-5)
    assert len(set(diffusion.ddim_timesteps(50))) == 50 and diffusion.ddim_timesteps(50)[0] == 249
    noise, t = torch.randn(3, 1, 1, 1), torch.tensor([0, 100, 249])
    x_t = diffusion.add_noise(clean, noise, t)
    assert torch.allclose(diffusion.predicted_x0(x_t, diffusion.target(clean, noise), t), clean, atol=1e-4)


def test_sampling_is_deterministic_for_a_seed_and_changes_with_it(tiny_checkpoint):
    batch = synthetic_batch("mask")
    with torch.inference_mode():
        first = tiny_adapter(tiny_checkpoint).predict(batch)
        again = tiny_adapter(tiny_checkpoint).predict(batch)
        other = tiny_adapter(tiny_checkpoint, seed=1).predict(batch)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert (first != other).any()


# --- the adapter ---


@pytest.mark.parametrize("annotation, shot", [("mask", 1), ("box", 1), ("scribble", 1), ("none", 1), ("mask", 3)])
def test_a_checkpoint_trained_with_one_backbone_runs_with_another(tiny_checkpoint, annotation, shot):
    assert load_checkpoint(tiny_checkpoint)["backbone"] == "efficientnet-lite0"
    adapter = tiny_adapter(tiny_checkpoint, backbone="efficientnet-lite2")  # other channel counts
    assert adapter.features.channels != build_backbone("efficientnet-lite0", random_init=True).channels
    with torch.inference_mode():
        probability = adapter.predict(synthetic_batch(annotation, shot=shot))
    assert probability.shape == (2, SIZE, SIZE)
    assert probability.min() >= 0 and probability.max() <= 1


def test_text_supports_run_with_a_clip_backbone_from_its_weights_folder(tiny_checkpoint, tmp_path, monkeypatch):
    write_tiny_clip_rn50_folder(tmp_path, monkeypatch)
    adapter = tiny_adapter(tiny_checkpoint, backbone="clip-rn50", backbone_weights=tmp_path)
    assert adapter.features.tokenizer is not None
    with torch.inference_mode():
        probability = adapter.predict(synthetic_batch("text"))
    assert probability.shape == (2, SIZE, SIZE) and probability.min() >= 0 and probability.max() <= 1


def test_text_supports_with_an_imagenet_backbone_are_refused(tiny_checkpoint):
    with torch.inference_mode(), pytest.raises(UsageError, match="clip-rn50, clip-rn101 or clip-vit-b16"):
        tiny_adapter(tiny_checkpoint).predict(synthetic_batch("text"))


@pytest.mark.parametrize("options, message", [
    ({"ddim_steps": 21}, "must lie in 1..20"), ({"ensemble": 0}, "at least 1"),
    ({"config": "small"}, "holds a decoder of config 'tiny'"),
])
def test_bad_options_are_refused(tiny_checkpoint, options, message):
    with pytest.raises(UsageError, match=message):
        tiny_adapter(tiny_checkpoint, **options)


def test_a_file_that_is_no_checkpoint_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(UsageError, match="is not a DiffUp checkpoint"):
        tiny_adapter(tmp_path / "other.pt")


# --- training ---


@pytest.mark.slow
def test_training_writes_checkpoints_and_a_resumed_run_equals_an_uninterrupted_one(demo_reader, tmp_path):
    config = replace(TINY, checkpoint_every=1)
    folds = [0, 1, 2, 3]
    whole = train_diffup(demo_reader, 0, folds, "efficientnet-lite0", tmp_path / "whole.pt", config, steps=3,
                         device="cpu")
    train_diffup(demo_reader, 0, folds, "efficientnet-lite0", tmp_path / "split.pt", config, steps=2, device="cpu")
    with pytest.raises(UsageError, match="pass --resume"):
        train_diffup(demo_reader, 0, folds, "efficientnet-lite0", tmp_path / "split.pt", config, steps=3, device="cpu")
    with pytest.raises(UsageError, match="other settings"):
        train_diffup(demo_reader, 0, folds, "efficientnet-lite1", tmp_path / "split.pt", config, steps=3,
                     device="cpu", resume=True)
    split = train_diffup(demo_reader, 0, folds, "efficientnet-lite0", tmp_path / "split.pt", config, steps=3,
                         device="cpu", resume=True)
    whole_state, split_state = load_checkpoint(whole), load_checkpoint(split)
    assert whole_state["step"] == split_state["step"] == 3
    assert whole_state["backbone"] == "efficientnet-lite0" and whole_state["config"]["name"] == "tiny"
    torch.testing.assert_close(whole_state["decoder"], split_state["decoder"], rtol=0, atol=0)
