"""Magma in Flax against the outputs of Magma's own PyTorch code (`../shared/magma_reference/`, float32): the
processor's crops and ids exactly, each intermediate within 1e-5 relative, logits within 1e-4, every greedy token and
action exactly, on both cases (a 2x2 crop grid; two images of different sizes in one prompt), batched."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from magma_helpers import MULTI_USER, ROBOT_TASK, case_images, magma_io, magma_model
from models_helpers import relative_error
from multinet_jax.models import action_bins, magma_inputs
from multinet_jax.models.magma import Magma

CASES = ("robot", "multi")
INTERMEDIATE_TOLERANCE = 1e-5
LOGIT_TOLERANCE = 1e-4


def _prompt(model, case: str) -> str:
    """The fixture's prompt: the robot question (image start/end added, as the config asks), or its own user turn."""
    if case == "robot":
        return model.prompt(magma_inputs.action_prompt(ROBOT_TASK))
    return magma_inputs.chat_prompt(MULTI_USER, model.tokenizer.bos_token, image_start_end=False)


def _batch(model, cases=CASES):
    return model.batch([_prompt(model, case) for case in cases], [case_images(case) for case in cases])


def test_processor_crops_grids_and_ids_are_exact():
    model, io = magma_model(), magma_io()
    for case in CASES:
        processed = [model.image_processor(image) for image in case_images(case)]
        crops = np.concatenate([crops for crops, _ in processed])
        np.testing.assert_array_equal(crops.transpose(0, 3, 1, 2), io[f"{case}_pixel_values"][0])  # torch's bilinear
        assert [list(grid) for _, grid in processed] == io[f"{case}_image_sizes"][0].tolist()
        assert model.tokenizer.encode(_prompt(model, case)) == io[f"{case}_input_ids"][0].tolist()  # two BOS
    assert model.tokenizer.vocab_size == 1000 and model.tokenizer.eos_ids == (1009,)


def test_vision_projector_and_merged_embeddings_match():
    model, io = magma_model(), magma_io()
    module, variables = Magma(model.config), {"params": model.params}
    batch = _batch(model)
    prefix, mask = module.apply(variables, batch.crops, batch.tokens, batch.gather, batch.mask, method=Magma.embed_prefix)
    for row, case in enumerate(CASES):
        crops = batch.crops[row, : io[f"{case}_pixel_values"].shape[1]]
        features = module.apply(variables, crops, method=Magma.vision_features)
        assert relative_error(features, io[f"{case}_vision_features"].transpose(0, 2, 3, 1)) < INTERMEDIATE_TOLERANCE
        projected, _ = module.apply(variables, crops, method=Magma.embed_images)
        assert relative_error(projected, io[f"{case}_projector_out"]) < INTERMEDIATE_TOLERANCE
        length = int(mask[row].sum())
        assert length == io[f"{case}_inputs_embeds"].shape[1] and bool(mask[row, :length].all())
        assert relative_error(prefix[row, :length], io[f"{case}_inputs_embeds"][0]) < INTERMEDIATE_TOLERANCE
        assert np.array_equal(np.cumsum(mask[row, :length]) - 1, io[f"{case}_merged_position_ids"][0])


def test_logits_match_in_a_ragged_batch():
    model, io = magma_model(), magma_io()
    module, variables = Magma(model.config), {"params": model.params}
    batch = _batch(model)
    prefix, mask = module.apply(variables, batch.crops, batch.tokens, batch.gather, batch.mask, method=Magma.embed_prefix)
    logits, _ = module.apply(variables, prefix, mask, method=Magma.forward)
    for row, case in enumerate(CASES):
        expected = io[f"{case}_logits"][0]
        assert np.abs(np.asarray(logits[row, : len(expected)]) - expected).max() < LOGIT_TOLERANCE


def test_batched_greedy_tokens_are_exact_and_equal_one_at_a_time():
    model, io = magma_model(), magma_io()
    generated = model.generate(_batch(model), max_decoding_steps=8)
    for row, case in enumerate(CASES):
        np.testing.assert_array_equal(generated[row], io[f"{case}_generated_ids"])
        alone = model.generate(_batch(model, (case,)), max_decoding_steps=8)
        np.testing.assert_array_equal(alone[0], io[f"{case}_generated_ids"])


def test_actions_decode_as_simplerenv_does():
    model, io = magma_model(), magma_io()
    actions = model.predict_action(case_images("robot"), [ROBOT_TASK], unnorm_key="bridge_orig")
    np.testing.assert_array_equal(actions[0], io["robot_actions_unnorm_bridge_orig"])
    np.testing.assert_array_equal(model.action_token_ids(io["robot_generated_ids"][None])[0][0], io["robot_action_token_ids"])
    np.testing.assert_array_equal(model.normalized_actions(io["robot_action_token_ids"]), io["robot_actions_normalized"])
    synthetic = io["synthetic_action_token_ids"]
    np.testing.assert_array_equal(model.normalized_actions(synthetic), io["synthetic_actions_normalized"])
    for key in ("bridge_orig", "google_robot"):
        unnormalized = action_bins.unnormalize(model.normalized_actions(synthetic[:7]), model.action_stats(key))
        np.testing.assert_array_equal(unnormalized, io[f"synthetic_actions_unnorm_{key}"])


def test_an_eos_ends_the_row_and_the_action_ids_are_the_seven_before_it():
    model = magma_model()
    eos, pad = model.tokenizer.eos_id, model.tokenizer.pad_id
    generated = np.array([[900, 901, 902, 903, 904, 905, 906, eos, pad, pad], [1, 2, 3, 900, 901, 902, 903, 904, 905, 906],
                          [900, eos, pad, pad, pad, pad, pad, pad, pad, pad]])
    token_ids, complete = model.action_token_ids(generated)
    np.testing.assert_array_equal(token_ids[:2], [[900, 901, 902, 903, 904, 905, 906], [3, 900, 901, 902, 903, 904, 905]])
    np.testing.assert_array_equal(complete, [True, True, False])  # the last row ended before 7 action ids
    actions = model.decoded_actions(generated)
    assert np.all(np.isfinite(actions[:2])) and np.all(np.isnan(actions[2]))


def test_bfloat16_restores_bfloat16_params_and_stays_close():
    model, io = magma_model("bfloat16"), magma_io()
    assert {leaf.dtype for leaf in jax.tree.leaves(model.params)} == {jnp.dtype("bfloat16")}
    module, variables = Magma(model.config), {"params": model.params}
    crops = _batch(model, ("robot",)).crops[0]
    projected, _ = module.apply(variables, crops, method=Magma.embed_images)
    assert projected.dtype == jnp.bfloat16
    assert relative_error(projected, io["robot_projector_out"]) < 0.05  # bf16 rounding through the ConvNeXt
