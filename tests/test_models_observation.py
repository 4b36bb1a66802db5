"""The observation boundary: uint8 images as openpi converts them, out-of-vocabulary ids and step counts refused.

Every other malformed observation is a case of `test_bad_inputs.py`."""

from __future__ import annotations

import numpy as np
import pytest

from models_helpers import pi0_checkpoint, pi0_io, pi0_observation, tiny_observation
from multinet_jax.models import load_model
from multinet_jax.models.observation import ObservationError, to_model_range, validate


@pytest.fixture(scope="module")
def model():
    return load_model(pi0_checkpoint())


def _uint8_observation() -> dict[str, np.ndarray]:
    """The fixture's observation with its images quantized to uint8 (as a camera delivers them)."""
    observation = pi0_observation()
    for key in [key for key in observation if key.startswith("image/")]:
        observation[key] = np.round((observation[key] + 1) * 127.5).clip(0, 255).astype(np.uint8)
    return observation


def test_uint8_images_are_mapped_to_minus_one_one_as_openpi_does(model):
    noise = pi0_io()["noise"]
    as_uint8 = _uint8_observation()
    as_float = {key: to_model_range(value) if key.startswith("image/") else value for key, value in as_uint8.items()}
    np.testing.assert_array_equal(
        np.asarray(model.sample_actions(as_uint8, noise=noise)), np.asarray(model.sample_actions(as_float, noise=noise))
    )
    tokens = model.sample_tokens(as_uint8, max_decoding_steps=4)
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(model.sample_tokens(as_float, max_decoding_steps=4)))


def test_out_of_vocabulary_prompt_ids_are_refused_not_clamped(model):
    observation = pi0_observation()
    observation["tokenized_prompt"] = observation["tokenized_prompt"].copy()
    observation["tokenized_prompt"][1, 3] = model.config.vocab_size  # one past the embedding table
    message = rf"observation\['tokenized_prompt'\]: token id {model.config.vocab_size} is outside the model's vocabulary"
    with pytest.raises(ObservationError, match=message):
        model.sample_actions(observation)
    with pytest.raises(ObservationError, match=message):
        model.sample_tokens(observation, max_decoding_steps=4)


@pytest.mark.parametrize("num_steps", [0, -3, 2.5, True])
def test_flow_step_count_must_be_a_positive_integer(model, num_steps):
    with pytest.raises(ValueError, match=rf"num_steps must be a positive integer, got {num_steps!r}"):
        model.sample_actions(pi0_observation(), num_steps=num_steps)


def test_validate_converts_and_fills_defaults():
    observation = tiny_observation()
    observation["image/base_0_rgb"] = np.full((2, 14, 14, 3), 255, np.uint8)
    observation["tokenized_prompt_mask"] = np.ones((2, 5), np.int64)
    validated = validate(observation, image_size=14, vocab_size=8, state_dim=4)
    assert validated["image/base_0_rgb"].dtype == np.float32 and (validated["image/base_0_rgb"] == 1).all()
    assert validated["tokenized_prompt_mask"].dtype == bool
    np.testing.assert_array_equal(validated["sample_index"], [0, 1])
    assert validated["token_ar_mask"].dtype == np.int32 and not validated["token_ar_mask"].any()
    assert "state" not in validate(observation, image_size=14, vocab_size=8)  # a model that does not read it


@pytest.mark.parametrize("typo, meant", [("image_masks/right_wrist_0_rgb", "image_mask/right_wrist_0_rgb"),
                                         ("tokenised_prompt_mask", "tokenized_prompt_mask"), ("states", "state")])
def test_a_misspelled_key_is_refused_naming_the_one_meant(model, typo, meant):
    """Read as absent, `image_masks/right_wrist_0_rgb` left that camera attended and moved the actions (by 0.32 on the
    fixture) with nothing failing; keys the evaluator and other families pass (`prompt`, `text_prompt_mask`) are not
    near misses and still pass."""
    observation = pi0_observation()
    right = "image_mask/right_wrist_0_rgb"
    observation[typo] = ~observation[right] if typo.startswith("image_masks/") else observation.get(meant, np.zeros(1))
    with pytest.raises(ObservationError, match=rf"observation\['{typo}'\]: not a key the model reads; did you mean '{meant}'"):
        model.sample_actions(observation, noise=pi0_io()["noise"])
    legit = {**pi0_observation(), "prompt": ["a", "b"], "text_prompt_mask": np.ones((2, 3), bool)}
    np.testing.assert_array_equal(np.asarray(model.sample_actions(legit, noise=pi0_io()["noise"])),
                                  np.asarray(model.sample_actions(pi0_observation(), noise=pi0_io()["noise"])))
