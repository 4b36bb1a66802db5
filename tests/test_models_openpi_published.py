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


def test_the_settings_are_those_openpis_training_configs_give_each_published_checkpoint():
    """tests/fixtures/openpi_published_configs.json is openpi's config.py parsed (generate_openpi_published_configs);
    `pi05` is read from the parameter shapes, everything else must be the table's."""
    fixture = json.loads(FIXTURE.read_text())
    assert fixture["names"] == list(assets.OPENPI_CHECKPOINT_NAMES)  # a new published name needs the fixture again
    for name in fixture["names"]:
        openpi = fixture["configs"].get(name, {"settings": {}})["settings"]  # the base checkpoints: no training config
        assert published.PUBLISHED_SETTINGS.get(name, {}) == {key: value for key, value in openpi.items() if key != "pi05"}, name


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
    elsewhere = shutil.copytree(droid, tmp_path / "pi0_droid")  # the same name outside the cache: a checkpoint of yours
    assert load_model(elsewhere).config.action_horizon == 50


def test_pi05_libero_whose_prompt_holds_no_state_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MULTINET_JAX_CACHE", str(tmp_path / "cache"))
    libero = _in_the_cache(tmp_path / "cache", "pi05", "pi05_libero")
    with pytest.raises(CheckpointError, match=r"pi05_libero: openpi's pi05_libero reads no state in its prompt \(its "
                                              r"config's discrete_state_input=False\)"):
        load_model(libero)
