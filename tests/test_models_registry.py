"""The model interface and the family registry: checkpoint formats are recognized, every family implements the
interface."""

from __future__ import annotations

import enum
import json
import types

import numpy as np
import pytest

from decoding_helpers import fast_model
from conftest import REPO_ROOT, shared_path
from models_helpers import pi0_checkpoint, pi0_observation
from openvla_helpers import openvla_dir
from multinet_jax import domains, weights
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
    assert isinstance(model, Model) and model.family == "pi0"
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


def test_each_openpi_family_unnormalizes_its_actions_as_openpis_data_configs_decide():
    """openpi's `DataConfigFactory.create_base_config` sets `use_quantile_norm` with one expression of the model type
    (tests/fixtures/openpi_published_configs.json: its source and openpi's `ModelType` values, parsed from openpi's
    files by generate_openpi_published_configs.py.txt), evaluated here for each of openpi's model types, whose values
    are this registry's family names: quantiles where it is true, z-scores where it is false."""
    fixture = json.loads((REPO_ROOT / "tests" / "fixtures" / "openpi_published_configs.json").read_text())
    model_type = enum.Enum("ModelType", fixture["model_types"])
    for member in model_type:
        model_config = types.SimpleNamespace(model_type=member)
        quantiles = eval(fixture["use_quantile_norm"], {"ModelType": model_type, "model_config": model_config})  # noqa: S307
        expected = "openpi_quantiles" if quantiles else "mean_std"
        assert registry.family(member.value).action_normalization == expected, member


def test_the_other_families_unnormalize_with_their_publishers_rules():
    """SmolVLA's LeRobot MEAN_STD normalizer; OpenVLA's and Magma's bounds rule; PaliGemma acts not."""
    rules = {name: registry.family(name).action_normalization for name in ("openvla", "magma", "paligemma", "smolvla")}
    assert rules == {"openvla": "quantiles", "magma": "quantiles", "paligemma": None, "smolvla": "lerobot_mean_std"}


def test_openpis_quantile_and_z_score_rules_give_what_openpis_own_unnormalize_gives():
    """tests/fixtures/openpi_unnormalize.json: openpi's `Unnormalize._unnormalize_quantile` / `_unnormalize` run on
    actions with the tiny checkpoint's statistics (generate_openpi_unnormalize.py.txt)."""
    from conftest import REPO_ROOT

    fixture = json.loads((REPO_ROOT / "tests" / "fixtures" / "openpi_unnormalize.json").read_text())
    actions, stats = np.asarray(fixture["actions"]), fixture["stats"]
    for rule, expected in (("openpi_quantiles", fixture["quantiles"]), ("mean_std", fixture["z_score"])):
        np.testing.assert_allclose(domains.ActionNorm(rule, stats)(actions), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="no q01 / q99, which openpi's quantile rule"):
        domains.ActionNorm("openpi_quantiles", {**stats, "q01": None})(actions)


def test_an_asset_without_action_quantiles_is_refused_for_the_quantile_families_only(tmp_path):
    """openpi's norm_stats.json may leave q01 / q99 null: Pi0-FAST's actions (quantile rule) cannot be unnormalized
    then, which the preflight question says before the weights load; Pi0's (z-score) can."""
    import shutil

    for model in ("fast", "pi0"):
        copy = shutil.copytree(shared_path("openpi_reference", model, "ckpt", "0"), tmp_path / model)
        stats_file = copy / "assets" / "tiny_robot" / "norm_stats.json"
        raw = json.loads(stats_file.read_text())
        raw["norm_stats"]["actions"]["q01"] = None
        stats_file.write_text(json.dumps(raw))
        problem = registry.family(registry.family_of(copy)).missing_action_stats(str(copy), "tiny_robot")
        if model == "fast":
            assert problem == (f"{stats_file}: norm_stats['actions'] has no q01 / q99, which openpi's quantile rule for "
                               "pi0_fast's actions needs")
        else:
            assert problem is None
