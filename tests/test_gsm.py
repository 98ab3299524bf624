"""GSM: its modules on hand-built inputs, its switches on protonet and on tiny affinity-sam, and its CLI runs."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from fssbench.harness.contract import EpisodeBatch, SetupContext
from fssbench.adapters.affinity import Affinity
from fssbench.adapters.affinity_sam import AffinitySamAdapter
from fssbench.adapters.gsm import (GSM_OPTION_DEFAULTS, GsmAffinitySamAdapter, GsmProtoNetAdapter, edge_regions,
                                   proxy_masks, qsm_mask, region_affinity, representative_weights,
                                   spatial_kernel, spectral_clustering)
from fssbench.adapters.protonet import ProtoNetAdapter
from fssbench.harness.errors import UsageError

OFF = {"tsr": False, "qsm": False, "rr": False}


@pytest.fixture(autouse=True)
def inference():
    with torch.inference_mode():  # as the harness calls predict
        yield


def episode_batch(batch: int, shot: int, size: int = 64, seed: int = 0) -> EpisodeBatch:
    """Random images whose supports and query hold a bright square 'object' on noise."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, shot + 1, 3, size, size, generator=g) * 0.5
    masks = torch.zeros(batch, shot + 1, size, size)
    for item in range(batch):
        for image in range(shot + 1):
            top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
            masks[item, image, top:top + size // 2, left:left + size // 2] = 1
    images = images + 0.5 * masks[:, :, None]
    return EpisodeBatch([], images[:, 0], images[:, 1:], masks[:, 1:], torch.ones_like(masks[:, 1:]), "mask",
                        ["square"] * batch)


@pytest.fixture(scope="module")
def protonet():
    adapter = ProtoNetAdapter()
    adapter.setup(SetupContext(torch.device("cpu"), {}, False, 1, 64, 0, []))
    return adapter


@pytest.fixture(scope="module")
def tiny_affinity_sam():
    adapter = AffinitySamAdapter({"config": "tiny"})
    adapter.setup(SetupContext(torch.device("cpu"), {}, True, 1, 64, 0, []))
    return adapter


def boosting(adapter_class, base, options=None):
    """A GSM adapter with `options` around an already set-up base method."""
    gsm = adapter_class(options)
    gsm.base = base
    return gsm


# QSM's pieces


def test_spatial_kernel_is_a_gaussian_of_grid_distance():
    kernel = spatial_kernel((1, 3), sigma=1.0, device=torch.device("cpu"))
    assert kernel[0, 0] == 1
    assert kernel[0, 1].item() == pytest.approx(math.exp(-0.5))
    assert kernel[0, 2].item() == pytest.approx(math.exp(-2.0))
    torch.testing.assert_close(kernel, kernel.T, rtol=0, atol=0)


def test_edge_regions_are_the_components_between_edges():
    open_cells = torch.ones(1, 5, 5, dtype=torch.bool)
    open_cells[0, :, 2] = False  # a vertical edge splits left from right
    regions = edge_regions(open_cells).view(5, 5)
    assert regions[:, :2].unique().numel() == 1 and regions[:, 3:].unique().numel() == 1
    assert regions[0, 0] != regions[0, 4]
    assert regions.unique().tolist() == [0, 1]  # the edge cells joined a neighbouring region
    assert edge_regions(torch.zeros(2, 3, 3, dtype=torch.bool)).unique().tolist() == [0]


def test_region_affinity_is_the_mean_similarity_between_regions():
    similarity = torch.tensor([[1.0, 0.8, 0.2], [0.8, 1.0, 0.4], [0.2, 0.4, 1.0]])[None]
    broadcast = region_affinity(similarity, torch.tensor([[0, 0, 1]]))[0]
    within_first = (1.0 + 0.8 + 0.8 + 1.0) / 4
    between = (0.2 + 0.4) / 2
    expected = torch.tensor([[within_first, within_first, between], [within_first, within_first, between],
                             [between, between, 1.0]])
    assert torch.allclose(broadcast, expected)


def test_spectral_clustering_recovers_weakly_linked_blocks():
    blocks = torch.block_diag(*[torch.ones(4, 4)] * 3) + 0.01
    labels = spectral_clustering(blocks[None], 3, torch.tensor([0]))[0]
    assert [labels[i:i + 4].unique().numel() for i in (0, 4, 8)] == [1, 1, 1]
    assert labels[[0, 4, 8]].unique().numel() == 3


def test_qsm_recovers_two_clean_regions_despite_a_wrong_affinity_patch():
    g = torch.Generator().manual_seed(0)
    size = 16
    target = torch.zeros(size, size, dtype=torch.bool)
    target[:, :7] = True
    directions = torch.eye(8)
    features = (torch.where(target, directions[0].view(8, 1, 1), directions[1].view(8, 1, 1))
                + 0.2 * torch.rand(8, size, size, generator=g))
    image = F.interpolate(torch.where(target, 0.2, 0.8)[None, None], (64, 64))[0].expand(3, -1, -1)
    semantic = torch.where(target, 0.3, -0.3) + 0.4 * (torch.rand(size, size, generator=g) - 0.5)
    semantic[10:13, 10:13] = 0.5  # a confidently wrong background patch
    affinity = Affinity(positive=semantic[None], negative=torch.zeros(1, size, size))
    options = {**GSM_OPTION_DEFAULTS, "qsm_size": 16, "clusters": 4}
    torch.testing.assert_close(qsm_mask(features[None], image[None], affinity, options)[0], target, rtol=0, atol=0)


def test_proxy_masks_intersect_qsm_and_the_prediction():
    prediction = torch.tensor([[[0.9, 0.9, 0.1, 0.1]]])
    qsm = torch.tensor([[[True, False, True, False]]])
    positive, negative = proxy_masks(prediction, qsm)
    assert positive.tolist() == [[[True, False, False, False]]]
    assert negative.tolist() == [[[False, False, False, True]]]
    positive, negative = proxy_masks(prediction, None)
    assert positive.tolist() == [[[True, True, False, False]]] and negative.tolist() == (~positive).tolist()


# RR


def test_rr_gives_the_outlier_reference_the_smallest_weight():
    g = torch.Generator().manual_seed(0)
    common = torch.randn(16, generator=g)
    prototypes = torch.stack([common + 0.3 * torch.randn(16, generator=g) for _ in range(4)]
                             + [torch.randn(16, generator=g)])[None]
    weights = representative_weights(prototypes, torch.ones(1, 5, dtype=torch.bool))[0]
    assert weights.argmin() == 4
    assert weights.sum().item() == pytest.approx(1.0)


def test_rr_cannot_prefer_either_of_two_references():
    prototypes = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])
    assert torch.allclose(representative_weights(prototypes, torch.ones(1, 2, dtype=torch.bool)),
                          torch.tensor([[0.5, 0.5]]))


