"""DiffewS on tiny networks: KV fusion, the support branch, n-shot, the widened conv, seeding, and
weights in the authors' released layout. Nothing is downloaded."""

import copy
import json

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffusers.models.attention_processor import Attention, AttnProcessor2_0  # noqa: E402

from fssbench.harness.contract import EpisodeBatch, SetupContext  # noqa: E402
from fssbench.adapters.diffews import (  # noqa: E402
    AUTHORS_WEIGHTS,
    TINY_RESOLUTION,
    DiffewsAdapter,
    DiffewsModel,
    KVFusionAttnProcessor,
    SupportMemory,
    empty_prompt_embedding,
    load_text_encoder,
    per_query,
    random_model,
    render_masks,
    threshold_masks,
    widened_conv_in,
)
from fssbench.harness.errors import UsageError  # noqa: E402
from fssbench.harness.options import changed_options, describe_options, resolve_options  # noqa: E402


@pytest.fixture(scope="module")
def tiny() -> DiffewsModel:
    torch.manual_seed(0)
    return random_model("tiny")


def episode_inputs(episodes: int, shots: int, size: int = TINY_RESOLUTION, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    query = torch.rand(episodes, 3, size, size, generator=generator) * 2 - 1
    supports = torch.rand(episodes * shots, 3, size, size, generator=generator) * 2 - 1
    masks = render_masks((torch.rand(episodes * shots, size, size, generator=generator) > 0.5).float(), size)
    return query, supports, masks


def query_output(model: DiffewsModel, query, supports, masks) -> torch.Tensor:
    """The query branch's UNet output (before decoding and the uint8 rounding) given the supports."""
    with torch.inference_mode():
        model.record_supports(supports, masks)
        output = model.unet_step(model.encode(query))
        model.memory.clear()
    return output


def stock_unet(model: DiffewsModel):
    """The model's UNet with diffusers' own attention processors."""
    unet = copy.deepcopy(model.unet)
    unet.set_attn_processor(AttnProcessor2_0())
    return unet


def test_kv_fusion_with_no_supports_is_plain_self_attention_exactly():
    torch.manual_seed(0)
    attention = Attention(query_dim=32, heads=2, dim_head=16)
    hidden = torch.randn(3, 10, 32)
    plain = AttnProcessor2_0()(attention, hidden)
    torch.testing.assert_close(KVFusionAttnProcessor(SupportMemory(), "layer")(attention, hidden), plain, rtol=1e-5, atol=1e-6)


def test_kv_fusion_attends_over_query_and_support_tokens():
    torch.manual_seed(0)
    attention = Attention(query_dim=8, heads=1, dim_head=8)
    memory = SupportMemory()
    processor = KVFusionAttnProcessor(memory, "layer")
    query_states, support_states = torch.randn(1, 5, 8), torch.randn(2, 7, 8)  # 1 episode, 2 shots
    with memory.record():
        processor(attention, support_states)
    fused = processor(attention, query_states)

    keys = torch.cat([attention.to_k(query_states[0]), *attention.to_k(support_states)])
    values = torch.cat([attention.to_v(query_states[0]), *attention.to_v(support_states)])
    weights = (attention.to_q(query_states[0]) @ keys.T / 8 ** 0.5).softmax(dim=-1)
    assert torch.allclose(fused[0], attention.to_out[0](weights @ values), atol=1e-5)


def test_a_support_identical_to_the_query_leaves_self_attention_unchanged():
    torch.manual_seed(0)
    attention = Attention(query_dim=16, heads=2, dim_head=8)
    memory = SupportMemory()
    processor = KVFusionAttnProcessor(memory, "layer")
    hidden = torch.randn(2, 6, 16)
    plain = processor(attention, hidden)
    with memory.record():
        processor(attention, hidden)
    assert torch.allclose(processor(attention, hidden), plain, atol=1e-6)  # duplicated keys keep softmax weights


def test_unet_with_kv_fusion_and_no_supports_equals_the_stock_unet(tiny):
    latents = torch.randn(2, 4, 8, 8)
    with torch.inference_mode():
        expected = stock_unet(tiny)(latents, 1, tiny.empty_text.expand(2, -1, -1)).sample
        torch.testing.assert_close(tiny.unet_step(latents), expected, rtol=1e-5, atol=1e-5)


def test_support_branch_is_the_stock_unet_on_conv_in_ref_and_ignores_the_query(tiny):
    query, supports, masks = episode_inputs(1, 2)
    latents = torch.cat([tiny.encode(supports), tiny.encode(masks)], dim=1)
    reference = stock_unet(tiny)
    reference.conv_in = reference.conv_in_ref
    with torch.inference_mode():
        recorded = tiny.record_supports(supports, masks)
        banks = {layer: (key.clone(), value.clone()) for layer, (key, value) in tiny.memory.banks.items()}
        tiny.unet_step(tiny.encode(query))  # a query pass reads the banks and leaves them as they were
        torch.testing.assert_close({layer: tiny.memory.banks[layer][0] for layer in banks},
                                   {layer: key for layer, (key, _) in banks.items()}, rtol=0, atol=0)
        tiny.memory.clear()
        torch.testing.assert_close(recorded, reference(latents, 1, tiny.empty_text.expand(2, -1, -1)).sample, rtol=1e-5, atol=1e-5)
    assert tiny.unet.conv_in.in_channels == 4


def test_each_query_sees_only_its_own_episodes_supports(tiny):
    query, supports, masks = episode_inputs(2, 3)
    other_query, other_supports, _ = episode_inputs(2, 3, seed=2)
    first = query_output(tiny, query, supports, masks)
    changed = query_output(tiny, torch.stack([query[0], other_query[1]]), torch.cat([supports[:3], other_supports[3:]]),
                           masks)
    assert torch.allclose(first[0], changed[0], atol=1e-6) and not torch.allclose(first[1], changed[1])


def test_n_shot_banks_are_grouped_per_episode_and_support_order_does_not_matter(tiny):
    bank = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 2, 4, 3)  # 2 episodes x 3 shots, 4 tokens each
    grouped = per_query(bank, 2)
    assert grouped.shape == (2, 2, 12, 3)
    assert grouped[1, :, 4:8].unique().tolist() == [4.0]  # episode 1, shot 1 = flat support 4

    query, supports, masks = episode_inputs(2, 3)
    with torch.inference_mode():
        tiny.record_supports(supports, masks)
        assert {key.shape[0] for key, _ in tiny.memory.banks.values()} == {6}
        tiny.memory.clear()
        assert tiny(query, supports, masks).shape == (2, 3, TINY_RESOLUTION, TINY_RESOLUTION)
    reordered = [2, 0, 1, 5, 4, 3]
    assert torch.allclose(query_output(tiny, query, supports, masks),
                          query_output(tiny, query, supports[reordered], masks[reordered]), atol=1e-5)


