"""PaliGemma tokenizer: vocabulary layout and real prompts, checked against Gemma's own SentencePiece model."""

from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np
import pytest
import sentencepiece

from conftest import shared_path
from multinet_jax.tokenizers import PALIGEMMA_VOCAB_SIZE, PaliGemmaTokenizer
from tokenizers_helpers import (
    assert_openpi_prompt,
    bimanual_shard_episode,
    build_test_paligemma,
    openpi_prompt_cases,
    openpi_prompts,
)


@pytest.fixture(scope="module")
def paligemma(tmp_path_factory) -> PaliGemmaTokenizer:
    return build_test_paligemma(tmp_path_factory.mktemp("paligemma"))


@pytest.fixture(scope="module")
def gemma() -> sentencepiece.SentencePieceProcessor:
    return sentencepiece.SentencePieceProcessor(model_file=str(shared_path("tokenizers", "gemma_tokenizer.model")))


@pytest.fixture(scope="module")
def real_prompts() -> list[str]:
    piqa = shared_path("data", "multinet_sample", "piqa", "public", "piqa.jsonl")
    goals = [json.loads(line)["goal"] for line in piqa.read_text().splitlines() if line.strip()]
    _, instructions = bimanual_shard_episode()
    return goals + sorted(set(instructions))


def test_vocabulary_layout(paligemma):
    assert paligemma.vocab_size == PALIGEMMA_VOCAB_SIZE == 257_152
    assert (paligemma.pad_id, paligemma.eos_id, paligemma.bos_id) == (0, 1, 2)
    for index in (0, 1, 511, 1023):
        assert paligemma.encode(f"<loc{index:04d}>") == [256_000 + index]
    for index in (0, 64, 127):
        assert paligemma.encode(f"<seg{index:03d}>") == [256_000 + 1024 + index]
    assert paligemma.decode([256_000 + 7, 257_151]) == "<loc0007><seg127>"


def test_real_prompts_encode_like_gemma(paligemma, gemma, real_prompts):
    assert len(real_prompts) >= 5
    for prompt in real_prompts:
        expected = gemma.encode(prompt, add_bos=True, add_eos=True)
        assert paligemma.encode(prompt, add_bos=True, add_eos=True) == expected
        assert paligemma.decode(expected) == prompt


def test_location_pieces_inside_text(paligemma, gemma):
    text = "detect cup"
    ids = paligemma.encode(f"<loc0010><loc1000> {text}")
    assert ids[:2] == [256_010, 257_000]
    assert paligemma.decode(ids) == f"<loc0010><loc1000> {text}"


def test_tokenize_prompt_is_openpis(paligemma):
    """openpi's `PaligemmaTokenizer.tokenize`: Pi0's prompt (the PIQA goals, one with "_", "\\n" and spaces, one cut
    at 4) and Pi0.5's with raw states at bin edges and beyond, equal to openpi's ids and masks at every position."""
    cases = openpi_prompt_cases("pi0") + [case for case in openpi_prompt_cases("pi05") if not case["normalize"]]
    assert len(cases) >= 8
    for case in cases:
        state = None if case["model"] == "pi0" else np.array(case["state"], np.float32)
        ids, mask = paligemma.tokenize_prompt(case["prompt"], case["max_token_len"], state)
        assert ids.dtype == np.int32 and mask.dtype == np.bool_
        assert_openpi_prompt(case, {"tokenized_prompt": ids, "tokenized_prompt_mask": mask})


def test_vocabulary_is_the_one_openpis_prompts_were_built_with(paligemma):
    """openpi built `fixtures/openpi_prompts.json` with the file `build_paligemma_vocab` writes, byte for byte."""
    digest = hashlib.sha256(paligemma.model_path.read_bytes()).hexdigest()
    assert digest == openpi_prompts()["paligemma_tokenizer_sha256"]


def test_missing_model_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.model"):
        PaliGemmaTokenizer(tmp_path / "missing.model")


def test_paligemma_processor_format_is_bos_then_the_whole_text_and_newline_encoded_as_one(paligemma, gemma):
    """HF PaliGemmaProcessor: image tokens, BOS, the text (after any leading "<image>") + "\\n" as one string; "\\n\\n"
    stays one piece and "_" stays "_" (openpi's format turns both into spaces)."""
    text = "<image>System line.\n    Indented line.\n\nGoal: open_drawer\nOutput 0 or 1 only."
    ids = paligemma.prompt_ids(text, "paligemma_processor")
    assert ids == [2, *gemma.encode(text.removeprefix("<image>") + "\n")]
    assert 109 in ids and paligemma.decode(ids[1:]) == text.removeprefix("<image>") + "\n"  # 109: Gemma's "\n\n"
    assert paligemma.prompt_ids(text.removeprefix("<image>"), "paligemma_processor") == ids  # no placeholder: the same
    openpi = paligemma.prompt_ids(text.removeprefix("<image>"), "openpi")
    assert paligemma.decode(openpi[1:]) == "System line.     Indented line.  Goal: open drawer Output 0 or 1 only.\n"


def test_control_token_strings_in_a_processor_prompt_are_the_tokens_as_hugging_faces_processor_reads_them(paligemma):
    """MultiNet's text prompts went through Hugging Face's PaliGemmaProcessor, which reads "<eos>" in a prompt as the
    EOS token; `fixtures/hf_paligemma_control_tokens.json` holds what it built (transformers 4.48.1, fast tokenizer).
    openpi's format encodes the text with SentencePiece alone, so there "<eos>" stays characters."""
    reference = json.loads((pathlib.Path(__file__).parent / "fixtures" / "hf_paligemma_control_tokens.json").read_text())
    for text, ids in zip(reference["texts"], reference["ids"]):
        assert paligemma.prompt_ids(text, "paligemma_processor") == ids, text
    assert paligemma.eos_id not in paligemma.prompt_ids("contains <eos> token text", "openpi")


def test_paligemma_processor_format_refuses_text_before_an_image_placeholder(paligemma):
    with pytest.raises(ValueError, match="only a leading one"):
        paligemma.prompt_ids("Look: <image> what is it?", "paligemma_processor")
    with pytest.raises(ValueError, match="prompt_format"):
        paligemma.prompt_ids("hi", "chatml")


def test_decode_text_is_the_processors_skip_special_tokens_then_strip(paligemma):
    from multinet_jax.eval.runners import decode_text

    answer = paligemma.encode(" 1 ")
    assert decode_text(paligemma, [*answer, paligemma.eos_id, *paligemma.encode("ignored"), 0]) == "1"
    with_specials = [paligemma.bos_id, *paligemma.encode("ls("), paligemma.pad_id, paligemma.unk_id, *paligemma.encode(")")]
    assert decode_text(paligemma, with_specials) == "ls()"  # skipped, not stopped at: decoding continues past them
    assert decode_text(paligemma, [paligemma.eos_id]) == "" and decode_text(paligemma, []) == ""
    # MultiNet's zero-padded rows (257,152..257,215): the first is the processor's special `<image>`, the rest unknown
    padded = [paligemma.vocab_size, *paligemma.encode("ls()"), paligemma.vocab_size + 63]
    assert decode_text(paligemma, padded) == "ls()"