def test_rr_leaves_out_references_without_pixels():
    prototypes = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    weights = representative_weights(prototypes, torch.tensor([[True, False, False]]))
    assert weights.tolist() == [[1.0, 0.0, 0.0]]


# The switches


@pytest.mark.parametrize("shot", [1, 3])
def test_all_modules_off_gives_exactly_protonet(protonet, shot):
    gsm = boosting(GsmProtoNetAdapter, protonet, OFF)
    batch = episode_batch(2, shot)
    torch.testing.assert_close(gsm.predict(batch), gsm.base.predict(batch), rtol=0, atol=0)


def test_all_modules_off_gives_exactly_affinity_sam(tiny_affinity_sam):
    gsm = boosting(GsmAffinitySamAdapter, tiny_affinity_sam, {**OFF, "config": "tiny"})
    batch = episode_batch(1, 2)
    torch.testing.assert_close(gsm.predict(batch), gsm.base.predict(batch), rtol=0, atol=0)


def test_rr_alone_changes_nothing_in_one_shot(protonet):
    gsm = boosting(GsmProtoNetAdapter, protonet, {**OFF, "rr": True})
    batch = episode_batch(2, 1)
    trace = gsm.boost(batch)
    assert trace.foreground_weights.tolist() == [[1.0], [1.0]]
    torch.testing.assert_close(trace.prediction, trace.first_prediction, rtol=0, atol=0)