def test_widened_conv_reproduces_the_four_channel_output_when_both_halves_match(tiny):
    latents = torch.randn(2, 4, 8, 8)
    conv_in = tiny.unet.conv_in
    for widened in (widened_conv_in(conv_in), tiny.unet.conv_in_ref):
        assert widened.weight.shape == (conv_in.out_channels, 8, 3, 3)
        assert torch.allclose(widened(torch.cat([latents, latents], dim=1)), conv_in(latents), atol=1e-6)


def test_relative_threshold_uses_the_maximum_over_all_channels_as_the_authors_do():
    images = torch.zeros(1, 3, 2, 2)
    images[0, :, 0, 0] = 0.4  # channel mean 0.4
    images[0, 0, 0, 1] = 1.0  # mean 1/3, but the maximum over channels is 1.0: cut = 0.25
    images[0, :, 1, 0] = 0.2  # mean 0.2: below 0.25 (a cut from the channel mean's maximum would be 0.1)
    assert threshold_masks(images, (2, 2), relative=True, tau=0.25).tolist() == [[[1.0, 1.0], [0.0, 0.0]]]
    assert threshold_masks(images, (2, 2), relative=False, tau=0.35).tolist() == [[[1.0, 0.0], [0.0, 0.0]]]


def make_batch(episodes: int = 2, shots: int = 2, size: int = 32, seed: int = 0) -> EpisodeBatch:
    generator = torch.Generator().manual_seed(seed)
    masks = (torch.rand(episodes, shots, size, size, generator=generator) > 0.5).float()
    return EpisodeBatch(episodes=[], query_images=torch.rand(episodes, 3, size, size, generator=generator),
                        support_images=torch.rand(episodes, shots, 3, size, size, generator=generator),
                        support_masks=masks, support_labelled=torch.ones_like(masks), support_annotation="mask",
                        class_names=["a"] * episodes)


