"""HDIG's prompt bank: eq. 1's deduplication on embeddings with known cosines, the prompt sources, and
the Stable Diffusion text encoder on tiny random CLIP text models (SD 3.5's two-encoder layout)."""

import math

import pytest
import torch

from fssbench.adapters.syn4seg.prompts import (TEMPLATES, build_prompt_bank, deduplicate, for_class,
                                              read_prompt_file, sd_text_encoder, template_prompts)
from fssbench.harness.errors import UsageError
from test_backbones import write_tiny_tokenizer


def at_angle(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


# unit vectors in the plane: cos(a - b) is the similarity of two prompts
ANGLES = {"a": 0, "b": 40, "c": 60, "d": 100, "e": 140, "f": 52}


def fake_encoder(prompts: list[str]) -> torch.Tensor:
    return 3 * torch.tensor([at_angle(ANGLES[p]) for p in prompts])  # any norm: the bank normalizes


def test_dedup_keeps_exactly_the_prompts_below_the_threshold():
    # threshold 0.6 ~ 53.13 degrees: a 0 kept; b (40 from a) out; c (60 from a) kept; d (40 from c) out;
    # e (80 from c, 140 from a) kept; f (52 from a, 8 from c) out
    assert deduplicate(list("abcdef"), fake_encoder, threshold=0.6) == ["a", "c", "e"]
    assert deduplicate(list("abcdef"), fake_encoder, threshold=0.6, round_size=1) == ["a", "c", "e"]
    assert deduplicate(list("abcdef"), fake_encoder, threshold=0.6, target=2) == ["a", "c"]


def test_the_bank_is_grown_to_the_target_or_the_shortfall_is_an_error():
    assert build_prompt_bank("x", list("abcdef"), fake_encoder, target=3) == ["a", "c", "e"]
    with pytest.raises(UsageError, match="class 'x': only 3 of 6 candidate prompts .* 4 wanted"):
        build_prompt_bank("x", list("abcdef"), fake_encoder, target=4)


def test_templates_and_prompt_files_fill_in_the_class_name(tmp_path):
    prompts = template_prompts("zebra", seed=1)
    assert len(prompts) == len(TEMPLATES) == 600 and all("zebra" in p for p in prompts)
    assert prompts != template_prompts("zebra", seed=2) and sorted(prompts) == sorted(template_prompts("zebra", 2))
    path = tmp_path / "prompts.txt"
    path.write_text("# mine\na {name} on a boat\n\na {name} on a boat\na red {name}\n")
    assert for_class(read_prompt_file(path), "cat") == ["a cat on a boat", "a red cat"]


def test_an_empty_or_missing_prompt_file_is_an_error_naming_it(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# only a comment\n  \n")
    with pytest.raises(UsageError, match=f"prompt file {empty} holds no prompt"):
        read_prompt_file(empty)
    with pytest.raises(UsageError, match="prompt file .*missing.txt does not exist"):
        read_prompt_file(tmp_path / "missing.txt")


def write_tiny_sd_text_encoders(folder):
    """SD 3.5's layout: text_encoder + tokenizer, text_encoder_2 + tokenizer_2 (tiny random CLIP text models)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    for suffix, width in (("", 8), ("_2", 12)):
        torch.manual_seed(len(suffix))
        config = CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                vocab_size=58, max_position_embeddings=32, bos_token_id=56, eos_token_id=57,
                                projection_dim=width)
        CLIPTextModelWithProjection(config).save_pretrained(folder / f"text_encoder{suffix}")
        (folder / f"tokenizer{suffix}").mkdir()
        write_tiny_tokenizer(folder / f"tokenizer{suffix}")


def test_the_sd_text_encoder_concatenates_the_pooled_embeddings_and_feeds_the_dedup(tmp_path):
    write_tiny_sd_text_encoders(tmp_path)
    encode = sd_text_encoder(tmp_path)
    embeddings = encode(["a cat.", "a dog on a boat.", "a cat."])
    assert embeddings.shape == (3, 8 + 12)
    torch.testing.assert_close(embeddings[0], embeddings[2], rtol=0, atol=0)
    assert not torch.allclose(embeddings[0], embeddings[1])
    bank = deduplicate(for_class(template_prompts("cat")[:40], "cat"), encode, threshold=0.99)
    normalized = torch.nn.functional.normalize(encode(bank), dim=1)
    similarity = normalized @ normalized.T
    assert len(bank) >= 1 and (similarity - torch.eye(len(bank)) < 0.99).all()


def test_a_folder_without_text_encoders_is_an_error_naming_it(tmp_path):
    with pytest.raises(UsageError, match=f"{tmp_path} holds no text_encoder/config.json"):
        sd_text_encoder(tmp_path)