def test_tsr_without_qsm_uses_the_first_prediction_as_proxy(protonet):
    trace = boosting(GsmProtoNetAdapter, protonet, {"qsm": False, "rr": False}).boost(episode_batch(2, 3))
    torch.testing.assert_close(trace.proxy_foreground, trace.first_prediction > 0.5, rtol=0, atol=0)
    torch.testing.assert_close(trace.proxy_background, ~trace.proxy_foreground, rtol=0, atol=0)
    assert torch.allclose(trace.foreground_weights, torch.full((2, 4), 0.25))


def test_qsm_only_narrows_the_proxy_mask(protonet):
    batch = episode_batch(2, 3)
    without = boosting(GsmProtoNetAdapter, protonet, {"qsm": False, "rr": False}).boost(batch)
    with_qsm = boosting(GsmProtoNetAdapter, protonet, {"rr": False}).boost(batch)
    torch.testing.assert_close(with_qsm.first_prediction, without.first_prediction, rtol=0, atol=0)
    torch.testing.assert_close(with_qsm.foreground_weights, without.foreground_weights, rtol=0, atol=0)
    assert not (with_qsm.proxy_foreground & ~without.proxy_foreground).any()
    assert not (with_qsm.proxy_background & ~without.proxy_background).any()
    assert (with_qsm.proxy_foreground != without.proxy_foreground).any()


def test_rr_only_changes_the_reference_weights(protonet):
    batch = episode_batch(2, 3)
    uniform = boosting(GsmProtoNetAdapter, protonet, {"rr": False}).boost(batch)
    weighted = boosting(GsmProtoNetAdapter, protonet).boost(batch)
    torch.testing.assert_close(weighted.proxy_foreground, uniform.proxy_foreground, rtol=0, atol=0)
    torch.testing.assert_close(weighted.proxy_background, uniform.proxy_background, rtol=0, atol=0)
    assert torch.allclose(uniform.foreground_weights, torch.full((2, 4), 0.25))
    assert not torch.allclose(weighted.foreground_weights, uniform.foreground_weights)
    assert torch.allclose(weighted.foreground_weights.sum(dim=1), torch.ones(2))


def test_qsm_without_tsr_is_refused():
    with pytest.raises(UsageError, match="qsm=false"):
        GsmProtoNetAdapter({"tsr": False})


def test_gsm_adapters_declare_their_base_and_gsm_options():
    assert {"tsr", "qsm", "rr", "clusters", "sigma", "edge_quantile", "qsm_size"} <= set(
        GsmProtoNetAdapter.option_defaults)
    assert GsmAffinitySamAdapter.option_defaults["config"] == "full"
    assert [spec.name for spec in GsmAffinitySamAdapter.weights] == ["dinov2", "sam"]
    assert GsmProtoNetAdapter().backbone == "efficientnet-lite0"


@pytest.mark.slow
def test_gsm_protonet_with_modules_off_scores_as_protonet_on_the_demo(cli, tmp_path):
    def miou(*args):
        result = cli("eval", *args, "-p", "demo-1shot", "--fold", "0", "--episodes", "2", "--json",
                     "--out", str(tmp_path))
        assert result.code == 0, result.stderr
        return json.loads(result.stdout)

    base = miou("-m", "protonet")
    off = miou("-m", "gsm+protonet", "--option", "tsr=off", "--option", "qsm=off", "--option", "rr=off")
    assert off["results"][0]["metrics"]["miou"] == base["results"][0]["metrics"]["miou"]
    assert off["options"]["tsr"] is False
