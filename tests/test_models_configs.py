"""Full-size parameter trees equal openpi's (`param_specs/*.tsv`), and configs are inferred from shapes."""

from __future__ import annotations

import dataclasses
import math

import jax
import pytest

from conftest import shared_path
from multinet_jax import weights
from multinet_jax.models import (configs, magma_checkpoint, openvla_checkpoint, param_shapes, registry,
                                 smolvla_checkpoint)
from models_helpers import openpi_checkpoint, pi0_checkpoint


def read_param_spec(name: str) -> dict[str, tuple[int, ...]]:
    """`path<TAB>(shape)<TAB>dtype<TAB>count` lines of openpi's `nnx.eval_shape` dump -> {path: shape}."""
    spec = {}
    for line in shared_path("openpi_reference", "param_specs", name).read_text().splitlines():
        if line and not line.startswith("#"):
            path, shape, _, count = line.split("\t")
            dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
            assert dims and int(count) == math.prod(dims), line
            spec[path] = dims
    return spec


def flat_shapes(config) -> dict[str, tuple[int, ...]]:
    return {path: tuple(leaf.shape) for path, leaf in weights.flatten_params(param_shapes(config)).items()}


FULL_SIZE = [("pi0_full", "pi0_full_size.tsv"), ("pi05_full", "pi05_full_size.tsv"), ("pi0_fast_full", "pi0_fast_full_size.tsv")]


@pytest.mark.parametrize(("config_name", "spec_name"), FULL_SIZE)
def test_full_size_tree_equals_openpi(config_name, spec_name):
    """`jax.eval_shape` of our init against openpi's `nnx.eval_shape` dump: every path and shape."""
    assert flat_shapes(configs.get_config(config_name)) == read_param_spec(spec_name)


@pytest.mark.parametrize(("config_name", "spec_name"), FULL_SIZE)
def test_infer_config_from_full_size_shapes(config_name, spec_name):
    assert configs.infer_config(read_param_spec(spec_name)) == configs.get_config(config_name)


def test_pi05_full_size_has_openpi_defaults():
    config = configs.infer_config(read_param_spec("pi05_full_size.tsv"))
    assert config.pi05 and config.max_token_len == 200 and config.action_horizon == 50
    # An explicit max_token_len still wins over Pi0.5's default.
    assert configs.infer_config(read_param_spec("pi05_full_size.tsv"), max_token_len=64).max_token_len == 64


def test_discrete_state_input_defaults_to_pi05_as_openpis_config_sets_it():
    """openpi's `Pi0Config.__post_init__`: discrete_state_input = pi05 unless given; Pi0 has no state prompt format."""
    assert configs.Pi0Config().discrete_state_input is False and configs.Pi0Config(pi05=True).discrete_state_input is True
    assert configs.Pi0Config(pi05=True, discrete_state_input=False).discrete_state_input is False
    with pytest.raises(ValueError, match="discrete_state_input=True is Pi0.5's prompt format"):
        configs.Pi0Config(discrete_state_input=True)


def test_infer_config_from_fixture_checkpoint_is_pi0_tiny():
    # The fixture README: SigLIP 48/2/96/3, LLM 64/3/128/4 heads/1 KV/16, expert 32/3/48, vocab 1024.
    inferred = configs.infer_config(weights.checkpoint_shapes(pi0_checkpoint()))
    assert inferred == configs.get_config("pi0_tiny")


def test_infer_config_overrides_what_shapes_cannot_tell():
    inferred = configs.infer_config(read_param_spec("pi0_full_size.tsv"), action_horizon=10, dtype="bfloat16")
    assert inferred == dataclasses.replace(configs.get_config("pi0_full"), action_horizon=10, dtype="bfloat16")


def test_infer_config_from_pi05_fixture_checkpoint_is_pi05_tiny():
    inferred = configs.infer_config(weights.checkpoint_shapes(openpi_checkpoint("pi05")))
    assert inferred == configs.get_config("pi05_tiny")


def test_unrelated_tree_is_rejected_with_its_paths():
    with pytest.raises(ValueError, match="not a Pi0/Pi0.5/Pi0-FAST checkpoint: missing .*encoder/kernel"):
        configs.infer_config({"encoder/kernel": (3, 4)})


@pytest.mark.parametrize(
    ("spec_name", "dropped", "model"),
    [("pi0_full_size.tsv", "action_in_proj", "a Pi0"), ("pi05_full_size.tsv", "time_mlp_out", "a Pi0.5")],
)
def test_expert_without_action_head_is_rejected(spec_name, dropped, model):
    shapes = {p: s for p, s in read_param_spec(spec_name).items() if not p.startswith(dropped)}
    with pytest.raises(ValueError, match=f"{model} needs both the action expert .*'{dropped}': False"):
        configs.infer_config(shapes)


def test_experts_must_share_heads_and_depth():
    with pytest.raises(ValueError, match="share"):
        configs.Pi0Config(paligemma=configs.GEMMA_2B, action_expert=configs.GEMMA_TINY_EXPERT)


def test_pi0_action_dim_override_must_equal_the_checkpoints():
    spec = read_param_spec("pi0_full_size.tsv")
    assert configs.infer_config(spec, action_dim=32) == configs.get_config("pi0_full")
    with pytest.raises(ValueError, match=r"action_dim=14 but this Pi0 checkpoint's action projections have action_dim 32"):
        configs.infer_config(spec, action_dim=14)


@pytest.mark.parametrize("field", ["action_horizon", "action_dim", "max_token_len"])
@pytest.mark.parametrize("value", [0, -1])
def test_sizes_must_be_positive(field, value):
    for name in ("pi0_tiny", "pi0_fast_tiny"):
        with pytest.raises(ValueError, match=rf"\.{field} must be a positive integer, got {value}"):
            configs.get_config(name, **{field: value})


@pytest.mark.parametrize("family, named, config_name", [
    ("pi0", configs.NAMED_CONFIGS, "pi0_tiny"), ("openvla", openvla_checkpoint.NAMED_CONFIGS, "openvla_tiny"),
    ("magma", magma_checkpoint.NAMED_CONFIGS, "magma_tiny"), ("smolvla", smolvla_checkpoint.NAMED_CONFIGS, "smolvla_tiny")])
def test_param_shapes_trace_once_per_config_and_each_caller_gets_its_own_tree(family, named, config_name, monkeypatch):
    """`param_shapes` keys a cache on the config: every named config must hash, a second call must trace nothing,
    and a caller changing its tree must not change the next caller's."""
    checkpoint_format = registry.checkpoint_format(family)
    for name in named:
        hash(checkpoint_format.named_config(name, "bfloat16"))
    config = dataclasses.replace(checkpoint_format.named_config(config_name, "float32"), dtype="bfloat16")
    first = checkpoint_format.param_shapes(config)
    traces = []
    real_eval_shape = jax.eval_shape
    monkeypatch.setattr(jax, "eval_shape", lambda *args, **kwargs: traces.append(1) or real_eval_shape(*args, **kwargs))
    first.clear()
    second = checkpoint_format.param_shapes(config)
    assert not traces and second and second == checkpoint_format.param_shapes(config)
    assert {leaf.dtype for leaf in jax.tree.leaves(second)} == {jax.numpy.dtype("bfloat16")}
