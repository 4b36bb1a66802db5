"""FAST action tokenizer on real bimanual actions, and openpi's Pi0-FAST prompt format against openpi's own output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.fft

from conftest import shared_path
from multinet_jax.tokenizers import FastPromptTokenizer, FastTokenizer
from tokenizers_helpers import (
    assert_openpi_prompt,
    bimanual_ground_truth_actions,
    bimanual_shard_episode,
    build_test_paligemma,
    openpi_prompt_cases,
    openpi_prompts,
    sliding_chunks,
)

SCALE = 10.0


@pytest.fixture(scope="module")
def real_chunks() -> list[np.ndarray]:
    shard_actions, _ = bimanual_shard_episode()
    return sliding_chunks(shard_actions, 4) + sliding_chunks(bimanual_ground_truth_actions(), 10)


@pytest.fixture(scope="module")
def fast(real_chunks) -> FastTokenizer:
    return FastTokenizer.train(real_chunks, vocab_size=1024, scale=SCALE)


@pytest.fixture(scope="module")
def prompt_tokenizer(tmp_path_factory, fast) -> FastPromptTokenizer:
    return FastPromptTokenizer(build_test_paligemma(tmp_path_factory.mktemp("paligemma")), fast, max_len=256)


def test_round_trip_within_quantization_error(fast, real_chunks):
    for chunk in real_chunks:
        decoded = fast.decode(fast.encode(chunk), *chunk.shape)
        assert decoded is not None and decoded.shape == chunk.shape and decoded.dtype == np.float32
        # Rounding moves each orthonormal DCT coefficient by at most 0.5 / scale; the inverse is orthonormal too,
        # so (Parseval) each dimension's error over time has L2 norm at most sqrt(T) * 0.5 / scale.
        per_dim_l2 = np.linalg.norm(decoded - chunk, axis=0)
        assert np.all(per_dim_l2 <= np.sqrt(len(chunk)) * 0.5 / SCALE + 1e-5)


def test_bpe_compresses_real_chunks(fast, real_chunks):
    long_chunks = [chunk for chunk in real_chunks if len(chunk) == 10]
    num_tokens = sum(len(fast.encode(chunk)) for chunk in long_chunks)
    num_coefficients = sum(chunk.size for chunk in long_chunks)
    assert num_tokens < 0.5 * num_coefficients


def test_symbols_of_a_hand_computed_chunk(fast):
    # A constant 0.5 over 4 steps: orthonormal DCT-II gives 0.5 * sqrt(4) = 1 at frequency 0 and 0 elsewhere;
    # scaled by 10 -> symbols [10, 0, 0, 0] shifted by -min_token.
    chunk = np.full((4, 1), 0.5)
    symbols = fast.bpe.decode(fast.encode(chunk))
    assert [ord(c) + fast.min_token for c in symbols] == [10, 0, 0, 0]


def test_published_layout_loads(tmp_path, fast, real_chunks):
    fast.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["min_token"] == fast.min_token
    reloaded = FastTokenizer.from_pretrained(tmp_path)
    assert all(reloaded.encode(chunk) == fast.encode(chunk) for chunk in real_chunks[:10])
    # The published physical-intelligence/fast processor_config.json carries more keys than we need.
    published = {"action_dim": None, "min_token": -354, "processor_class": "UniversalActionProcessor", "scale": 10,
                 "time_horizon": None, "vocab_size": 2048}
    (tmp_path / "processor_config.json").write_text(json.dumps(published))
    loaded = FastTokenizer.from_pretrained(tmp_path)
    assert (loaded.scale, loaded.min_token, loaded.vocab_size) == (10.0, -354, 2048)


def test_from_pretrained_errors_name_the_file(tmp_path, fast):
    with pytest.raises(FileNotFoundError, match="processor_config.json"):
        FastTokenizer.from_pretrained(tmp_path)
    fast.save_pretrained(tmp_path)
    (tmp_path / "processor_config.json").write_text(json.dumps({"scale": 10}))
    with pytest.raises(ValueError, match="processor_config.json.*min_token"):
        FastTokenizer.from_pretrained(tmp_path)


def test_malformed_tokens_decode_to_none(fast, real_chunks):
    chunk = real_chunks[0]
    tokens = fast.encode(chunk)
    assert fast.decode(tokens[:-1], *chunk.shape) is None
    assert fast.decode(tokens + tokens[:1], *chunk.shape) is None
    assert fast.decode([], *chunk.shape) is None
    assert fast.decode([fast.bpe.get_vocab_size()], *chunk.shape) is None
    assert fast.decode([-1, *tokens], *chunk.shape) is None
    rng = np.random.default_rng(0)
    for _ in range(200):
        garbage = rng.integers(0, fast.bpe.get_vocab_size(), size=rng.integers(1, 30))
        decoded = fast.decode(garbage, 4, 14)
        assert decoded is None or decoded.shape == (4, 14)


def test_train_rejects_a_vocabulary_below_the_range(real_chunks):
    with pytest.raises(ValueError, match="vocab_size"):
        FastTokenizer.train(real_chunks, vocab_size=8)


def test_prompts_are_openpis(prompt_tokenizer):
    """openpi's `FASTTokenizer.tokenize` on raw states, with and without an action chunk of `fast_reference` (tokens
    of `physical-intelligence/fast`'s own processor): the prefix, the "Action: " ... "|" EOS postfix, ar and loss
    masks, cut at 40 inside the postfix, equal to openpi's at every position."""
    with np.load(shared_path("fast_reference", "io.npz")) as data:
        chunks = data["test_chunks"]
    reference = FastTokenizer.from_pretrained(shared_path("fast_reference", "tokenizer"))
    assert reference.encode(chunks[0]) == openpi_prompts()["fast_actions"]["tokens"]
    cases = [case for case in openpi_prompt_cases("pi0_fast") if not case["normalize"]]
    assert sum(case["fast_test_chunk"] is not None for case in cases) == 2
    for case in cases:
        tokenizer = FastPromptTokenizer(prompt_tokenizer.paligemma, reference, max_len=case["max_token_len"])
        actions = None if case["fast_test_chunk"] is None else chunks[case["fast_test_chunk"]]
        out = tokenizer.tokenize(case["prompt"], np.array(case["state"], np.float32), actions)
        assert_openpi_prompt(case, out)
        assert out["tokenized_prompt"].dtype == out["token_ar_mask"].dtype == np.int32
        assert out["tokenized_prompt_mask"].dtype == out["token_loss_mask"].dtype == np.bool_


