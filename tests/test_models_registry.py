"""The model interface and the family registry: checkpoint formats are recognized, every family implements the
interface."""

from __future__ import annotations

import numpy as np
import pytest

from decoding_helpers import fast_model
from conftest import shared_path
from models_helpers import pi0_checkpoint, pi0_observation
from openvla_helpers import openvla_dir
from multinet_jax import weights
from multinet_jax.models import InferenceOptions, Model, load_model, registry


def test_openpi_checkpoints_are_recognized_as_the_openpi_format():
    assert registry.format_of(pi0_checkpoint()).name == "openpi"
    assert registry.format_of(f"{pi0_checkpoint()}/params").name == "openpi"
    assert registry.format_of("gs://openpi-assets/checkpoints/pi0_base").name == "openpi"
    assert {name for name in registry.family_names() if registry.family(name).checkpoint_format == "openpi"} == {
        "pi0", "pi05", "pi0_fast"}


def test_the_family_is_read_from_the_format_and_parameter_shapes():
    """What `eval` infers when --model is left out: every family, from headers alone (no arrays)."""
    fixtures = shared_path("openpi_reference")
    assert registry.family_of(pi0_checkpoint()) == registry.family_of(f"{pi0_checkpoint()}/params") == "pi0"
    assert registry.family_of(fixtures / "pi05" / "ckpt" / "0") == "pi05"
    assert registry.family_of(fixtures / "fast" / "ckpt" / "0") == "pi0_fast"
    assert registry.family_of(openvla_dir()) == "openvla"
    registry.check_family(fixtures / "pi05" / "ckpt" / "0", "pi05")
    with pytest.raises(weights.CheckpointError, match=r"holds a pi0_fast model \(from its parameters\), but --model=pi0;"):
        registry.check_family(fixtures / "fast" / "ckpt" / "0", "pi0")


def test_pi0_model_implements_the_interface_and_predict_actions_is_sample_actions():
    model = load_model(pi0_checkpoint())
    assert isinstance(model, Model) and model.family == "pi0" and model.action_normalization == "mean_std"
    observation = pi0_observation()
    options = InferenceOptions(num_flow_steps=3)
    predicted = model.predict_actions(observation, rng=None, options=options)
    np.testing.assert_array_equal(predicted, np.asarray(model.sample_actions(observation, num_steps=3)))


def test_pi0_fast_model_implements_the_interface():
    model = fast_model()
    assert isinstance(model, Model) and model.family == "pi0_fast"


def test_unknown_format_and_dtype_fail_with_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(weights.CheckpointError, match=r"not a checkpoint format this project reads \(known: openpi"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_model(pi0_checkpoint(), dtype="float16")


def test_a_format_and_a_family_register_once():
    with pytest.raises(ValueError, match="already registered"):
        registry.register_format(registry.formats()[0])
    with pytest.raises(ValueError, match="already registered"):
        registry.register_family(registry.family("pi0"))
    with pytest.raises(ValueError, match="unknown checkpoint format"):
        registry.register_family(registry.Family("new", "no_such_format", "a checkpoint"))