def setup_adapter(seed: int = 0, weights=None, **options) -> DiffewsAdapter:
    adapter = DiffewsAdapter(options)
    adapter.setup(SetupContext(device=torch.device("cpu"), weights=weights or {}, random_init=weights is None,
                               shot=2, resolution=32, seed=seed, class_names=["a"]))
    return adapter


def test_random_init_is_deterministic_for_a_seed():
    batch = make_batch()
    with torch.inference_mode():
        first = setup_adapter(seed=3, config="tiny").model(*model_inputs(batch))
        again = setup_adapter(seed=3, config="tiny").model(*model_inputs(batch))
        other = setup_adapter(seed=4, config="tiny").model(*model_inputs(batch))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert (first != other).any()


def model_inputs(batch: EpisodeBatch, size: int = TINY_RESOLUTION):
    from fssbench.adapters.diffews import to_model_input

    return (to_model_input(batch.query_images, size), to_model_input(batch.support_images.flatten(0, 1), size),
            render_masks(batch.support_masks.flatten(0, 1), size))


def test_predict_returns_binary_masks_at_the_evaluation_resolution():
    adapter = setup_adapter(config="tiny")
    with torch.inference_mode():
        prediction = adapter.predict(make_batch(episodes=3, shots=1))
    assert prediction.shape == (3, 32, 32)
    assert set(prediction.unique().tolist()) <= {0.0, 1.0}


def test_precision_defaults_to_the_authors_fp32_on_every_device_and_half_precision_is_a_variant():
    assert resolve_options("diffews", DiffewsAdapter, [])["precision"] == "fp32"  # what a plain run records
    for device in ("cpu", "cuda"):
        assert DiffewsAdapter()._autocast_dtype(torch.device(device)) is None
    assert DiffewsAdapter({"precision": "fp16"})._autocast_dtype(torch.device("cuda")) == torch.float16
    assert DiffewsAdapter({"precision": "bf16"})._autocast_dtype(torch.device("cuda")) == torch.bfloat16
    for flags, variant in (([], ""), (["precision=fp32"], ""), (["precision=fp16"], "precision=fp16"),
                           (["precision=bf16"], "precision=bf16")):  # the run record's variant: its own row
        options = resolve_options("diffews", DiffewsAdapter, flags)
        assert describe_options(changed_options(DiffewsAdapter, options)) == variant
    with pytest.raises(UsageError, match="expected one of fp32, fp16, bf16"):
        resolve_options("diffews", DiffewsAdapter, ["precision=auto"])


def test_bad_options_and_cpu_half_precision_are_usage_errors():
    with pytest.raises(UsageError, match="threshold"):
        DiffewsAdapter({"threshold": "median"})
    with pytest.raises(UsageError, match="CUDA"):
        setup_adapter(config="tiny", precision="fp16")


def write_authors_layout(root, model: DiffewsModel, text_encoder):
    """SD-2.1 folder (vae/, tokenizer/, text_encoder/) and weight/coco_fold0/unet as the authors publish."""
    sd21 = root / "stable-diffusion-2-1-ref8inchannels-tag4inchannels"
    model.vae.save_pretrained(sd21 / "vae")
    text_encoder.save_pretrained(sd21 / "text_encoder")
    (sd21 / "tokenizer").mkdir()
    (sd21 / "tokenizer" / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1}))
    (sd21 / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    unet = root / "coco_fold0" / "unet"
    model.unet.save_pretrained(unet)
    config = json.loads((unet / "config.json").read_text())
    (unet / "config.json").write_text(json.dumps({**config, "_class_name": "MyUNet2DConditionModel",
                                                  "in_channels_ref": 8}))
    return sd21, unet


@pytest.fixture(scope="module")
def authors_layout(tmp_path_factory):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(5)
    source = random_model("tiny")
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=4, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                                num_attention_heads=2, bos_token_id=0, eos_token_id=1,
                                                pad_token_id=1)).eval()
    with torch.no_grad():
        source.empty_text = text_encoder(torch.tensor([[0, 1]]))[0]
    sd21, unet = write_authors_layout(tmp_path_factory.mktemp("diffews-weights"), source, text_encoder)
    return source, sd21, unet