def test_extract_actions_inverts_the_postfix(prompt_tokenizer, real_chunks):
    for chunk in real_chunks[::7]:
        out = prompt_tokenizer.tokenize("reach a towel", np.zeros(14), chunk)
        generated = out["tokenized_prompt"][out["token_ar_mask"].astype(bool)]
        actions = prompt_tokenizer.extract_actions(np.concatenate([generated, np.zeros(5, np.int32)]), *chunk.shape)
        expected = scipy.fft.idct(np.around(scipy.fft.dct(chunk, axis=0, norm="ortho") * SCALE) / SCALE,
                                  axis=0, norm="ortho")
        np.testing.assert_allclose(actions, expected, atol=1e-6)


def test_extract_actions_invalid_outputs_give_none(prompt_tokenizer):
    paligemma = prompt_tokenizer.paligemma
    assert prompt_tokenizer.extract_actions(np.array(paligemma.encode("no actions here")), 4, 14) is None
    assert prompt_tokenizer.extract_actions(np.array(paligemma.encode("Action: hello|")), 4, 14) is None
    assert prompt_tokenizer.extract_actions(np.array([paligemma.vocab_size + 5]), 4, 14) is None
    assert prompt_tokenizer.extract_actions(np.array([-3, 4]), 4, 14) is None


def _reference_cases(prefix: str) -> list[tuple[np.ndarray, list[int], np.ndarray]]:
    """(chunk, the reference processor's token ids, its decoded chunk) of `fast_reference/io.npz`."""
    with np.load(shared_path("fast_reference", "io.npz")) as data:
        return [(chunk, tokens[:length].tolist(), decoded) for chunk, tokens, length, decoded in
                zip(data[f"{prefix}_chunks"], data[f"{prefix}_tokens"], data[f"{prefix}_token_lengths"], data[f"{prefix}_decoded"])]


def test_held_out_chunks_match_the_reference_processor():
    """Tokens and decoded chunks of physical-intelligence/fast's `UniversalActionProcessor` on held-out chunks. Where
    the reference's decode failed (it prints an error and returns zeros: the tokens decode to 139 coefficients, not
    140), this decoder says None."""
    tokenizer = FastTokenizer.from_pretrained(shared_path("fast_reference", "tokenizer"))
    cases = _reference_cases("test")
    failed_in_reference = [not decoded.any() for _, _, decoded in cases]
    assert 0 < sum(failed_in_reference) < len(cases)  # both kinds are covered
    for (chunk, tokens, decoded), failed in zip(cases, failed_in_reference):
        assert tokenizer.encode(chunk) == tokens
        ours = tokenizer.decode(tokens, *chunk.shape)
        if failed:
            assert ours is None
        else:
            np.testing.assert_allclose(ours, decoded, rtol=0, atol=1e-6)


def test_chunks_beyond_the_training_range_encode_as_the_reference_and_decode_to_none():
    """3x-scaled chunks: the reference encodes them to these ids (coefficients below the range clamped) and decodes
    them to zeros or to garbage ~2000 in size (U+FFFD characters read as symbols); both are no valid chunk."""
    tokenizer = FastTokenizer.from_pretrained(shared_path("fast_reference", "tokenizer"))
    for chunk, tokens, decoded in _reference_cases("extreme"):
        assert tokenizer.encode(chunk) == tokens
        assert not decoded.any() or np.abs(decoded).max() > 100 * np.abs(chunk).max()
        assert tokenizer.decode(tokens, *chunk.shape) is None
