"""Weak support annotations: box (PANet rule), seeded scribbles, image-only and text."""

import json

import pytest
import torch

from fssbench.harness.supports import annotate


def test_box_is_the_largest_instance_box_and_background_lies_outside_every_box():
    instances = torch.zeros(8, 10, dtype=torch.int16)
    instances[1:5, 1:6] = 1  # large instance of the class (4x5)
    instances[6:8, 7:9] = 2  # small instance of the class (2x2)
    instances[0:2, 8:10] = 3  # an instance of another class
    foreground = (instances == 1) | (instances == 2)
    foreground[1, 1] = False  # the box is the tight box of the instance, not of its first row
    mask, labelled = annotate("box", foreground, instances, (0,))
    expected_mask = torch.zeros(8, 10, dtype=torch.bool)
    expected_mask[1:5, 1:6] = True
    torch.testing.assert_close(mask, expected_mask, rtol=0, atol=0)
    torch.testing.assert_close(labelled, expected_mask | ~((instances == 2) | expected_mask), rtol=0, atol=0)
    assert not labelled[6:8, 7:9].any() and labelled[0:2, 8:10].all()  # other instance's box is background


def blob() -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(120), torch.arange(160), indexing="ij")
    return ((y - 60) ** 2 / 40**2 + (x - 70) ** 2 / 55**2) < 1


def test_scribbles_are_seeded_inside_their_regions_and_leave_most_pixels_unlabelled():
    foreground = blob()
    mask, labelled = annotate("scribble", foreground, None, (0, 0, 3, 0))
    again = annotate("scribble", foreground, None, (0, 0, 3, 0))
    other = annotate("scribble", foreground, None, (0, 0, 3, 1))
    torch.testing.assert_close((mask, labelled), again, rtol=0, atol=0)
    assert (labelled != other[1]).any()
    assert mask.any() and not (mask & ~foreground).any()  # the foreground stroke stays on the object
    background_stroke = labelled & ~mask
    assert background_stroke.any() and not (background_stroke & foreground).any()
    assert labelled.float().mean() < 0.2


@pytest.mark.parametrize("kind", ["none", "text"])
def test_image_only_and_text_supports_label_nothing(kind):
    mask, labelled = annotate(kind, blob(), None, (0,))
    assert not mask.any() and not labelled.any()


def test_mask_supports_label_everything():
    mask, labelled = annotate("mask", blob(), None, (0,))
    torch.testing.assert_close(mask, blob(), rtol=0, atol=0)
    assert labelled.all()


@pytest.mark.parametrize("suffix", ["", "-box", "-scribble", "-nomask", "-text"])
def test_every_support_kind_runs_end_to_end_on_the_same_manifest(cli, tmp_path, suffix):
    result = cli("eval", "-m", "oracle", "-p", f"demo-1shot{suffix}", "--fold", "2", "--episodes", "12", "--json",
                 "--out", str(tmp_path))
    assert result.code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["support_annotation"] == {"": "mask", "-nomask": "none"}.get(suffix, suffix[1:])
    manifest = cli("episodes", "-p", "demo-1shot", "--fold", "2").stdout.splitlines()[:12]
    import hashlib
    assert record["results"][0]["manifest_sha256"] == hashlib.sha256("\n".join(manifest).encode()).hexdigest()


def test_protonet_takes_box_and_scribble_supports_and_refuses_image_only(cli, tmp_path):
    for suffix in ("-box", "-scribble"):
        result = cli("eval", "-m", "protonet", "-p", f"demo-1shot{suffix}", "--fold", "0", "--episodes", "3",
                     "--json", "--out", str(tmp_path))
        assert result.code == 0, result.stderr
    refused = cli("eval", "-m", "protonet", "-p", "demo-1shot-nomask", "--out", str(tmp_path))
    assert refused.code == 2 and "accepts: box, mask, scribble" in refused.stderr
