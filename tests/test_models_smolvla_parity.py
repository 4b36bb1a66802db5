"""SmolVLA in Flax against the outputs of LeRobot's own PyTorch code (`../shared/smolvla_reference/`, float32): the
preprocessing, every intermediate the fixture records (vision tower, connector, prefix, the first text layer, the
KV cache, the time embedding, the expert's first layer and output, the velocity of all 10 flow steps) and the
action chunk from the same noise, each within 1e-4 absolute."""

from __future__ import annotations

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from smolvla_helpers import CAMERAS, preprocessed_observation, raw_observation, smolvla_io, smolvla_model
from multinet_jax import domains
from multinet_jax.models import registry, smolvla
from multinet_jax.models.interface import InferenceOptions
from multinet_jax.models.smolvla import SmolVLA

TOLERANCE = 1e-4  # absolute; the fixture's own float64 numpy re-implementation agrees with it to ~1.5e-5


def _close(actual, expected, tolerance=TOLERANCE):
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=0, atol=tolerance)


def _apply(method, *args, **kwargs):
    model = smolvla_model()
    return model.module.apply({"params": model.params}, *args, method=method, **kwargs)


def _images(io):
    return [jnp.asarray(io[f"image_{camera}"].transpose(0, 2, 3, 1)) for camera in CAMERAS]


def _prefix(io):
    masks = [jnp.asarray(io["img_masks"][:, index]) for index in range(len(CAMERAS))]
    return _apply(SmolVLA.embed_prefix, _images(io), masks, jnp.asarray(io["lang_tokens"], jnp.int32),
                  jnp.asarray(io["lang_masks"]), jnp.asarray(io["state_padded"]))


def _time_embedding(io, step):
    config = smolvla_model().config
    return smolvla.time_embedding(io["denoise_time"][step], config.expert.width, config.min_period, config.max_period)


def test_preprocessing_matches_lerobots_processors():
    model, io = smolvla_model(), smolvla_io()
    for camera in CAMERAS:  # resize with padding at the left and top (upsampling here), then [-1, 1]
        raw = jnp.asarray(io[f"raw_image_{camera}"].transpose(0, 2, 3, 1)) * 2 - 1
        _close(smolvla.resize_images(raw, 256, 256), io[f"image_{camera}"].transpose(0, 2, 3, 1), 1e-6)
    tokens, mask = model.tokenizer.tokenize_tasks([str(task) for task in io["tasks"]])
    np.testing.assert_array_equal(tokens, io["lang_tokens"])
    np.testing.assert_array_equal(mask, io["lang_masks"])
    _close(model.normalized_state(io["raw_state"]), io["state_padded"], 1e-6)
    np.testing.assert_array_equal(smolvla.flow_times(10), io["denoise_time"][:, 0])
    np.testing.assert_array_equal(_time_embedding(io, 0), io["time_emb_step0"])


def test_vision_tower_and_connector_match():
    io = smolvla_io()
    for image, camera in zip(_images(io), CAMERAS):
        _close(_apply(lambda module, x: module.vision(x), image), io[f"vision_out_{camera}"])
        _close(_apply(SmolVLA.embed_image, image), io[f"img_emb_{camera}"])


def test_prefix_first_layer_and_kv_cache_match():
    io = smolvla_io()
    prefix, prefix_mask = _prefix(io)
    _close(prefix, io["prefix_embs"])  # magnitude ~30 (sqrt(64) scaling)
    np.testing.assert_array_equal(prefix_mask, io["prefix_pad_masks"])
    (keys, values), state = _apply(SmolVLA.fill_prefix_cache, prefix, prefix_mask, mutable=["intermediates"])
    ((layers,),) = state["intermediates"]["vlm"]["layers"]["residual"]  # [depth, b, n, w]
    _close(layers[0], io["vlm_layer0_out"])
    # LeRobot's DynamicCache layout is [layer, b, kv_heads, n, head_dim]; keys after RoPE.
    _close(np.asarray(keys).transpose(0, 1, 3, 2, 4), io["kv_cache_keys"])
    _close(np.asarray(values).transpose(0, 1, 3, 2, 4), io["kv_cache_values"])


def test_velocity_of_every_flow_step_and_the_experts_layers_match():
    model, io = smolvla_model(), smolvla_io()
    prefix, prefix_mask = _prefix(io)
    kv_cache = _apply(SmolVLA.fill_prefix_cache, prefix, prefix_mask)
    for step in range(10):
        inputs = (kv_cache, prefix_mask, jnp.asarray(io["denoise_x_t"][step]), jnp.asarray(_time_embedding(io, step)))
        if step:
            _close(_apply(SmolVLA.velocity, *inputs), io["denoise_v_t"][step])
            continue
        velocity, state = _apply(SmolVLA.velocity, *inputs, mutable=["intermediates"])
        _close(velocity, io["denoise_v_t"][0])
        streams = smolvla.expert_streams(state["intermediates"], model.config)  # [depth, b, chunk, w]
        _close(streams[0], io["expert_layer0_out_step0"])
    hidden = _apply(lambda module, *args: module.expert(*args), jnp.asarray(io["suffix_embs_step0"]), kv_cache, prefix_mask)
    _close(hidden, io["expert_out_step0"])


