"""Magma's evaluator calls (`interface.Model`: observations of `image/<camera>` + `prompt`) against Magma's own outputs
(`../shared/magma_reference`): the robot question built from a task gives the fixture's greedy tokens and actions,
option scores are the fixture's first-token log-probabilities, and one probing pass gives the streams."""

from __future__ import annotations

import json
import pathlib
import re

import jax
import numpy as np
import pytest

from magma_helpers import ROBOT_TASK, case_images, magma_dir, magma_io, magma_model
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


def test_sampling_keeps_to_hugging_faces_top_k_read_from_generation_config(tmp_path):
    """HF's `generate(do_sample=True)` filters to the top 50 unless generation_config.json names another top_k (MultiNet's
    Magma Open-X script sampled so). With top_k=1 written there, sampling at any temperature is the greedy decode; a
    field HF would apply and this package does not is refused naming the file."""
    from data_helpers import writable_copy
    from multinet_jax.models import llama_checkpoint, magma
    from multinet_jax.weights.trees import CheckpointError

    assert magma_model().sampling_filters == (llama_checkpoint.HF_DEFAULT_TOP_K, 1.0)
    target = writable_copy(pathlib.Path(magma_dir()), tmp_path / "magma")
    generation_path = target / "generation_config.json"
    generation = json.loads(generation_path.read_text())
    generation_path.write_text(json.dumps({**generation, "top_k": 1}))
    narrow = magma.load(target)
    assert narrow.sampling_filters == (1, 1.0)
    question = [f"What action should the robot take to {ROBOT_TASK}?"] * 8
    greedy = np.asarray(narrow.sample_tokens(_observation(question), max_decoding_steps=6))
    sampled = np.asarray(narrow.sample_tokens(_observation(question), max_decoding_steps=6, temperature=5.0,
                                              rng=jax.random.key(3)))
    np.testing.assert_array_equal(sampled, greedy)
    generation_path.write_text(json.dumps({**generation, "repetition_penalty": 1.1}))
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(generation_path))}: repetition_penalty=1.1: this package "
                                              "reproduces only top_k and top_p"):
        magma.load(target)
    # Llama-3-Instruct's own fields: sampling settings MultiNet's scripts override, a top_p, HF defaults: loads
    generation_path.write_text(json.dumps({**generation, "do_sample": True, "temperature": 0.6, "top_p": 0.9,
                                           "max_length": 4096, "num_beams": 1}))
    assert magma.load(target).sampling_filters == (llama_checkpoint.HF_DEFAULT_TOP_K, 0.9)


def test_text_keeps_a_pad_the_model_emits_out_and_non_special_added_tokens_in_as_hf_decodes(monkeypatch):
    """`processor.decode(ids, skip_special_tokens=True)`: `<image>` (added, not special) stays in the text; a `<pad>`
    emitted before the EOS is skipped, not read as id 0 (Llama-3's '!')."""
    from multinet_jax.eval.runners import decode_text

    model = magma_model()
    tokenizer = model.tokenizer
    words = tokenizer.encode_continuation("the cube is left")
    rest = tokenizer.encode_continuation(" of the bowl")
    image = tokenizer.token_id("<image>", "test")
    ids = [*words, image, *rest, tokenizer.eos_ids[0]]
    assert decode_text(tokenizer, ids) == tokenizer.tokenizer.decode(ids[:-1], skip_special_tokens=True)
    assert "<image>" in decode_text(tokenizer, ids)
    generated = np.asarray([[*words, tokenizer.pad_id, *rest, tokenizer.eos_ids[0], tokenizer.pad_id]])
    monkeypatch.setattr(model, "generate", lambda *args, **kwargs: generated)
    tokens = np.asarray(model.sample_tokens(_observation(["q"]), max_decoding_steps=generated.shape[1]))
    assert tokens[0, -1] == 0 and tokens[0, len(words)] == tokenizer.pad_id
    assert decode_text(tokenizer, tokens[0]) == decode_text(tokenizer, [*words, *rest])
