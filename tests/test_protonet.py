"""ProtoNet on real EfficientNet-Lite features, and the backbone wrapper it uses."""

import json

import pytest
import torch

from fssbench.adapters.backbones import EfficientNetLiteFeatures
from fssbench.adapters.protonet import masked_average, prototype_probabilities


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_backbone_taps_the_ends_of_the_stride_8_16_32_stages(variant):
    backbone = EfficientNetLiteFeatures(variant, random_init=True)
    features = backbone(torch.rand(1, 3, 128, 96))
    assert [tuple(f.shape[-2:]) for f in features] == [(16, 12), (8, 6), (4, 3)]
    assert [f.shape[1] for f in features] == backbone.channels


def test_pretrained_weights_load_from_the_installed_package():
    pretrained = EfficientNetLiteFeatures(0)
    random = EfficientNetLiteFeatures(0, random_init=True)
    assert (pretrained.stem[0].weight != random.stem[0].weight).any()


def test_masked_average_and_prototype_probabilities_by_hand():
    features = torch.zeros(1, 2, 2, 2)
    features[0, 0, 0, :] = 1  # top row points along channel 0
    features[0, 1, 1, :] = 1  # bottom row along channel 1
    mask = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    assert masked_average(features, mask).tolist() == [[1.0, 0.0]]
    assert masked_average(features, 1 - mask).tolist() == [[0.0, 1.0]]
    probability = prototype_probabilities(features, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    assert (probability[0, 0] > 0.99).all() and (probability[0, 1] < 0.01).all()


@pytest.mark.slow
def test_protonet_is_clearly_better_than_chance_on_the_demo(cli, tmp_path):
    result = cli("eval", "-m", "protonet", "-p", "demo-1shot", "--fold", "0", "--episodes", "24", "--json",
                 "--out", str(tmp_path))
    assert result.code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["backbone"] == "efficientnet-lite0"
    assert record["results"][0]["metrics"]["miou"] > 25  # predicting all foreground or all background stays below 20


def test_a_support_set_shared_by_the_batch_is_encoded_once_with_the_same_prediction():
    from fssbench.adapters.protonet import ProtoNetAdapter
    from fssbench.harness.contract import EpisodeBatch, SetupContext
    from fssbench.harness.episodes import Episode

    adapter = ProtoNetAdapter({}, "efficientnet-lite0")
    adapter.setup(SetupContext(device=torch.device("cpu"), weights={}, random_init=True, shot=2, resolution=64,
                               seed=0, class_names=["thing"]))
    generator = torch.Generator().manual_seed(0)
    queries, supports = torch.rand(3, 3, 64, 64, generator=generator), torch.rand(2, 3, 64, 64, generator=generator)
    masks = (torch.rand(2, 64, 64, generator=generator) > 0.5).float()

    def batch(support_images, support_masks):
        return EpisodeBatch(episodes=[Episode(i, 0, 0, f"q{i}", ("a", "b")) for i in range(3)], query_images=queries,
                            support_images=support_images, support_masks=support_masks,
                            support_labelled=torch.ones(3, 2, 64, 64), support_annotation="mask",
                            class_names=["thing"] * 3)

    encoded = []
    forward = adapter.features.forward
    adapter.features.forward = lambda images: encoded.append(len(images)) or forward(images)
    shared = adapter.predict(batch(supports[None].expand(3, -1, -1, -1, -1), masks[None].expand(3, -1, -1, -1)))
    copied = adapter.predict(batch(supports[None].repeat(3, 1, 1, 1, 1), masks[None].repeat(3, 1, 1, 1)))
    assert encoded == [3 + 2, 3 + 3 * 2]
    torch.testing.assert_close(shared, copied, rtol=1e-5, atol=1e-5)
