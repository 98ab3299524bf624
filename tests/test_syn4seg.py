"""Syn4Seg assembled: the pseudo-label stages switch as the options say (stub learner, known answers), the
final head starts from the base head and is cached, bad input names what is missing, and the tiny
pipeline runs end to end through the CLI (tiny learner trained here, demo source, tiny SAM), a second
run generating, labelling and training nothing."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fssbench.adapters.gfss_learner.checkpoint import save_checkpoint
from fssbench.adapters.gfss_learner.config import DEFAULT
from fssbench.adapters.gfss_learner.model import GfssHead
from fssbench.adapters.syn4seg.adapter import SYN4SEG_OPTIONS, Syn4SegAdapter
from fssbench.adapters.syn4seg.labels import PseudoLabeller
from fssbench.adapters.syn4seg.refine import FREE
from fssbench.adapters.syn4seg.synthesis import SyntheticImage, SyntheticImages
from fssbench.adapters.synthesis.cost import SynthesisCost
from fssbench.adapters.synthesis.quality import MaskQuality
from fssbench.adapters.synthesis.store import SyntheticStore
from fssbench.harness.contract import GfssLabelSpace, GfssSupportSet, SetupContext
from fssbench.harness.errors import UsageError
from fssbench.harness.image_sources import Sample, SourceSettings

TINY = replace(DEFAULT, name="tiny", image_size=64, hidden=16, embedding=8, batch_size=2, steps=4,
               checkpoint_every=4, learning_rate=1e-2)
FOLDS = (0, 1, 2, 3)
BASE = list(range(4, 16))
SPACE = GfssLabelSpace([5], [0], ["background", "base", "novel"])  # label indices: 0, 1 base, 2 novel


def stub_labeller(tmp_path, options, raw, features):
    """A PseudoLabeller whose learner predicts `raw` and whose embedding is `features` (both at 8x8), and
    whose support (novel label 2 on its left half) has the prototype [1, 0]."""
    support_labels = torch.zeros(1, 8, 8, dtype=torch.long)
    support_labels[0, :, :4] = 2
    support_features = torch.zeros(1, 2, 8, 8)
    support_features[0, 0] = 1.0  # every support pixel [1, 0]: prototype [1, 0]

    def embed(images):
        return support_features if images.shape[-1] == 9 else features[None]

    supports = GfssSupportSet(torch.zeros(1, 3, 8, 9), support_labels, [0])
    return PseudoLabeller({**SYN4SEG_OPTIONS, **options}, SPACE, supports, embed, lambda images: raw[None],
                          None, {"test": str(tmp_path)}, SyntheticStore(tmp_path / "store"), SynthesisCost(),
                          MaskQuality())


def spurious_case():
    """Raw mask: a novel region whose features match the prototype (left) and a spurious one (right)."""
    raw = torch.zeros(8, 8, dtype=torch.long)
    raw[:, :2] = 2
    raw[:, 6:] = 2
    features = torch.zeros(2, 8, 8)
    features[0, :, :4] = 1.0  # left: [1, 0], the prototype
    features[1, :, 4:] = 1.0  # right: [0, 1], orthogonal
    truth = np.zeros((8, 8), dtype=bool)
    truth[:, :4] = True
    image = SyntheticImage(0, "key", "sha", Sample(np.zeros((8, 8, 3), dtype=np.uint8), truth=truth))
    return raw, features, image


def test_apf_off_leaves_the_raw_labels_and_apf_on_frees_the_spurious_region(tmp_path):
    raw, features, image = spurious_case()
    off = stub_labeller(tmp_path / "off", {"apf": False, "apr": False, "sabr": False}, raw, features)
    masks = off.stage_masks(image)
    assert list(masks) == ["raw"]
    torch.testing.assert_close(masks["raw"], raw, rtol=0, atol=0)
    on = stub_labeller(tmp_path / "on", {"apr": False, "sabr": False}, raw, features)
    masks = on.stage_masks(image)
    expected = raw.clone()
    expected[:, 6:] = FREE
    assert list(masks) == ["raw", "apf"]
    torch.testing.assert_close(masks["apf"], expected, rtol=0, atol=0)
    # quality against the truth (left half): raw IoU 16/48, after APF 16/32
    assert on.quality.miou("raw") == pytest.approx(100 * 16 / 48) and on.quality.miou("apf") == pytest.approx(50.0)
    assert on.free_fraction["apf"] == [16, 64]


def test_apr_relabels_the_freed_pixels_near_the_prototype_and_stages_are_cached(tmp_path):
    raw, features, image = spurious_case()
    features[:, :, 6] = torch.tensor([0.8, 0.6])[:, None]  # cosine 0.8 to the prototype [1, 0]
    features[:, :, 7] = torch.tensor([-0.6, 0.8])[:, None]  # cosine -0.6; the region's mean: about 0.14
    options = {"sabr": False, "apr_candidates": "novel"}
    labeller = stub_labeller(tmp_path, options, raw, features)
    masks = labeller.stage_masks(image)
    expected = raw.clone()
    expected[:, 6:] = FREE
    torch.testing.assert_close(masks["apf"], expected, rtol=0, atol=0)
    expected[:, 6] = 2  # adaptive prototype 0.7 [1, 0] + 0.3 [1, 0] (M1's novel pixels): column 6 only
    torch.testing.assert_close(masks["apr"], expected, rtol=0, atol=0)
    again = stub_labeller(tmp_path, options, raw * 0, features)
    cached = again.stage_masks(image)  # same key: read from the store, the (changed) learner is not asked
    torch.testing.assert_close(cached["apr"], masks["apr"], rtol=0, atol=0)
    assert again.store.counts.hits == 1 and again.store.counts.made == 0


def tiny_head_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    head = GfssHead(40 + 112 + 320, len(BASE) + 1, TINY)
    save_checkpoint(path, {"config": TINY.to_dict(), "backbone": "efficientnet-lite0", "fold": 0, "base": BASE,
                           "classes": BASE, "step": 0, "head": head.state_dict()})
    return path


def setup_context(weights, reader=None, random_init=False):
    return SetupContext(torch.device("cpu"), weights, random_init, 1, 417, 0,
                        ["brick", "grass", "gravel", "coffee"] + [str(c) for c in BASE], reader=reader, folds=FOLDS)


def test_missing_weights_and_empty_prompt_files_are_errors_naming_them(demo_reader, tmp_path):
    head = tiny_head_checkpoint(tmp_path / "fold0.pt")
    with pytest.raises(UsageError, match="--weights sam=sam_vit_h_4b8939.pth"):
        Syn4SegAdapter({"source": "demo"}).setup(setup_context({"head": head}, demo_reader))
    with pytest.raises(UsageError, match="needs --weights sd=DIR"):
        Syn4SegAdapter({"sabr": False}).setup(setup_context({"head": head}, demo_reader))
    with pytest.raises(UsageError, match="dedup=on needs the Stable Diffusion text encoder: pass --weights sd=DIR"):
        Syn4SegAdapter({"sabr": False, "source": "demo", "dedup": "on"}).setup(
            setup_context({"head": head}, demo_reader))
    empty = tmp_path / "prompts.txt"
    empty.write_text("# nothing yet\n\n")
    with pytest.raises(UsageError, match=f"prompt file {empty} holds no prompt"):
        Syn4SegAdapter({"sabr": False, "source": "demo"}).setup(setup_context({"head": head, "prompts": empty},
                                                                                demo_reader))
    with pytest.raises(UsageError, match="needs the run's dataset reader"):
        Syn4SegAdapter({"sabr": False, "source": "demo"}).setup(setup_context({"head": head}))
    with pytest.raises(UsageError, match="--option ratio=1.0: must be in"):
        Syn4SegAdapter({"ratio": 1.0}).setup(setup_context({"head": head}, demo_reader))
    # the learner alone needs neither the reader nor any synthesis weights
    Syn4SegAdapter({"synthetic": False}).setup(setup_context({"head": head}))


def test_a_class_without_synthetic_images_is_an_error_naming_it(tmp_path):
    images = tmp_path / "generated"
    (images / "brick").mkdir(parents=True)
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(images / "brick" / "0.png")
    (images / "grass").mkdir()
    options = {**SYN4SEG_OPTIONS, "source": "folder", "n_per_class": 1}
    settings = SourceSettings(torch.device("cpu"), {"images": images}, False, ["brick", "grass", "gravel"])
    synthetic = SyntheticImages(options, settings, SyntheticStore(tmp_path / "store"), SynthesisCost())
    assert len(synthetic.images(0, "brick")) == 1
    with pytest.raises(UsageError, match="grass.* holds 0 images"):
        synthetic.images(1, "grass")
    with pytest.raises(UsageError, match="class 'gravel' has no folder"):
        synthetic.images(2, "gravel")
    with pytest.raises(UsageError, match="n_per_class=0"):
        SyntheticImages({**options, "n_per_class": 0}, settings, SyntheticStore(tmp_path / "store"), SynthesisCost())


def test_prompt_banks_without_an_encoder_take_the_first_templates_and_class_name_prompts_repeat(tmp_path):
    settings = SourceSettings(torch.device("cpu"), {}, False, ["brick"])
    options = {**SYN4SEG_OPTIONS, "source": "demo", "n_per_class": 3}
    hdig = SyntheticImages(options, settings, SyntheticStore(tmp_path), SynthesisCost())
    from fssbench.adapters.syn4seg.prompts import template_prompts

    assert hdig.bank(0, "brick") == template_prompts("brick", seed=0)[:3]
    assert "no SD text encoder" in hdig.prompt_source()["dedup"]
    plain = SyntheticImages({**options, "prompts": "class-name"}, settings, SyntheticStore(tmp_path), SynthesisCost())
    assert plain.bank(0, "brick") == ["a photo of a brick"] * 3


@pytest.mark.slow
def test_the_tiny_pipeline_runs_through_the_cli_and_a_second_run_reuses_everything(cli, demo_reader, tmp_path):
    from fssbench.adapters.gfss_learner.training import train_gfss_learner

    head = train_gfss_learner(demo_reader, 0, list(FOLDS), "efficientnet-lite0", tmp_path / "fold0.pt", TINY,
                              steps=2, device="cpu")
    args = ["eval", "--method", "syn4seg", "--protocol", "gfss-demo-1shot", "--fold", "0", "--episodes", "1",
            "--threads", "1", "--device", "cpu", "--weights", f"head={head}", "--option", "source=demo",
            "--option", "sam=tiny", "--option", "n_per_class=1", "--option", "train_steps=2",
            "--out", str(tmp_path / "results")]
    first = cli(*args)
    assert first.code == 0, first.stderr
    second = cli(*args, "--no-resume")
    assert second.code == 0, second.stderr
    records = [json.loads(path.read_text()) for path in sorted((tmp_path / "results" / "runs").glob("*.json"))]
    made, again = (record["method_report"] for record in records)
    assert made["synthetic_images"] == again["synthetic_images"] == 4  # 1 per novel class of fold 0
    assert made["stages"] == ["raw", "apf", "apr", "sabr"]
    assert set(made["pseudo_label_miou"]) == {"raw", "apf", "apr", "sabr"}
    assert made["pseudo_labels_scored"]["raw"] == 20  # 5 runs x 4 images
    assert made["heads"]["trained"] == 5 and made["store"]["made"] == 4 + 20  # images, then labels per run
    assert made["cost_s"]["training"] > 0 and made["cost_s"]["refinement"] > 0
    assert again["heads"] == {**made["heads"], "trained": 0, "cached": 5}
    assert again["store"]["made"] == 0 and again["cost_s"] == {"synthesis": 0, "refinement": 0, "training": 0}
    assert again["pseudo_label_miou"] == made["pseudo_label_miou"]
    labelled = [[(fold["metrics"], fold["confusion"]) for fold in record["results"]] for record in records]
    assert labelled[0] == labelled[1]  # the cached heads label the queries alike
