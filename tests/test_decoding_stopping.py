"""Per-row stopping, ragged prompts, batch independence and sampling of the prefix-LM decoder.

Expectations come from the decoder run without stop tokens (a deterministic greedy reference) and numpy: a row
that stops must reproduce its reference up to and including its first stop token, then emit zeros.
"""

from __future__ import annotations

import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from decoding_helpers import fast_model, fast_observation
from multinet_jax.models import decoding

STEPS = 16


def batch_of_four() -> dict[str, np.ndarray]:
    """The fixture's two rows plus two rows with new prompts of 3 and 20 tokens (ragged: 12, 7, 3, 20)."""
    base = fast_observation()
    observation = {key: np.concatenate([value, value]) for key, value in base.items()}
    rng = np.random.default_rng(7)
    for row, length in ((2, 3), (3, 20)):
        observation["tokenized_prompt"][row] = 0
        observation["tokenized_prompt"][row, :length] = [2, *rng.integers(3, 1024, length - 1)]
        observation["tokenized_prompt_mask"][row] = np.arange(64) < length
    return observation


def run(
    observation, *, per_row_stopping=True, skip_absent_cameras=True, openpi_exact=True, **sampling
) -> tuple[np.ndarray, int]:
    """(tokens, loop steps) straight from the compiled decoder, `STEPS` at most."""
    model = fast_model()
    settings = decoding.DecodeSettings(STEPS, per_row_stopping=per_row_stopping, openpi_exact=openpi_exact)
    inputs = decoding.decoder_inputs(
        model.config, observation, None, model.mesh, skip_absent_cameras=skip_absent_cameras
    )
    tokens, steps = decoding.compiled_decoder(model.config, settings, model.mesh)(
        model.params, **inputs, sampling=decoding.Sampling.create(**sampling)
    )
    return np.asarray(tokens), int(steps)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    tokens, steps = run(batch_of_four(), stop_token_ids=())
    assert steps == STEPS
    return tokens


def pick_stop_tokens(reference: np.ndarray, targets: list[int | None]) -> tuple[int, ...]:
    """One token per stopping row: the first at or after its target step that no row emits before it should stop."""
    limits = [STEPS if target is None else target for target in targets]
    chosen = []
    for row, target in enumerate(targets):
        if target is None:
            continue
        for step in range(target, STEPS):
            token = int(reference[row, step])
            if all(token not in reference[r, : limits[r] if r != row else step] for r in range(len(targets))):
                chosen.append(token)
                limits[row] = step
                break
    return tuple(chosen)


def expected_outputs(reference: np.ndarray, stop_tokens: tuple[int, ...]) -> tuple[np.ndarray, list[int | None]]:
    """numpy: each row's reference up to and including its first stop token, zeros after."""
    expected, finish = reference.copy(), []
    for row in range(len(reference)):
        hits = np.flatnonzero(np.isin(reference[row], stop_tokens))
        finish.append(int(hits[0]) if hits.size else None)
        if hits.size:
            expected[row, hits[0] + 1 :] = 0
    return expected, finish


def test_rows_stop_at_different_steps_and_the_loop_exits_early(reference):
    stop_tokens = pick_stop_tokens(reference, [1, 4, 7, 9])
    expected, finish = expected_outputs(reference, stop_tokens)
    assert None not in finish and len(set(finish)) == 4, finish  # the setup really staggers the rows
    tokens, steps = run(batch_of_four(), stop_token_ids=stop_tokens)
    np.testing.assert_array_equal(tokens, expected)
    assert steps == max(finish) + 1 < STEPS


def test_a_row_that_never_stops_runs_to_the_maximum(reference):
    stop_tokens = pick_stop_tokens(reference, [2, None, 5, None])
    expected, finish = expected_outputs(reference, stop_tokens)
    assert finish[1] is None and finish[3] is None and finish[0] is not None and finish[2] is not None
    tokens, steps = run(batch_of_four(), stop_token_ids=stop_tokens)
    np.testing.assert_array_equal(tokens, expected)
    assert steps == STEPS


def test_baseline_mode_emits_the_same_tokens_but_runs_to_the_maximum(reference):
    stop_tokens = pick_stop_tokens(reference, [1, 4, 7, 9])
    expected, _ = expected_outputs(reference, stop_tokens)
    tokens, steps = run(batch_of_four(), stop_token_ids=stop_tokens, per_row_stopping=False)
    np.testing.assert_array_equal(tokens, expected)
    assert steps == STEPS


def test_rows_do_not_depend_on_the_batch(reference):
    observation = batch_of_four()
    for row in (2, 3):
        alone = {key: value[row : row + 1] for key, value in observation.items()}
        alone["sample_index"] = np.array([row], np.int32)
        tokens, _ = run(alone, stop_token_ids=())
        np.testing.assert_array_equal(tokens[0], reference[row])


def test_extra_prompt_padding_changes_nothing(reference):
    observation = batch_of_four()
    for key in ("tokenized_prompt", "tokenized_prompt_mask", "token_ar_mask", "token_loss_mask"):
        observation[key] = np.pad(observation[key], ((0, 0), (0, 21)))
    tokens, _ = run(observation, stop_token_ids=())
    np.testing.assert_array_equal(tokens, reference)


