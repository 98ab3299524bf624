"""AlignDiff: eq. 3's loss, only v* trains, Algorithm 1 on hand-made predictions, the registry's
aligndiff+<X> composition, the store making a second run generate nothing, the CLI end to end (demo
source; tiny random Stable Diffusion), and the GFSS path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fssbench import registry
from fssbench.adapters.aligndiff.algorithm import align_masks
from fssbench.adapters.aligndiff.inversion import masked_balanced_loss
from fssbench.harness.errors import UsageError


def test_masked_balanced_loss_equals_eq3_on_a_hand_built_example():
    prediction = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[[1.0, 2.0], [0.0, 0.0]], [[1.0, 0.0], [3.0, 0.0]]]])  # [1, C=2, 2, 2]
    foreground = torch.tensor([[[True, False], [False, False]]])
    # squared error summed over channels: [[2, 4], [9, 0]]; fg mean 2; bg mean (4 + 9 + 0) / 3
    expected = 2.0 + 0.6 * 13 / 3
    assert float(masked_balanced_loss(prediction, target, foreground, 0.6)) == pytest.approx(expected)
    # an all-background mask leaves the foreground term out
    assert float(masked_balanced_loss(prediction, target, torch.zeros(1, 2, 2, dtype=torch.bool), 0.5)) == \
        pytest.approx(0.5 * 15 / 4)


def test_algorithm1_moves_exactly_the_samples_over_alpha():
    h = w = 4
    real_images, real_masks = torch.zeros(1, 3, h, w), torch.ones(1, h, w)
    images = torch.arange(4.0)[:, None, None, None].expand(4, 3, h, w)
    coarse = torch.zeros(4, h, w, dtype=torch.bool)
    coarse[:, :2] = True  # 8 pixels each
    first = coarse.clone()
    first[1, 0, :] = False  # IoU 4 / 8 = 0.5
    first[2, :, 0] = False  # IoU 6 / 8 = 0.75 (exactly alpha: moves, as the paper's >=)
    first[3] = ~coarse[3]  # IoU 0
    calls = []

    def segment(good_images, good_masks, indices):
        calls.append((len(good_images), indices.tolist()))
        if len(calls) == 1:
            return first[indices]
        return torch.ones(len(indices), h, w, dtype=torch.bool)  # the re-conditioned prediction

    result = align_masks(real_images, real_masks, images, coarse, segment, alpha=0.75)
    assert result.accepted.tolist() == [True, False, True, False]
    torch.testing.assert_close(result.ious, torch.tensor([1.0, 0.5, 0.75, 0.0]))
    assert calls == [(1, [0, 1, 2, 3]), (3, [1, 3])]  # re-conditioned on 1 real + the 2 moved samples
    torch.testing.assert_close(result.masks[[0, 2]], coarse[[0, 2]], rtol=0, atol=0)  # moved with their coarse masks
    assert result.masks[[1, 3]].all()  # the rest re-estimated
    calls.clear()
    prediction_kept = align_masks(real_images, real_masks, images, coarse, segment, 0.75, "prediction")
    torch.testing.assert_close(prediction_kept.masks[2], first[2], rtol=0, atol=0)  # the authors' code keeps the FSS prediction


def test_aligndiff_composes_with_any_registered_fss_method():
    names = registry.methods.names()
    assert {"aligndiff+protonet", "aligndiff+gsm+protonet", "aligndiff+diffews"} <= set(names)
    composed = registry.methods.get("aligndiff+gsm+protonet")
    assert composed.base_method is registry.methods.get("gsm+protonet")
    assert {"n_samples", "alpha", "qsm", "tsr"} <= set(composed.option_defaults)
    assert composed.option_defaults["n_samples"] == 20 and composed.support_annotations == {"mask"}
    assert "protonet" in registry.methods.entry("aligndiff+gsm+protonet").description
    with pytest.raises(UsageError, match="already augmented"):
        registry.methods.get("aligndiff+aligndiff+protonet")
    from fssbench.harness.provenance import code_identity

    identity = code_identity(composed)["adapter"]
    assert "fssbench.adapters.aligndiff.adapter" in identity and "fssbench.adapters.gsm" in identity
    assert "fssbench.protocols.demo_synthesis" in identity
    with pytest.raises(UsageError, match="unknown method 'aligndiff\\+nonesuch'"):
        registry.methods.get("aligndiff+nonesuch")


def test_textual_inversion_trains_only_the_v_star_row():
    from fssbench.adapters.aligndiff.inversion import Inversion
    from fssbench.adapters.synthesis.diffusers_source import random_model

    model = random_model("tiny", seed=0, device=torch.device("cpu"))
    frozen = {name: p.detach().clone() for module in (model.unet, model.vae) for name, p in module.named_parameters()}
    text = {name: p.detach().clone() for name, p in model.text_encoder.named_parameters()}
    image, mask = torch.rand(3, 32, 32), torch.zeros(32, 32)
    mask[8:24, 8:24] = 1
    inversion = Inversion(model, image, mask, "cell", {"inversion_steps": 3, "inversion_batch": 2, "inversion_lr": 0.1}, 0)
    start = model.text_encoder.get_input_embeddings().weight.detach().clone()
    inversion.step()
    after = model.text_encoder.get_input_embeddings().weight.detach()
    changed = (after != start).any(dim=1).nonzero().flatten().tolist()
    assert changed == [model.placeholder_id]
    for name, p in (*model.unet.named_parameters(), *model.vae.named_parameters()):
        torch.testing.assert_close(p, frozen[name], rtol=0, atol=0, msg=name)
    for name, p in model.text_encoder.named_parameters():
        if "token_embedding" not in name:
            torch.testing.assert_close(p, text[name], rtol=0, atol=0, msg=name)
    torch.testing.assert_close(inversion.result(), after[model.placeholder_id], rtol=0, atol=0)


def run_eval(cli, out: Path, *options: str, method: str = "aligndiff+protonet", extra: tuple[str, ...] = ()):
    args = ["eval", "--method", method, "--protocol", "demo-1shot", "--episodes", "2", "--fold", "0",
            "--out", str(out), "--json", *extra]
    for option in options:
        args += ["--option", option]
    result = cli(*args)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_demo_source_end_to_end_with_real_lite0_features_and_a_cached_second_run(cli, tmp_path, demo_reader):
    options = ("source=demo", "textual_inversion=false", "n_samples=3")
    record = run_eval(cli, tmp_path / "a", *options)
    report = record["method_report"]
    assert record["status"] == "complete" and report["support_set"] == "1R+3S"
    assert report["store"]["made"] == 6 and report["samples_used"] == 6  # episodes 0 and 1: classes 0 and 1, 3 each
    assert {"coarse", "fss_only", "algorithm1"} <= set(report["mask_quality"])
    assert report["mask_quality"]["coarse"]["samples"] == 6
    assert report["cost"]["generation"]["items"] == 6 and report["cost"]["mask_generation"]["items"] == 6
    assert "aligndiff" in record["code"]["adapter"] and "protonet" in record["code"]["adapter"]
    again = run_eval(cli, tmp_path / "b", *options)
    assert again["method_report"]["store"]["made"] == 0 and again["method_report"]["store"]["hits"] == 6
    assert again["method_report"]["synthetic_set_sha256"] == report["synthetic_set_sha256"]
    assert again["results"][0]["episode_scores"] == record["results"][0]["episode_scores"]


@pytest.mark.slow
def test_tiny_stable_diffusion_runs_end_to_end_through_the_cli(cli, tmp_path, demo_reader):
    record = run_eval(cli, tmp_path, "sd_config=tiny", "n_samples=2", "sample_steps=2", "inversion_steps=2",
                      "inversion_batch=1", extra=("--random-init",))
    report = record["method_report"]
    assert record["timing_only"] and report["source"]["weights"].startswith("random-init:tiny")
    assert report["cost"]["inversion"]["items"] == 2  # one v* per support image (2 episodes, 2 supports)
    assert report["cost"]["generation"]["items"] == 4
    assert "mask_quality" in report and report["mask_quality"] == {}  # SD gives no true masks


def test_textual_inversion_with_a_source_that_cannot_take_it_is_refused(cli, tmp_path, demo_reader):
    result = cli("eval", "--method", "aligndiff+protonet", "--protocol", "demo-1shot", "--episodes", "1",
                 "--out", str(tmp_path), "--option", "source=demo", "--random-init")
    assert result.code == 2 and "textual_inversion=false" in result.stderr


def test_gfss_path_gives_novel_class_samples_with_masks_through_the_store(demo_reader, tmp_path):
    from fssbench.adapters.aligndiff.gfss import novel_class_samples
    from fssbench.adapters.synthesis.store import SyntheticStore
    from fssbench.harness.contract import GfssLabelSpace, GfssSupportSet

    labels = GfssLabelSpace(base=[0, 1], novel=[12], names=["background", "brick", "grass", "cell"])
    support_labels = torch.zeros(1, 64, 64, dtype=torch.long)
    support_labels[0, 10:40, 10:40] = 3
    supports = GfssSupportSet(torch.rand(1, 3, 64, 64), support_labels, [12])
    store = SyntheticStore(tmp_path)
    samples = novel_class_samples(labels, supports, demo_reader.class_names, n_samples=2, size=64,
                                  options={"source": "demo", "textual_inversion": False}, store=store)
    assert [s.label for s in samples] == [3, 3]
    assert samples[0].image.shape == (3, 64, 64) and samples[0].labels.shape == (64, 64)
    assert set(samples[0].labels.unique().tolist()) <= {0, 3} and (samples[0].labels == 3).any()
    assert store.counts.made == 2
    novel_class_samples(labels, supports, demo_reader.class_names, n_samples=2, size=64,
                        options={"source": "demo", "textual_inversion": False}, store=store)
    assert store.counts.made == 2 and store.counts.hits == 2
