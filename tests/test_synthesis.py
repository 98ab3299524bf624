"""The synthesis layer: the store (content-addressed, hash-checked, corrupt entries regenerated), the
image-source registry and its three sources (demo, folder, diffusers with a tiny random model), the
cross-attention coarse mask, and mask quality."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fssbench import registry
from fssbench.adapters.synthesis.quality import MaskQuality, mask_iou
from fssbench.adapters.synthesis.store import SyntheticStore, files_sample, sample_files
from fssbench.harness.errors import UsageError
from fssbench.harness.image_sources import Prompt, Sample, SampleRequest, SourceSettings, canonical_sha256, sample_key

CPU = torch.device("cpu")


def settings(**kwargs) -> SourceSettings:
    defaults = dict(device=CPU, weights={}, random_init=False, class_names=["cell", "brick"], settings={})
    return SourceSettings(**{**defaults, **kwargs})


def test_sources_are_a_registry_of_the_three_builtins():
    assert {"diffusers", "folder", "demo"} <= set(registry.sources.names())
    with pytest.raises(UsageError, match="Did you mean 'demo'"):
        registry.sources.get("dem")


def make_entry(value: int):
    sample = Sample(np.full((4, 5, 3), value, np.uint8), np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5),
                    np.eye(4, 5, dtype=bool))
    return lambda: (sample_files(sample), {"made": value})


def test_store_round_trip_and_a_second_read_makes_nothing(tmp_path):
    store = SyntheticStore(tmp_path)
    files = store.get_or_make({"a": 1}, make_entry(7))
    again = store.get_or_make({"a": 1}, make_entry(9))  # a hit: the maker is not called
    assert again == files and (store.counts.made, store.counts.hits) == (1, 1)
    sample = files_sample(again)
    assert (sample.image == 7).all() and sample.truth.tolist() == np.eye(4, 5, dtype=bool).tolist()
    torch.testing.assert_close(torch.from_numpy(sample.coarse), torch.linspace(0, 1, 20).view(4, 5),
                               atol=1 / 65535, rtol=0)  # 16-bit quantization of the score
    entry = json.loads((store.folder(canonical_sha256({"a": 1})) / "entry.json").read_text())
    assert entry["key"] == {"a": 1} and set(entry["files"]) == {"image.png", "coarse.png", "truth.png"}


def test_a_corrupt_sample_is_detected_by_its_hash_and_made_again(tmp_path):
    store = SyntheticStore(tmp_path)
    store.get_or_make({"a": 1}, make_entry(7))
    image = store.folder(canonical_sha256({"a": 1})) / "image.png"
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF
    image.write_bytes(bytes(data))
    with pytest.warns(Warning, match="image.png does not match its recorded sha256"):
        files = store.get_or_make({"a": 1}, make_entry(8))
    assert (files_sample(files).image == 8).all()
    assert (store.counts.corrupt, store.counts.made) == (1, 2)
    assert len(list(image.parent.parent.glob("*.corrupt-*"))) == 1  # moved aside, not deleted


def test_demo_source_makes_new_labelled_composites_never_the_evaluation_images(demo_reader):
    source = registry.sources.get("demo").open(settings())
    first = source.generate(SampleRequest(12, "cell", seed=0))
    assert first.image.dtype == np.uint8 and first.truth.any() and first.truth.shape == first.image.shape[:2]
    again = source.generate(SampleRequest(12, "cell", seed=0))
    assert (again.image == first.image).all()  # seeded per sample
    assert not (source.generate(SampleRequest(12, "cell", seed=1)).image.shape == first.image.shape and
                (source.generate(SampleRequest(12, "cell", seed=1)).image == first.image).all())
    from PIL import Image

    for path in (demo_reader.root / "images").glob("val_*.png"):
        val = np.asarray(Image.open(path))
        assert val.shape != first.image.shape or not (val == first.image).all()
    # the coarse mask is a degraded copy of the truth: it overlaps but is not it
    coarse = torch.from_numpy(first.coarse >= 0.4)
    iou = float(mask_iou(coarse, torch.from_numpy(first.truth)))
    assert 0.3 < iou < 0.99


def test_demo_source_refuses_classes_that_are_not_the_demos():
    with pytest.raises(UsageError, match="'aeroplane' is not one of them"):
        registry.sources.get("demo").open(settings(class_names=["aeroplane"]))


def test_folder_source_reads_images_with_masks_and_names_a_missing_class(tmp_path):
    from PIL import Image

    (tmp_path / "cell" / "masks").mkdir(parents=True)
    Image.fromarray(np.full((6, 8, 3), 200, np.uint8)).save(tmp_path / "cell" / "a.png")
    Image.fromarray(np.eye(6, 8, dtype=np.uint8) * 255).save(tmp_path / "cell" / "masks" / "a.png")
    source = registry.sources.get("folder").open(settings(weights={"images": tmp_path}))
    sample = source.generate(SampleRequest(12, "cell", seed=0))
    assert (sample.image == 200).all() and sample.truth.tolist() == np.eye(6, 8, dtype=bool).tolist()
    assert sample.coarse is None
    with pytest.raises(UsageError, match="class 'brick' has no folder .*brick"):
        source.generate(SampleRequest(0, "brick", seed=0))
    with pytest.raises(UsageError, match="holds 1 images; sample 1 was asked for"):
        source.generate(SampleRequest(12, "cell", seed=1))
    with pytest.raises(UsageError, match="needs --weights images=DIR"):
        registry.sources.get("folder").open(settings())


def test_a_missing_sd_folder_names_the_layout(tmp_path):
    source = registry.sources.get("diffusers")
    layout = "model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/"
    with pytest.raises(UsageError, match="no such folder.*" + layout):
        source.open(settings(weights={"sd": tmp_path / "nothing"}))
    (tmp_path / "sd" / "unet").mkdir(parents=True)
    with pytest.raises(UsageError, match="lacks model_index.json, vae, text_encoder, tokenizer, scheduler"):
        source.open(settings(weights={"sd": tmp_path / "sd"}))
    with pytest.raises(UsageError, match="needs --weights sd=DIR"):
        source.open(settings())


@pytest.fixture(scope="module")
def tiny_source():
    return registry.sources.get("diffusers").open(settings(random_init=True, settings={"sd_config": "tiny",
                                                                                     "steps": 2}))


def test_tiny_diffusers_source_is_seeded_per_sample_and_gives_a_coarse_mask(tiny_source):
    prompt = Prompt("a photo of a {} cell", "cell")
    first = tiny_source.generate(SampleRequest(12, "cell", seed=3, prompt=prompt))
    assert first.image.shape == (128, 128, 3) and first.coarse.shape == (128, 128)
    assert 0 <= first.coarse.min() and 0 < first.coarse.max() <= 1  # per class token normalised, then averaged
    again = tiny_source.generate(SampleRequest(12, "cell", seed=3, prompt=prompt))
    assert (again.image == first.image).all() and (again.coarse == first.coarse).all()
    with_v = tiny_source.generate(SampleRequest(12, "cell", seed=3, prompt=Prompt(
        "a photo of a {} cell", "cell", torch.randn(32, generator=torch.Generator().manual_seed(0)))))
    assert (with_v.image != first.image).any()  # v* conditions the generation
    keys = {canonical_sha256(sample_key(tiny_source, SampleRequest(12, "cell", seed=s, prompt=prompt))) for s in (0, 1)}
    assert len(keys) == 2


def test_the_coarse_mask_comes_from_the_class_tokens_cross_attention():
    from fssbench.adapters.synthesis.attention import AttentionRecorder, coarse_mask

    recorder = AttentionRecorder()
    recorder.start(grid=2)
    probabilities = torch.zeros(2, 2, 4, 3)  # [uncond + cond, heads, pixels, tokens]
    probabilities[1, 0, :, 1] = torch.tensor([0.0, 1.0, 2.0, 3.0])
    probabilities[1, 1, :, 1] = torch.tensor([0.0, 1.0, 2.0, 3.0])
    probabilities[0, :, :, 1] = 100  # the unconditional half is ignored
    recorder.add(probabilities)
    recorder.add(torch.zeros(2, 2, 9, 3))  # another grid: not recorded
    maps = recorder.maps()[0]
    torch.testing.assert_close(maps[1], torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    mask = coarse_mask(maps, [1], (2, 2))
    torch.testing.assert_close(mask, torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]))


def test_mask_quality_is_class_accumulated():
    quality = MaskQuality()
    truth = torch.tensor([[True, True], [False, False]])
    quality.update("coarse", 0, torch.tensor([[True, False], [False, False]]), truth)  # I 1, U 2
    quality.update("coarse", 0, truth, truth)  # I 2, U 2
    quality.update("coarse", 1, torch.zeros(2, 2, dtype=torch.bool), truth)  # I 0, U 2
    assert quality.miou("coarse") == pytest.approx(100 * (3 / 4 + 0) / 2)
    assert quality.summary()["coarse"] == {"miou": pytest.approx(37.5), "samples": 3, "classes": 2}
