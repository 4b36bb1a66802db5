"""The text probe's forced choice: `score_options` log-likelihoods against the same sums computed token by token
with fresh prefills (the option's earlier tokens appended to the prompt as a causal block)."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from conftest import openpi_observation
from models_helpers import openpi_checkpoint
from multinet_jax import models
from multinet_jax.models import decoding


@pytest.fixture(scope="module")
def pi0():
    return models.load_model(openpi_checkpoint("pi0"))


@functools.cache
def _first_logits(config):
    """The prefix's next-token logits, one jitted prefill (an independent path: no cache writes, no option loop)."""
    module = decoding.PaliGemma(config)
    return jax.jit(lambda *args: decoding.prefill_observation(module, decoding.DecodeSettings(1, openpi_exact=False), *args).first_logits)


def _reference(model, observation, row, option):
    """sum_j log p(option[j] | image, prompt, option[:j]), each term from its own prefill."""
    prompt = observation["tokenized_prompt"][row][observation["tokenized_prompt_mask"][row]]
    total = 0.0
    for j, token in enumerate(option):
        ids = np.concatenate([prompt, option[:j]]).astype(np.int32)
        length = observation["tokenized_prompt"].shape[1]
        single = {key: value[row : row + 1] for key, value in observation.items()}
        single["tokenized_prompt"] = np.zeros((1, length), np.int32)
        single["tokenized_prompt"][0, : len(ids)] = ids
        single["tokenized_prompt_mask"] = (np.arange(length) < len(ids))[None]
        single["token_ar_mask"] = ((np.arange(length) >= len(prompt)) & (np.arange(length) < len(ids)))[None].astype(np.int32)
        inputs = decoding.decoder_inputs(model.config, single, None, None)
        logits = np.asarray(_first_logits(model.config)(model.params, inputs["images"], inputs["image_masks"], inputs["tokens"],
                                                        inputs["token_mask"], inputs["token_ar_mask"])[0], np.float64)
        total += logits[token] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    return total


def test_scores_are_the_tokenwise_log_likelihoods(pi0):
    observation = openpi_observation("pi0")
    options = [[17, 3, 250], [40], [999, 998]]
    tokens = np.zeros((2, 3, 3), np.int32)
    mask = np.zeros((2, 3, 3), bool)
    for k, option in enumerate(options):
        tokens[:, k, : len(option)], mask[:, k, : len(option)] = option, True
    scores = np.asarray(pi0.score_options(observation, tokens, mask))
    assert scores.shape == (2, 3) and np.all(scores < 0)
    for row in range(2):
        for k, option in enumerate(options):
            assert scores[row, k] == pytest.approx(_reference(pi0, observation, row, np.array(option)), rel=2e-4, abs=2e-3)


def test_bad_option_shapes(pi0):
    observation = openpi_observation("pi0")
    with pytest.raises(ValueError, match=r"must both be \[b=2, options, tokens\]"):
        pi0.score_options(observation, np.zeros((2, 2), np.int32), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="at least one token"):
        pi0.score_options(observation, np.zeros((2, 2, 1), np.int32), np.zeros((2, 2, 1), bool))
