"""The model interface and the family registry: layouts are recognized, every family implements the interface."""

from __future__ import annotations

import numpy as np
import pytest

from decoding_helpers import fast_model
from conftest import shared_path
from models_helpers import pi0_checkpoint, pi0_observation
from openvla_helpers import openvla_dir
from multinet_jax import weights
from multinet_jax.models import InferenceOptions, Model, load_model, registry


def test_openpi_layout_is_recognized_as_the_openpi_family():
    assert registry.family_of(pi0_checkpoint()).layout == "openpi"
    assert registry.family_of(f"{pi0_checkpoint()}/params").layout == "openpi"
    assert registry.family_of("gs://openpi-assets/checkpoints/pi0_base").layout == "openpi"
    assert {"pi0", "pi0_fast"} <= set(registry.model_kinds())


def test_model_kind_is_read_from_the_layout_and_parameter_shapes():
    """What `eval` infers when --model is left out: every family's kind, from headers alone (no arrays)."""
    fixtures = shared_path("openpi_reference")
    assert registry.model_kind(pi0_checkpoint()) == registry.model_kind(f"{pi0_checkpoint()}/params") == "pi0"
    assert registry.model_kind(fixtures / "pi05" / "ckpt" / "0") == "pi05"
    assert registry.model_kind(fixtures / "fast" / "ckpt" / "0") == "pi0_fast"
    assert registry.model_kind(openvla_dir()) == "openvla"
    registry.check_model_kind(fixtures / "pi05" / "ckpt" / "0", "pi05")
    with pytest.raises(weights.CheckpointError, match=r"holds a pi0_fast model \(from its parameters\), but --model=pi0;"):
        registry.check_model_kind(fixtures / "fast" / "ckpt" / "0", "pi0")


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


def test_unknown_layout_and_dtype_fail_with_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(weights.CheckpointError, match=r"not a checkpoint layout this project reads \(known: openpi"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_model(pi0_checkpoint(), dtype="float16")


def test_a_layout_registers_once():
    family = registry.families()[0]
    with pytest.raises(ValueError, match="already registered"):
        registry.register(family)
