"""Parity with openpi's Pi0-FAST decoder on the golden fixture (`../shared/openpi_reference/fast`), float32."""

from __future__ import annotations

import functools

import jax
import numpy as np

from conftest import shared_path
from decoding_helpers import FAST_OVERRIDES, fast_io, fast_model, fast_observation, pi0_model
from multinet_jax import sharding, weights
from multinet_jax.models import configs, decoding, param_shapes
from multinet_jax.models.backbone import PaliGemma
from multinet_jax.models.pi0_fast import Pi0FastModel

STEPS = 24  # the fixture's max_decoding_steps


def matching_prefix(actual: np.ndarray, expected: np.ndarray) -> int:
    """How many leading tokens agree (a chaotic random model: compare up to the first divergence)."""
    mismatch = np.flatnonzero(actual != expected)
    return int(mismatch[0]) if mismatch.size else len(expected)


def assert_tokens_match(actual, expected) -> None:
    actual = np.asarray(actual)
    assert actual.shape == expected.shape and actual.dtype == np.int32
    for row in range(len(expected)):
        assert matching_prefix(actual[row], expected[row]) >= 8, (row, actual[row], expected[row])


def test_prefill_logits_match_openpi():
    model = fast_model()
    inputs = decoding.decoder_inputs(model.config, fast_observation(), None, None, skip_absent_cameras=False)
    settings = decoding.DecodeSettings(max_decoding_steps=STEPS)
    prefill = jax.jit(functools.partial(decoding.prefill_observation, PaliGemma(model.config), settings))
    del inputs["sample_index"], inputs["rng"]
    logits = np.asarray(prefill(model.params, **inputs).first_logits)
    expected = fast_io()["prefill_last_logits_f32"]
    assert logits.shape == expected.shape
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-3 * np.abs(expected).max())


def test_greedy_tokens_match_openpi():
    tokens = fast_model().sample_tokens(fast_observation(), max_decoding_steps=STEPS)
    assert_tokens_match(tokens, fast_io()["tokens_greedy_f32"])


def test_pi0_backbone_tokens_match_openpi():
    """Pi0Model.sample_tokens (its PaliGemma backbone; the action expert is never run) on the FAST inputs."""
    tokens = pi0_model().sample_tokens(fast_observation(), max_decoding_steps=STEPS)
    assert_tokens_match(tokens, fast_io()["tokens_greedy_pi0backbone_f32"])


def test_pi0_backbone_as_fast_model_matches_openpi():
    """The PaliGemma weights of the Pi0 checkpoint (every `*_1` and action-head parameter skipped) in a Pi0-FAST."""
    config = configs.get_config("pi0_fast_tiny", **FAST_OVERRIDES)
    expected = param_shapes(config)
    mesh = sharding.make_mesh()
    params = weights.restore_params(
        str(shared_path("openpi_reference", "pi0", "ckpt", "0")),
        expected,
        sharding.param_shardings(expected, mesh),
        skip=weights.is_pi0_only,
    )
    model = Pi0FastModel(config, params, None, mesh)
    tokens = model.sample_tokens(fast_observation(), max_decoding_steps=STEPS)
    assert_tokens_match(tokens, fast_io()["tokens_greedy_pi0backbone_f32"])
