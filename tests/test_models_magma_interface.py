"""Magma's evaluator calls (`interface.Model`: observations of `image/<camera>` + `prompt`) against Magma's own outputs
(`../shared/magma_reference`): the robot question built from a task gives the fixture's greedy tokens and actions,
option scores are the fixture's first-token log-probabilities, and one probing pass gives the streams."""

from __future__ import annotations

import numpy as np
import pytest

from magma_helpers import ROBOT_TASK, case_images, magma_io, magma_model
from multinet_jax.models.interface import InferenceOptions
from multinet_jax.models.magma import ACTION_DIM

# SimplerEnv's step, as the fixture's 8 greedy ids were decoded: 7 action ids and the EOS after them. predict_actions
# decodes the budget it is given (MultiNet's Open-X protocol gives 1000) and reads the 7 ids before the last.
SIMPLERENV_STEP = InferenceOptions(max_decoding_steps=ACTION_DIM + 1)


def _observation(prompts, images=None):
    images = images if images is not None else [case_images("robot")[0]] * len(prompts)
    return {"image/base_0_rgb": np.stack(images), "prompt": np.asarray(prompts), "sample_index": np.arange(len(prompts))}


def test_predict_actions_and_sample_tokens_read_the_observation_as_simplerenv_prompts():
    model, io = magma_model(), magma_io()
    actions = model.predict_actions(_observation([ROBOT_TASK, ROBOT_TASK]), rng=None, options=SIMPLERENV_STEP)
    assert actions.shape == (2, 1, 7)
    np.testing.assert_array_equal(actions[:, 0], np.stack([io["robot_actions_normalized"]] * 2))
    # A text question is `<image>\n{prompt}`: the fixture's robot prompt is that question for its instruction.
    question = f"What action should the robot take to {ROBOT_TASK}?"
    tokens = np.asarray(model.sample_tokens(_observation([question]), max_decoding_steps=8))
    np.testing.assert_array_equal(tokens[0], io["robot_generated_ids"])


def test_option_scores_are_the_fixtures_first_token_log_probabilities():
    model, io = magma_model(), magma_io()
    question = f"What action should the robot take to {ROBOT_TASK}?"
    candidates = np.array([[[733], [346], [5]]], np.int32)
    scores = np.asarray(model.score_options(_observation([question]), candidates, np.ones(candidates.shape, bool)))
    last = io["robot_logits"][0, -1].astype(np.float64)
    log_probs = last - last.max() - np.log(np.exp(last - last.max()).sum())
    np.testing.assert_allclose(scores[0], log_probs[[733, 346, 5]], atol=1e-4)
    with pytest.raises(ValueError, match=r"option_tokens / option_mask must both be \[b=1, options, tokens\]"):
        model.score_options(_observation([question]), candidates[0], np.ones(candidates[0].shape, bool))


def test_activations_give_the_actions_and_one_stream_per_layer():
    model = magma_model()
    observation = _observation([ROBOT_TASK, "open the drawer"])
    actions, streams = model.activations(observation)
    np.testing.assert_array_equal(actions, model.predict_actions(observation, rng=None, options=SIMPLERENV_STEP))
    depth, width = model.config.llm.depth, model.config.llm.width
    assert {name: value.shape for name, value in streams.items()} == {"prefix_last": (2, depth, width),
                                                                     "prefix_mean": (2, depth, width)}
    assert all(np.isfinite(np.asarray(value)).all() for value in streams.values())
    assert not np.allclose(streams["prefix_last"][0], streams["prefix_last"][1])  # each row its own prompt
