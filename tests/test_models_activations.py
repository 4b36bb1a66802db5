"""Activations for probing: captured in the sampling pass without changing its actions, pooled at the right
tokens, and the very streams that produce the model's outputs (the last layer, normed, gives the first text
logits and the first flow step's velocity); Pi0-FAST's and PaliGemma's from the decoder's prefix pass."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import openpi_observation
from decoding_helpers import fast_io, fast_model, fast_observation, pi0_backbone_npz
from models_helpers import openpi_checkpoint, relative_error
from multinet_jax import models
from multinet_jax.models import activations, decoding
from multinet_jax.models.pi0 import Pi0


def _rms_norm(x, scale):
    x = np.asarray(x, np.float64)
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6) * (1 + np.asarray(scale, np.float64))


@pytest.fixture(scope="module")
def pi0():
    return models.load_model(openpi_checkpoint("pi0"))


@pytest.mark.parametrize("family", ["pi0", "pi05"])
def test_capture_keeps_the_actions_and_pools_per_layer(family, pi0):
    model = pi0 if family == "pi0" else models.load_model(openpi_checkpoint("pi05"))
    observation = openpi_observation(family)
    actions, streams = model.activations(observation, num_steps=3)
    np.testing.assert_array_equal(np.asarray(actions), np.asarray(model.sample_actions(observation, num_steps=3)))
    depth, batch = model.config.paligemma.depth, observation["state"].shape[0]
    assert streams["prefix_last"].shape == streams["prefix_mean"].shape == (batch, depth, model.config.paligemma.width)
    assert streams["action_mean"].shape == (batch, depth, model.config.action_expert.width)
    assert all(np.asarray(value).dtype == np.float32 and np.isfinite(value).all() for value in streams.values())


def test_prefix_streams_are_the_ones_that_give_the_text_logits(pi0):
    observation = openpi_observation("pi0")
    _, streams = pi0.activations(observation, num_steps=1)
    llm = pi0.params["PaliGemma"]["llm"]
    last_layer = np.asarray(streams["prefix_last"])[:, -1]  # [b, width]
    logits = _rms_norm(last_layer, llm["final_norm"]["scale"]) @ np.asarray(llm["embedder"]["input_embedding"], np.float64).T
    inputs = decoding.decoder_inputs(pi0.config, observation, None, None)
    state = decoding.prefill_observation(decoding.PaliGemma(pi0.config), decoding.DecodeSettings(1), pi0.params, inputs["images"], inputs["image_masks"],
                                         inputs["tokens"], inputs["token_mask"], inputs["token_ar_mask"])
    assert relative_error(logits, state.first_logits) < 1e-4

    # prefix_mean: the prompt's valid tokens only, every layer
    variables = {"params": pi0.params}
    prepared = pi0.prepare_inputs(observation)
    prefix, mask = pi0.module.apply(variables, prepared["images"], prepared["image_masks"], prepared["tokens"],
                                    prepared["token_mask"], method=Pi0.embed_prefix)
    _, (residual, _) = activations.apply_capturing(pi0.module, variables, prefix, mask, method=Pi0.fill_prefix_cache)
    token_mask = observation["tokenized_prompt_mask"]
    prompt = np.asarray(residual)[:, :, -token_mask.shape[1]:]
    for row in range(token_mask.shape[0]):
        valid = np.flatnonzero(token_mask[row])
        assert relative_error(np.asarray(streams["prefix_mean"])[row], prompt[:, row, valid].mean(1)) < 1e-5
        assert relative_error(np.asarray(streams["prefix_last"])[row], prompt[:, row, valid[-1]]) < 1e-5


def test_action_streams_are_the_first_flow_step(pi0):
    observation = openpi_observation("pi0")
    noise = pi0.make_noise(observation, None)
    actions, streams = pi0.activations(observation, num_steps=1)  # one Euler step: actions = noise - v(t=1)
    variables = {"params": pi0.params}
    prepared = pi0.prepare_inputs(observation)
    prefix, mask = pi0.module.apply(variables, prepared["images"], prepared["image_masks"], prepared["tokens"],
                                    prepared["token_mask"], method=Pi0.embed_prefix)
    cache = pi0.module.apply(variables, prefix, mask, method=Pi0.fill_prefix_cache)
    _, (_, residual) = activations.apply_capturing(pi0.module, variables, cache, mask, prepared["state"], noise,
                                                   jnp.ones(noise.shape[0]), method=Pi0.velocity)
    horizon = pi0.config.action_horizon
    action_tokens = np.asarray(residual)[:, :, -horizon:]  # [depth, b, horizon, width]; the state token comes first
    assert relative_error(np.asarray(streams["action_mean"]), action_tokens.mean(2).swapaxes(0, 1)) < 1e-5
    head = pi0.params["action_out_proj"]
    normed = _rms_norm(action_tokens[-1], pi0.params["PaliGemma"]["llm"]["final_norm_1"]["scale"])
    velocity = normed @ np.asarray(head["kernel"], np.float64) + np.asarray(head["bias"], np.float64)
    assert relative_error(np.asarray(noise) - velocity, actions) < 1e-4


def test_pi0_fast_prefix_streams_give_openpi_first_logits():
    """Pi0-FAST's activations come from the decoder's prefix pass: its first-token logits are openpi's (golden
    fixture), and the last layer's stream at the last prompt token, normed, gives them. No action expert."""
    model = fast_model()
    observation = fast_observation()
    logits, streams = model.activations(observation)
    expected = fast_io()["prefill_last_logits_f32"]
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=0, atol=1e-3 * np.abs(expected).max())
    assert set(streams) == {"prefix_last", "prefix_mean"}
    depth, width = model.config.paligemma.depth, model.config.paligemma.width
    assert streams["prefix_last"].shape == streams["prefix_mean"].shape == (observation["state"].shape[0], depth, width)
    llm = model.params["PaliGemma"]["llm"]
    last_layer = np.asarray(streams["prefix_last"])[:, -1]
    from_stream = _rms_norm(last_layer, llm["final_norm"]["scale"]) @ np.asarray(llm["embedder"]["input_embedding"], np.float64).T
    assert relative_error(from_stream, logits) < 1e-4


def test_paligemma_prefix_streams_equal_the_pi0_backbones(pi0):
    """The PaliGemma npz holding Pi0's backbone weights: the same prefix streams as Pi0's sampling pass."""
    observation = openpi_observation("pi0")
    _, expected = pi0.activations(observation, num_steps=1)
    _, streams = models.load_model(pi0_backbone_npz()).activations(observation)
    assert set(streams) == {"prefix_last", "prefix_mean"}
    for name in streams:
        assert relative_error(np.asarray(streams[name]), np.asarray(expected[name])) < 1e-5, name
