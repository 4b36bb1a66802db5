"""Pi0-FAST and Pi0-backbone decoding reproduce openpi's tokens on rows with a masked camera (`openpi_exact`, the
default), and the corrected masking (`openpi_exact=False`) masks exactly.

openpi's golden fixture (`../shared/openpi_reference/fast`) has no masked camera. The expected tokens for such rows
come from `decoding_helpers.openpi_greedy_tokens`: openpi's decoder transcribed statement by statement from its
source (15a9616) onto this project's layers: the camera-masked window `[prefix_start, prefill_size + step]`, the
prefill into a zero-initialised cache of `prefill_size + max_decoding_steps` slots, positions one past contiguous.
The transcription is itself checked against the fixture's tokens first (`test_transcription_reproduces_the_fixture`).
"""

from __future__ import annotations

import numpy as np
import pytest

from decoding_helpers import fast_io, fast_model, fast_observation, openpi_greedy_tokens, pi0_model
from multinet_jax.models import decoding

STEPS = 24  # the fixture's max_decoding_steps
MODELS = {"fast": (fast_model, "tokens_greedy_f32"), "pi0_backbone": (pi0_model, "tokens_greedy_pi0backbone_f32")}


def masked_camera_batch() -> dict[str, np.ndarray]:
    """Four rows: fixture row 0 as is, row 1 without `base_1_rgb`, row 0 without `wrist_0_rgb`, row 1 with only
    `base_0_rgb` (MultiNet's Open-X layout: the first camera live, the later ones masked)."""
    base = fast_observation()
    observation = {key: value[[0, 1, 0, 1]] for key, value in base.items()}
    observation["image_mask/base_1_rgb"] = np.array([True, False, True, False])
    observation["image_mask/wrist_0_rgb"] = np.array([True, True, False, False])
    return observation


def multinet_layout() -> dict[str, np.ndarray]:
    """Both fixture rows with only the first camera live: two cameras masked for the whole batch."""
    observation = fast_observation()
    observation["image_mask/base_1_rgb"] = np.array([False, False])
    observation["image_mask/wrist_0_rgb"] = np.array([False, False])
    return observation


def until_stop(tokens: np.ndarray) -> list[list[int]]:
    """Each row up to and including its first EOS (the decoder emits zeros after it)."""
    rows = []
    for row in np.asarray(tokens):
        stops = np.flatnonzero(row == decoding.PALIGEMMA_EOS_ID)
        rows.append(row[: stops[0] + 1 if stops.size else len(row)].tolist())
    return rows


@pytest.mark.parametrize("name", MODELS)
def test_transcription_reproduces_the_fixture(name):
    load, key = MODELS[name]
    reference = openpi_greedy_tokens(load(), fast_observation(), STEPS)
    # All 24 tokens of both rows agree (the fixture README allows divergence after 8 for a chaotic model; this
    # transcription, like the decoder itself, reproduces the fixture exactly on this machine).
    np.testing.assert_array_equal(reference, fast_io()[key])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch", [masked_camera_batch, multinet_layout])
def test_default_decoding_equals_openpi_on_rows_with_a_masked_camera(name, batch):
    load, _ = MODELS[name]
    observation = batch()
    expected = openpi_greedy_tokens(load(), observation, STEPS)
    tokens = np.asarray(load().sample_tokens(observation, max_decoding_steps=STEPS))
    assert until_stop(tokens) == until_stop(expected)
    # The window differs from the valid tokens on these rows: corrected masking gives other tokens there.
    corrected = np.asarray(load().sample_tokens(observation, max_decoding_steps=STEPS, openpi_exact=False))
    masked_rows = [row for row in range(len(tokens)) if not all(observation[k][row] for k in observation if k.startswith("image_mask/"))]
    assert all(until_stop(corrected)[row] != until_stop(tokens)[row] for row in masked_rows)


def test_openpi_exact_encodes_cameras_masked_in_every_row_only_when_the_window_reads_them():
    observation = multinet_layout()
    assert decoding.window_needs_masked_cameras(observation, 2)
    text_only = {**observation, "image_mask/base_0_rgb": np.array([False, False])}
    assert not decoding.window_needs_masked_cameras(text_only, 2)  # every camera masked: window = the prompt
    # Then dropping the cameras is exact: the same tokens as encoding them.
    model = fast_model()
    settings = decoding.DecodeSettings(max_decoding_steps=STEPS)
    decode = decoding.compiled_decoder(model.config, settings, model.mesh)
    tokens = {}
    for skip in (True, False):
        inputs = decoding.decoder_inputs(model.config, text_only, None, model.mesh, skip_absent_cameras=skip)
        assert len(inputs["images"]) == (0 if skip else 3)
        tokens[skip], _ = decode(model.params, **inputs, sampling=decoding.Sampling.create())
    np.testing.assert_array_equal(tokens[True], tokens[False])


def test_corrected_masking_ignores_masked_cameras_exactly():
    """openpi_exact=False: a masked camera's pixels never matter, and one masked in every row can be dropped."""
    model = fast_model()
    observation = multinet_layout()
    corrected = np.asarray(model.sample_tokens(observation, max_decoding_steps=STEPS, openpi_exact=False))
    repainted = {**observation, "image/wrist_0_rgb": np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3))}
    np.testing.assert_array_equal(
        np.asarray(model.sample_tokens(repainted, max_decoding_steps=STEPS, openpi_exact=False)), corrected
    )
    without = {k: v for k, v in observation.items() if not k.endswith(("base_1_rgb", "wrist_0_rgb"))}
    np.testing.assert_array_equal(
        np.asarray(model.sample_tokens(without, max_decoding_steps=STEPS, openpi_exact=False)), corrected
    )
    # openpi's window reads the masked cameras: their pixels change its tokens.
    exact = np.asarray(model.sample_tokens(observation, max_decoding_steps=STEPS))
    assert not np.array_equal(np.asarray(model.sample_tokens(repainted, max_decoding_steps=STEPS)), exact)


def test_camera_order_in_the_dict_does_not_matter():
    """openpi's Pi0-FAST takes its cameras as jax flattens the images dict (sorted names): a dict built in another
    order gives the fixture's tokens."""
    reversed_keys = dict(reversed(list(fast_observation().items())))
    assert [key for key in reversed_keys if key.startswith("image/")][0] == "image/wrist_0_rgb"
    np.testing.assert_array_equal(np.asarray(fast_model().sample_tokens(reversed_keys, max_decoding_steps=STEPS)),
                                  fast_io()["tokens_greedy_f32"])