def test_weights_in_the_authors_layout_load_and_predict_like_the_source_model(authors_layout):
    source, sd21, unet = authors_layout
    adapter = setup_adapter(weights={"sd21": sd21, "unet": unet})
    torch.testing.assert_close(adapter.model.empty_text, source.empty_text, rtol=1e-5, atol=1e-6)  # "" through the stored text encoder
    batch = make_batch(episodes=1, shots=1)
    with torch.inference_mode():
        expected = source(*model_inputs(batch, 512))  # the authors' resolution, whatever the evaluation size
        prediction = adapter.predict(batch)
    torch.testing.assert_close(prediction, threshold_masks(expected, (32, 32), relative=True, tau=0.25), rtol=0, atol=0)


def test_the_unet_may_be_given_as_its_folder_or_the_folder_above(authors_layout):
    source, sd21, unet = authors_layout
    loaded = setup_adapter(weights={"sd21": sd21, "unet": unet.parent}).model.unet.state_dict()
    torch.testing.assert_close(loaded, source.unet.state_dict(), rtol=0, atol=0)


def test_missing_and_mismatched_weights_name_the_file_and_the_authors_download(authors_layout, tmp_path):
    _, sd21, unet = authors_layout
    with pytest.raises(UsageError, match=f"{tmp_path / 'unet' / 'config.json'}.*modelscope"):
        setup_adapter(weights={"sd21": sd21, "unet": tmp_path})

    plain_unet = tmp_path / "plain"
    plain_unet.mkdir()
    (plain_unet / "config.json").write_text((unet / "config.json").read_text())
    from safetensors.torch import load_file, save_file

    state = load_file(unet / "diffusion_pytorch_model.safetensors")
    save_file({key: value for key, value in state.items() if not key.startswith("conv_in_ref")},
              plain_unet / "diffusion_pytorch_model.safetensors")
    with pytest.raises(UsageError, match=r"plain.*conv_in_ref.*modelscope"):
        setup_adapter(weights={"sd21": sd21, "unet": plain_unet})


def test_the_cli_asks_for_the_weights_and_where_to_get_them(cli):
    result = cli("eval", "-m", "diffews", "-p", "demo-1shot", "--episodes", "1")
    assert result.code == 2
    assert "sd21" in result.stderr and AUTHORS_WEIGHTS in result.stderr.replace("\n", "")


def test_the_empty_prompt_is_embedded_with_eager_attention_as_the_authors_transformers_did(authors_layout):
    from transformers import CLIPTextModel

    _, sd21, _ = authors_layout
    tokens = torch.tensor([[0, 1]])  # "" without padding: [BOS, EOS] in the fixture's vocabulary
    with torch.no_grad():
        eager, sdpa = (CLIPTextModel.from_pretrained(sd21 / "text_encoder", attn_implementation=attention)(tokens)[0]
                       for attention in ("eager", "sdpa"))
    embedding = empty_prompt_embedding(sd21)
    torch.testing.assert_close(embedding, eager, rtol=0, atol=0)
    assert load_text_encoder(sd21).config._attn_implementation == "eager"
    if (eager != sdpa).any():  # where this CPU's SDPA differs (here by 2-6e-7), the embedding is not SDPA's
        assert (embedding != sdpa).any()


@pytest.mark.slow
def test_a_run_without_a_precision_option_records_fp32(cli, tmp_path):
    result = cli("eval", "-m", "diffews", "-p", "demo-1shot", "--fold", "0", "--episodes", "1", "--random-init",
                 "--option", "config=tiny", "--json", "--out", str(tmp_path))
    record = json.loads(result.stdout)
    assert record["options"]["precision"] == "fp32" and record["variant"] == "config=tiny"  # precision: default