def test_sampled_chunk_matches_from_the_same_noise():
    model, io = smolvla_model(), smolvla_io()
    actions = model.sample_actions(preprocessed_observation(), noise=io["noise"])
    _close(actions, io["actions_padded"])
    _close(model.unnormalize_actions(actions), io["actions_unnormalized"])


def test_raw_inputs_give_lerobots_actions_through_predict_actions(monkeypatch):
    """From the cameras' raw pixels at their own sizes, the task texts and the raw state, as LeRobot's processors
    take them, to the unnormalized chunk."""
    model, io = smolvla_model(), smolvla_io()
    monkeypatch.setattr(model, "make_noise", lambda sample_index, rng: jnp.asarray(io["noise"]))
    actions = model.predict_actions(raw_observation(), rng=None, options=InferenceOptions(num_flow_steps=10))
    _close(actions, io["actions"])  # LeRobot's: the checkpoint's action_dim dims, not max_action_dim's padding
    _close(model.unnormalize_actions(actions), io["actions_unnormalized"])


def test_evals_unnormalization_is_lerobots_postprocessor():
    """`eval` unnormalizes with the family's rule (`domains.ActionNorm`) and the checkpoint's statistics: LeRobot's
    `x * std + mean` gives the fixture's postprocessed chunk to float32 rounding (5e-7 here); openpi's rule, with its
    1e-6 added to the std, is 4.5e-6 off."""
    model, io = smolvla_model(), smolvla_io()
    norm = domains.ActionNorm(registry.family("smolvla").action_normalization, model.checkpoint_action_stats(None))
    np.testing.assert_allclose(norm(io["actions"]), io["actions_unnormalized"], rtol=0, atol=5e-7)


@pytest.mark.parametrize("steps", [3, 10])
def test_captured_activations_are_the_fixtures_streams_from_the_same_pass(monkeypatch, steps):
    """Probing's pooled streams: layer 0's are LeRobot's recorded ones pooled over the task's tokens (the prefix) and
    over the action tokens at the first flow step; the actions are `predict_actions`'."""
    model, io = smolvla_model(), smolvla_io()
    monkeypatch.setattr(model, "make_noise", lambda sample_index, rng: jnp.asarray(io["noise"]))
    actions, streams = model.activations(raw_observation(), rng=None, num_steps=steps)
    expected = model.predict_actions(raw_observation(), rng=None, options=InferenceOptions(num_flow_steps=steps))
    _close(actions, expected, 1e-5)
    images = len(CAMERAS) * model.config.image_tokens
    for row, length in enumerate(io["lang_masks"].sum(axis=1)):
        language = io["vlm_layer0_out"][row, images : images + length]
        _close(streams["prefix_mean"][row, 0], language.mean(axis=0))
        _close(streams["prefix_last"][row, 0], language[-1])
    _close(streams["action_mean"][:, 0], io["expert_layer0_out_step0"].mean(axis=1))
    config = model.config
    assert streams["prefix_last"].shape == (2, config.vlm.depth, config.vlm.width)
    assert streams["action_mean"].shape == (2, config.expert.depth, config.expert.width)


def test_resize_matches_lerobots_when_shrinking_and_growing():
    """`tests/data/smolvla_lerobot_resize.npz` was written by LeRobot 0.6.1's own `resize_with_pad` (torch 2.11, CPU;
    `benchmarks/smolvla_lerobot_worker.py resize_fixture`): torch's bilinear without antialiasing, padding at the top
    and left, then [-1, 1]."""
    with np.load(pathlib.Path(__file__).parent / "data" / "smolvla_lerobot_resize.npz") as data:
        for name in ("shrink", "grow", "tall"):
            images = jnp.asarray(data[f"{name}_input"].transpose(0, 2, 3, 1)) * 2 - 1
            _close(smolvla.resize_images(images, 16, 16), data[f"{name}_output"].transpose(0, 2, 3, 1), 1e-6)


def test_cameras_named_as_the_checkpoints_features_map_by_name_others_by_position(monkeypatch):
    """LeRobot picks images by feature name in config.json's order. A checkpoint listing camera2 first reads
    `image/camera1` second whatever the names' sorted order; names it does not know (the pipeline's) map by position."""
    import dataclasses

    model, io = smolvla_model(), smolvla_io()
    observation = raw_observation()
    options = InferenceOptions(num_flow_steps=3)

    def actions(of, inputs):
        monkeypatch.setattr(of, "make_noise", lambda sample_index, rng: jnp.asarray(io["noise"]))
        return np.asarray(of.predict_actions(inputs, rng=None, options=options))

    reordered = smolvla.SmolVLAModel(dataclasses.replace(model.config, cameras=model.config.cameras[::-1]), model.params,
                                     model.norm_stats, model.tokenizer, model.mesh)
    swapped = {**observation, "image/camera1": observation["image/camera2"], "image/camera2": observation["image/camera1"]}
    np.testing.assert_array_equal(actions(reordered, observation), actions(model, swapped))
    positional = {key.replace("image/camera1", "image/base_0_rgb").replace("image/camera2", "image/left_wrist_0_rgb"): value
                  for key, value in observation.items()}
    np.testing.assert_array_equal(actions(model, positional), actions(model, observation))
