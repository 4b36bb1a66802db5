"""openpi's published checkpoints load with the settings their training configs gave them (what shapes cannot tell)."""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest

from conftest import REPO_ROOT
from models_helpers import openpi_checkpoint
from multinet_jax import assets
from multinet_jax.models import load_model, openpi_checkpoint as published
from multinet_jax.weights import CheckpointError

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "openpi_published_configs.json"


# What a config sets that shapes cannot tell (`configs.infer_config` overrides), and what they tell (`pi05`, the
# Gemma variants: a LoRA variant's extra parameters are refused by the loader's path check).
SHAPE_BLIND = ("action_horizon", "action_dim", "max_token_len", "discrete_state_input")
READ_FROM_SHAPES = ("pi05", "paligemma_variant", "action_expert_variant")


def _trained_family(config: dict) -> str:
    """The family an openpi TrainConfig trains: its model class, and `pi05` for Pi0Config."""
    if config["model"] == "pi0_fast.Pi0FASTConfig":
        return "pi0_fast"
    assert config["model"] == "pi0_config.Pi0Config", config["model"]
    return "pi05" if config["settings"].get("pi05") else "pi0"


def test_each_config_is_what_openpis_training_config_of_that_name_sets():
    """tests/fixtures/openpi_published_configs.json is openpi's config.py parsed (generate_openpi_published_configs):
    every TrainConfig is in the table with the family it trains and the settings shapes cannot tell; the published
    base checkpoints, which have no TrainConfig, with their family by name and openpi's defaults."""
    fixture = json.loads(FIXTURE.read_text())
    assert fixture["names"] == list(assets.OPENPI_CHECKPOINT_NAMES)  # a new published name needs the fixture again
    debug = {name for name, config in fixture["configs"].items() if config["data"] == "FakeDataConfig()"}
    assert debug == {"debug", "debug_pi05", "debug_restore"}  # openpi's own tests' configs: not recognized
    assert set(published.OPENPI_CONFIGS) == (set(fixture["configs"]) - debug) | set(fixture["names"])
    for name, config in fixture["configs"].items():
        if name in debug:
            continue
        assert set(config["settings"]) <= {*SHAPE_BLIND, *READ_FROM_SHAPES}, name
        expected = {key: value for key, value in config["settings"].items() if key in SHAPE_BLIND}
        assert (published.OPENPI_CONFIGS[name].family, dict(published.OPENPI_CONFIGS[name].settings)) == \
            (_trained_family(config), expected), name
    for name in set(fixture["names"]) - set(fixture["configs"]):
        assert name.endswith("_base") and published.OPENPI_CONFIGS[name].settings == {}, name
        assert published.OPENPI_CONFIGS[name].family == name.removesuffix("_base"), name


def _in_the_cache(cache: pathlib.Path, model: str, name: str) -> pathlib.Path:
    """A tiny openpi checkpoint where `assets.resolve` mirrors gs://openpi-assets/checkpoints/<name>."""
    return shutil.copytree(openpi_checkpoint(model), cache / "gs" / "openpi-assets" / "checkpoints" / name)


def test_a_published_checkpoint_loads_with_its_training_settings_unless_told(tmp_path, monkeypatch):
    monkeypatch.setenv("MULTINET_JAX_CACHE", str(tmp_path / "cache"))
    droid = _in_the_cache(tmp_path / "cache", "pi0", "pi0_droid")
    assert load_model(droid).config.action_horizon == 10  # openpi's default is 50
    assert load_model(droid / "params").config.action_horizon == 10
    assert load_model(droid, action_horizon=4).config.action_horizon == 4  # what the caller says wins
    fast = load_model(_in_the_cache(tmp_path / "cache", "fast", "pi0_fast_libero")).config
    assert (fast.action_dim, fast.action_horizon, fast.max_token_len) == (7, 10, 180)  # defaults 32, 32, 250


def test_the_config_is_read_from_a_published_folder_anywhere_and_from_openpis_training_output(tmp_path):
    """Where openpi's own download cache keeps pi0_droid, a copy of it, a link to it, and a fine-tune trained with
    openpi's `pi0_fast_droid` config (`checkpoints/<config>/<exp name>/<step>`): each gets its config's settings."""
    openpi_cache = shutil.copytree(openpi_checkpoint("pi0"), tmp_path / ".cache" / "openpi" / "openpi-assets" / "checkpoints" / "pi0_droid")
    assert load_model(openpi_cache).config.action_horizon == 10
    (tmp_path / "link").symlink_to(openpi_cache)
    assert published.openpi_config_name(tmp_path / "link") == "pi0_droid"  # the folder the link points at
    fine_tune = shutil.copytree(openpi_checkpoint("fast"), tmp_path / "checkpoints" / "pi0_fast_droid" / "my_run" / "2999")
    assert (load_model(fine_tune / "params").config.action_dim, load_model(fine_tune).config.action_horizon) == (8, 10)
    # a config openpi's examples fine-tune with, published as no checkpoint
    full_droid = shutil.copytree(openpi_checkpoint("fast"), tmp_path / "checkpoints" / "pi0_fast_full_droid_finetune" / "a" / "5000")
    fast = load_model(full_droid).config
    assert (fast.action_dim, fast.action_horizon, fast.max_token_len) == (8, 16, 180)
    for own in (tmp_path / "checkpoints" / "pi0_fast_droid" / "my_run", tmp_path / "pi0_fast_droid_v2" / "0", tmp_path / "a" / "1",
                tmp_path / "pi0_fast_full_droid_finetune", tmp_path / "debug", tmp_path / "debug" / "a" / "1"):
        assert published.openpi_config_name(own) is None, own
    assert load_model(openpi_checkpoint("pi0")).config.action_horizon == 50  # openpi's default: a path naming no config


def test_a_folder_named_for_another_familys_config_is_refused(tmp_path):
    """A Pi0 in a folder named pi0_fast_droid would otherwise be sampled with FAST's action dim 8, refused by the
    shapes in words about action_dim; named pi05_droid it would take Pi0.5's horizon silently."""
    misnamed = shutil.copytree(openpi_checkpoint("pi0"), tmp_path / "pi05_droid")
    with pytest.raises(CheckpointError, match=r"pi05_droid: its path names openpi's pi05_droid config \(a pi05\), but its "
                                              r"parameters are a pi0's: rename its folder"):
        load_model(misnamed)


def test_pi05_libero_reads_no_state_in_its_prompt(tmp_path):
    """openpi's pi05_libero (`discrete_state_input=False`): Pi0's prompt format, no state prompts to build."""
    libero = shutil.copytree(openpi_checkpoint("pi05"), tmp_path / "pi05_libero")
    model = load_model(libero)
    assert (model.config.pi05, model.config.discrete_state_input, model.config.action_horizon) == (True, False, 10)
    assert model.action_prompts(None, normalize_state=True, source=str(libero)) is None
    assert load_model(openpi_checkpoint("pi05")).config.discrete_state_input is True  # openpi's default for Pi0.5
