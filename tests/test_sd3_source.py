"""The `sd3` image source (Stable Diffusion 3.x): seeded per sample on a tiny random model, its identity,
what it refuses (learned embeddings, missing or wrong folders), a saved tiny pipeline read back through
--weights sd=DIR giving the same image, Syn4Seg end to end through the CLI on it, and AlignDiff refusing it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fssbench import registry
from fssbench.harness.errors import UsageError
from fssbench.harness.image_sources import Prompt, SampleRequest, SourceSettings
from fssbench.harness.weights import sha256_of_path

CPU = torch.device("cpu")
PROMPT = Prompt("a photo of a {} cell", "cell")
TINY = {"sd_config": "tiny", "steps": 2, "cfg": 4.0, "seed": 3}


def open_sd3(weights=None, random_init=False, **given):
    return registry.sources.get("sd3").open(SourceSettings(CPU, weights or {}, random_init, ["cell"], given))


@pytest.fixture(scope="module")
def tiny():
    return open_sd3(random_init=True, **TINY)


def test_the_tiny_source_is_seeded_per_sample(tiny):
    first = tiny.generate(SampleRequest(1, "cell", 0, PROMPT))
    assert first.image.shape == (64, 64, 3) and first.image.dtype.name == "uint8"
    assert first.coarse is None and first.truth is None  # SD3 gives no coarse mask
    again = tiny.generate(SampleRequest(1, "cell", 0, PROMPT))
    assert (again.image == first.image).all()  # the same seed: the same image, bit for bit
    other = tiny.generate(SampleRequest(1, "cell", 1, PROMPT))
    assert (other.image != first.image).mean() > 0.5


def test_identity_holds_the_settings(tiny):
    assert tiny.identity() == {"name": "sd3", "weights": "random-init:tiny:seed3",
                               "scheduler": "FlowMatchEulerDiscreteScheduler", "cfg": 4.0, "steps": 2,
                               "resolution": 64, "t5": False, "dtype": "float32"}
    source = registry.sources.get("sd3")
    assert source.description.startswith("Stable Diffusion 3.x")
    assert not source.gives_coarse_masks and not source.takes_embeddings


def test_a_learned_embedding_or_no_prompt_is_refused(tiny):
    with pytest.raises(UsageError, match="cannot condition on a learned embedding.*SD 1.x/2.x"):
        tiny.generate(SampleRequest(1, "cell", 0, Prompt("a photo of a {} cell", "cell", torch.zeros(32))))
    with pytest.raises(UsageError, match="from a text prompt"):
        tiny.generate(SampleRequest(1, "cell", 0))


def write_index(folder: Path, class_name: str, parts: tuple[str, ...], **extra) -> Path:
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name, **extra}))
    for part in parts:
        (folder / part).mkdir()
    return folder


def test_missing_or_wrong_folders_name_the_layout_or_the_other_source(tmp_path):
    with pytest.raises(UsageError, match="no such folder; expected a Stable Diffusion 3.x folder.*text_encoder_2/"):
        open_sd3({"sd": tmp_path / "absent"})
    with pytest.raises(UsageError, match="needs --weights sd=DIR"):
        open_sd3()
    sd3 = write_index(tmp_path / "sd3", "StableDiffusion3Pipeline",
                      ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"))
    with pytest.raises(UsageError, match=r"lacks transformer; expected .*transformer/"):
        open_sd3({"sd": sd3})
    (sd3 / "transformer").mkdir()
    (sd3 / "text_encoder_3").mkdir()
    with pytest.raises(UsageError, match="tokenizer_3/ is missing"):
        open_sd3({"sd": sd3})
    sd2 = write_index(tmp_path / "sd2", "StableDiffusionPipeline",
                      ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
                      unet=["diffusers", "UNet2DConditionModel"])
    with pytest.raises(UsageError, match=r"Stable Diffusion 1.x/2.x pipeline .*--option source=diffusers"):
        open_sd3({"sd": sd2})
    with pytest.raises(UsageError, match=r"StableDiffusion3Pipeline: use the sd3 image source .*--option source=sd3"):
        registry.sources.get("diffusers").open(SourceSettings(CPU, {"sd": sd3}, False, ["cell"], {}))


def test_settings_it_cannot_honour_are_refused():
    with pytest.raises(UsageError, match="sd_config=tiny.*sd3_timing"):
        open_sd3(random_init=True, sd_config="full")
    with pytest.raises(UsageError, match="dtype=bfloat16 needs a CUDA device"):
        open_sd3(random_init=True, dtype="bfloat16")
    with pytest.raises(UsageError, match="t5=on with --random-init"):
        open_sd3(random_init=True, t5="on")
    # the tiny model: VAE scale 2 x patch 2 = 4 pixels per token, 32 positions of its position embedding
    with pytest.raises(UsageError, match="resolution 70: the sd3 source needs a multiple of 4 up to 128"):
        open_sd3(random_init=True, resolution=70)
    with pytest.raises(UsageError, match="resolution 132: the sd3 source needs a multiple of 4 up to 128"):
        open_sd3(random_init=True, resolution=132)


def test_a_saved_tiny_pipeline_loads_offline_through_weights_and_gives_the_same_image(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "sd3-tiny"
    tiny.pipeline.save_pretrained(folder)
    loaded = open_sd3({"sd": folder}, steps=2, cfg=4.0)
    assert loaded.identity() == {**tiny.identity(), "weights": sha256_of_path(folder)}
    request = SampleRequest(1, "cell", 5, PROMPT)
    # the same fp32 weights and operations: equal up to one grey level of the final rounding
    torch.testing.assert_close(torch.from_numpy(loaded.generate(request).image).int(),
                               torch.from_numpy(tiny.generate(request).image).int(), rtol=0, atol=1)
    with pytest.raises(UsageError, match="t5=on but .* lacks text_encoder_3 and tokenizer_3"):
        open_sd3({"sd": folder}, t5="on")
    from fssbench.adapters.syn4seg.prompts import sd_text_encoder

    # one folder serves both: Syn4Seg's prompt deduplication reads its two CLIP encoders' pooled projections
    assert sd_text_encoder(folder)(["a photo of a cell", "a cell"]).shape == (2, 32 + 32)


@pytest.mark.slow
def test_syn4seg_runs_end_to_end_through_the_cli_on_the_tiny_sd3(cli, demo_reader, tmp_path):
    args = ["eval", "--method", "syn4seg", "--protocol", "gfss-demo-1shot", "--fold", "0", "--episodes", "1",
            "--threads", "1", "--device", "cpu", "--random-init", "--option", "source=sd3",
            "--option", "sd_config=tiny", "--option", "resolution=0", "--option", "sample_steps=2",
            "--option", "sam=tiny", "--option", "n_per_class=1", "--option", "train_steps=2",
            "--out", str(tmp_path / "results")]
    result = cli(*args)
    assert result.code == 0, result.stderr
    record = json.loads(next((tmp_path / "results" / "runs").glob("*.json")).read_text())
    report = record["method_report"]
    assert report["source"] == {"name": "sd3", "weights": f"random-init:tiny:seed{record['seed']}",
                                "scheduler": "FlowMatchEulerDiscreteScheduler", "cfg": 5.0, "steps": 2,
                                "resolution": 64, "t5": False, "dtype": "float32"}
    assert report["synthetic_images"] == 4  # 1 per novel class of fold 0
    assert report["pseudo_label_miou"] == {}  # SD3 gives no true masks to score against


def test_aligndiff_refuses_the_sd3_source_before_any_work(cli, tmp_path, demo_reader):
    result = cli("eval", "--method", "aligndiff+protonet", "--protocol", "demo-1shot", "--episodes", "1",
                 "--out", str(tmp_path), "--option", "source=sd3", "--option", "textual_inversion=false",
                 "--random-init")
    assert result.code == 2
    assert "the sd3 image source gives no coarse masks" in result.stderr and "source=diffusers" in result.stderr


def test_the_timing_configs_fit_together_and_the_timing_runs_on_small_widths(monkeypatch):
    from fssbench.adapters.synthesis import sd3_timing as timing

    large = timing.SD35_LARGE_TRANSFORMER
    assert large["num_attention_heads"] * large["attention_head_dim"] == large["caption_projection_dim"] == 2432
    assert large["pooled_projection_dim"] == timing.CLIP_L["projection_dim"] + timing.CLIP_G["projection_dim"]
    assert large["joint_attention_dim"] == timing.T5_XXL["d_model"]
    clip = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, projection_dim=32)
    small = [(timing.SD35_LARGE_TRANSFORMER, dict(num_attention_heads=2, caption_projection_dim=128,
                                                  joint_attention_dim=64, pooled_projection_dim=64)),
             (timing.CLIP_L, clip), (timing.CLIP_G, clip),
             (timing.T5_XXL, dict(d_model=64, d_ff=128, num_heads=2, d_kv=32)),
             (timing.SD3_VAE, dict(block_out_channels=[32, 32, 32, 32]))]
    for config, values in small:
        for key, value in values.items():
            monkeypatch.setitem(config, key, value)
    report = timing.measure([64], steps=40)
    part = report["resolutions"]["64"]
    assert part["per_step_s"] == pytest.approx(part["transformer_1_block_s"] + 37 * part["per_block_s"])
    assert part["per_image_s"] == pytest.approx(40 * part["per_step_s"] + part["vae_decode_s"]
                                                + sum(report["text_encoders"][k] for k in ("clip_l_s", "clip_g_s",
                                                                                           "t5_xxl_s")))
