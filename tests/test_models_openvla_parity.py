"""OpenVLA in Flax against the outputs of OpenVLA's own PyTorch code (`../shared/openvla_reference/`, float32):
processor inputs exactly, features and logits within 1e-4 relative, every greedy token and action exactly, batched."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models_helpers import relative_error
from openvla_helpers import fixture_images, fixture_instructions, openvla_io, openvla_model
from multinet_jax.models.openvla import OpenVLA

TOLERANCE = 1e-4


def _forward(model, pixels, tokens, mask):
    """(prefix embeddings, logits, final hidden, per-layer outputs [depth, b, n, w], prefix mask)."""
    module, variables = OpenVLA(model.config), {"params": model.params}
    prefix, prefix_mask = module.apply(variables, pixels, tokens, mask, method=OpenVLA.embed_prefix)
    (logits, hidden), state = module.apply(variables, prefix, prefix_mask, method=OpenVLA.forward, mutable=["intermediates"])
    ((layers,),) = state["intermediates"]["llm"]["layers"]["residual"]  # expert 0, [depth, b, n, w]
    return prefix, logits, hidden, layers, np.asarray(prefix_mask)


def test_processor_inputs_are_exact():
    model, io = openvla_model(), openvla_io()
    pixels = model.pixels(fixture_images())  # includes the 256x320 image: PIL bicubic, antialiased
    np.testing.assert_array_equal(pixels.transpose(0, 3, 1, 2), io["pixel_values"])
    tokens, mask = model.action_tokens(fixture_instructions())
    for row, length in enumerate(io["predict_input_lengths"]):
        np.testing.assert_array_equal(tokens[row, :length], io["predict_input_ids"][row, :length])
        assert mask[row].sum() == length
    assert model.tokenizer.empty_id == 641  # read from the tokenizer (Llama-2's 29871 in the real vocabulary)


def test_vision_and_projector_features_match():
    model, io = openvla_model(), openvla_io()
    module, variables = OpenVLA(model.config), {"params": model.params}
    pixels = model.pixels(fixture_images())
    features = module.apply(variables, pixels, method=OpenVLA.vision_features)
    projected = module.apply(variables, pixels, method=OpenVLA.embed_images)
    assert relative_error(features, io["vision_patch_features"]) < TOLERANCE
    assert relative_error(projected, io["projector_features"]) < TOLERANCE


def test_logits_and_every_layers_hidden_states_match_in_a_ragged_batch():
    model, io = openvla_model(), openvla_io()
    tokens, mask = model.action_tokens(fixture_instructions())
    prefix, logits, hidden, layers, prefix_mask = _forward(model, model.pixels(fixture_images()), tokens, mask)
    depth = model.config.llm.depth
    for row, length in enumerate(io["seq_lengths"]):
        valid = np.flatnonzero(prefix_mask[row])
        assert len(valid) == length and valid[-1] == length - 1  # right padding after the causal prefix
        assert relative_error(logits[row, length - 1], io["last_logits"][row]) < TOLERANCE
        # HF's hidden_states: the input embeddings, layers 1..L-1, then the final norm of layer L.
        states = [prefix[row], *(layers[i, row] for i in range(depth - 1)), hidden[row]]
        for index, state in enumerate(states):
            state = np.asarray(state)[:length]
            assert relative_error(state.mean(axis=0), io["hidden_mean"][row, index]) < TOLERANCE, (row, index)
            assert relative_error(state[-1], io["hidden_last"][row, index]) < TOLERANCE, (row, index)
    assert relative_error(logits[0, : io["seq_lengths"][0]], io["logits_full_0"]) < TOLERANCE


def test_batched_greedy_tokens_and_actions_are_exact_and_equal_one_at_a_time():
    model, io = openvla_model(), openvla_io()
    images, instructions = fixture_images(), fixture_instructions()
    tokens, mask = model.action_tokens(instructions)
    generated = model.generate(model.pixels(images), tokens, mask, max_decoding_steps=7)
    np.testing.assert_array_equal(generated, io["generated_ids"])
    actions = model.predict_action(images, instructions, unnorm_key="bridge_orig")
    np.testing.assert_array_equal(actions, io["actions_f64"])
    np.testing.assert_array_equal(model.normalized_actions(generated).astype(np.float32), io["normalized_actions"])
    for row in (3, 0):  # alone, each row gives what it gave in the batch
        alone = model.predict_action(images[row : row + 1], instructions[row : row + 1])
        np.testing.assert_array_equal(alone[0], io["actions_f64"][row])


def test_images_may_be_one_stacked_array():
    """`images` as one uint8 `[b, H, W, 3]` array (what the other batch APIs take) gives the actions of the same
    images as a list; an array of another rank is refused with a line naming `images`."""
    model, io = openvla_model(), openvla_io()
    images, instructions = fixture_images()[:3], fixture_instructions()[:3]  # the three 224 x 224 images
    np.testing.assert_array_equal(model.predict_action(np.stack(images), instructions, unnorm_key="bridge_orig"),
                                  io["actions_f64"][:3])
    with pytest.raises(ValueError, match=r"predict_action's images: .* got an array of shape \(224, 224, 3\)"):
        model.predict_action(images[0], instructions[:1])


def test_bfloat16_restores_bfloat16_params_and_stays_close():
    model, io = openvla_model("bfloat16"), openvla_io()
    assert {leaf.dtype for leaf in jax.tree.leaves(model.params)} == {jnp.dtype("bfloat16")}
    projected = OpenVLA(model.config).apply({"params": model.params}, model.pixels(fixture_images()), method=OpenVLA.embed_images)
    assert projected.dtype == jnp.bfloat16
    assert relative_error(projected, io["projector_features"]) < 0.05  # bf16 rounding through two ViTs


def test_bad_inputs_fail_with_one_line():
    model = openvla_model()
    images, instructions = fixture_images(), fixture_instructions()
    with pytest.raises(ValueError, match="unnorm_key 'libero' is not in the checkpoint's norm_stats \\['bridge_orig'\\]"):
        model.predict_action(images[:1], instructions[:1], unnorm_key="libero")
    with pytest.raises(ValueError, match="as many images as instructions"):
        model.predict_action(images[:2], instructions[:1])
    with pytest.raises(ValueError, match=r"OpenVLA images must be uint8 \[H, W, 3\], got float32 \(224, 224, 3\)"):
        model.predict_action([images[0].astype(np.float32)], instructions[:1])
    with pytest.raises(KeyError, match="OpenVLA reads `image/<camera>` \\(uint8\\) and `prompt`"):
        model.sample_tokens({"image/base_0_rgb": np.zeros((1, 224, 224, 3), np.uint8)})


def test_sampling_keeps_to_hugging_faces_top_k_read_from_generation_config(tmp_path):
    """HF's `generate(do_sample=True)` filters to the top 50 unless generation_config.json names another top_k: with
    top_k=1 written there, text sampled at a high temperature is the greedy text."""
    import json
    import pathlib

    from data_helpers import writable_copy
    from openvla_helpers import openvla_dir
    from multinet_jax.models import llama_checkpoint, openvla

    assert openvla_model().sampling_filters == (llama_checkpoint.HF_DEFAULT_TOP_K, 1.0)
    target = writable_copy(pathlib.Path(openvla_dir()), tmp_path / "openvla")
    generation_path = target / llama_checkpoint.GENERATION_CONFIG_FILE
    generation_path.write_text(json.dumps({**json.loads(generation_path.read_text()), "top_k": 1}))
    model = openvla.load(target)
    assert model.sampling_filters == (1, 1.0)
    observation = {"image/base_0_rgb": np.stack([fixture_images()[0]] * 6), "prompt": [fixture_instructions()[0]] * 6,
                   "sample_index": np.arange(6)}
    greedy = np.asarray(model.sample_tokens(observation, max_decoding_steps=5))
    sampled = np.asarray(model.sample_tokens(observation, max_decoding_steps=5, temperature=5.0, rng=jax.random.key(1)))
    np.testing.assert_array_equal(sampled, greedy)