def test_a_masked_camera_is_masked_everywhere_with_the_corrected_masking():
    """openpi_exact=False: a camera masked for every row may be dropped or encoded, the tokens do not change. With
    openpi's window (the default) this middle camera's masked tokens are read, so `sample_tokens` encodes it."""
    observation = batch_of_four()
    observation["image_mask/base_1_rgb"][:] = False
    dropped, _ = run(observation, stop_token_ids=(), skip_absent_cameras=True, openpi_exact=False)
    encoded, _ = run(observation, stop_token_ids=(), skip_absent_cameras=False, openpi_exact=False)
    np.testing.assert_array_equal(dropped, encoded)
    assert decoding.window_needs_masked_cameras(observation, 4)
    openpi_dropped, _ = run(observation, stop_token_ids=(), skip_absent_cameras=True)
    openpi_encoded, _ = run(observation, stop_token_ids=(), skip_absent_cameras=False)
    assert not np.array_equal(openpi_dropped, openpi_encoded)


def test_sampling_with_top_k_1_or_a_tiny_nucleus_is_greedy(reference):
    for option in ({"top_k": 1}, {"top_p": 1e-6}):
        tokens, _ = run(batch_of_four(), stop_token_ids=(), temperature=0.7, **option)
        np.testing.assert_array_equal(tokens, reference)


def test_sampling_is_per_sample_and_reproducible():
    observation = batch_of_four()
    observation["sample_index"] = np.array([10, 11, 12, 13], np.int32)
    settings = {"stop_token_ids": (), "temperature": 1.0}
    tokens, _ = run(observation, **settings)
    again, _ = run(observation, **settings)
    np.testing.assert_array_equal(tokens, again)
    alone = {key: value[3:] for key, value in observation.items()}
    tokens_alone, _ = run(alone, **settings)
    np.testing.assert_array_equal(tokens_alone[0], tokens[3])
    observation["sample_index"] = np.array([20, 21, 22, 23], np.int32)
    other, _ = run(observation, **settings)
    assert (other != tokens).any()


def test_filter_logits_hand_computed():
    logits = jnp.log(jnp.array([[0.1, 0.5, 0.15, 0.25]]))
    kept = lambda top_k, top_p: np.isfinite(np.asarray(decoding.filter_logits(logits, top_k, top_p))).tolist()
    # Nucleus 0.6: mass before 0.5 is 0, before 0.25 is 0.5 (< 0.6, kept), before 0.15 is 0.75 (dropped).
    assert kept(0, 0.6) == [[False, True, False, True]]
    assert kept(3, 1.0) == [[False, True, True, True]]
    assert kept(3, 0.5) == [[False, True, False, False]]
    assert kept(0, 1.0) == [[True, True, True, True]]


def test_right_align_hand_computed():
    embeddings = jnp.arange(5, dtype=jnp.float32).reshape(1, 5, 1)
    mask = jnp.array([[True, True, False, True, False]])
    attn = mask[:, None, :] & mask[:, :, None]
    aligned, aligned_mask, aligned_attn = decoding.right_align(embeddings, mask, attn)
    assert aligned[0, :, 0].tolist() == [4, 0, 1, 2, 3]
    assert aligned_mask[0].tolist() == [False, True, True, False, True]
    np.testing.assert_array_equal(aligned_attn[0], aligned_mask[0][:, None] & aligned_mask[0][None, :])


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="top_p"):
        decoding.Sampling.create(temperature=1.0, top_p=1.5)
    with pytest.raises(ValueError, match="top_k"):
        decoding.Sampling.create(temperature=1.0, top_k=0)
    with pytest.raises(ValueError, match="max_decoding_steps"):
        decoding.DecodeSettings(max_decoding_steps=0)


HF_FILTERS = json.loads((pathlib.Path(__file__).parent / "fixtures" / "hf_sampling_filters.json").read_text())


@pytest.mark.parametrize("case", HF_FILTERS["cases"], ids=lambda case: f"top_k={case['top_k']},top_p={case['top_p']}")
def test_filters_keep_what_hugging_faces_top_k_then_top_p_warpers_keep(case):
    """`fixtures/hf_sampling_filters.json`: transformers' `TopKLogitsWarper` then `TopPLogitsWarper` (top-p over what
    the top-k kept, renormalized), on random rows and a peaked one, token for token. On the row whose six top logits
    are exactly equal, HF's top-p keeps those of them torch's sort happens to put first; here all six stay."""
    logits = jnp.asarray(HF_FILTERS["logits"], jnp.float32)
    kept = np.isfinite(np.asarray(decoding.filter_logits(logits, jnp.int32(case["top_k"]), jnp.float32(case["top_p"]))))
    hf_kept = np.asarray(case["kept"])
    untied = [0, 2, 3]
    np.testing.assert_array_equal(kept[untied], hf_kept[untied])
    assert kept[1, :6].all() and (kept[1, 6:] == hf_kept[1, 6:]).all()
