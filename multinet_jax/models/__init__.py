"""The model families: `load_model` for any checkpoint the registry recognizes, `init_params` for random openpi models.

    model = load_model("gs://openpi-assets/checkpoints/pi0_base", dtype="bfloat16")
    actions = model.sample_actions(observation, rng=jax.random.key(0))   # [b, horizon, action_dim]

`registry` maps a checkpoint's layout to its family; every family returns an `interface.Model`. For openpi
checkpoints the model type (Pi0; Pi0.5, recognised by its `time_mlp_in`; or Pi0-FAST) and every size come from the
parameter shapes (`configs.infer_config`); what shapes cannot tell (action horizon, max token length, FAST's action
dim) defaults to openpi's values and can be passed as keyword overrides, e.g. `load_model(path, action_horizon=10)`.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
from jax.sharding import Mesh

from multinet_jax import sharding, weights
from multinet_jax.models import attention, configs, registry
from multinet_jax.models.configs import ModelConfig, PaliGemmaConfig, Pi0Config, Pi0FastConfig
from multinet_jax.models.interface import InferenceOptions, Model
from multinet_jax.models.pi0 import PaliGemma, Pi0, Pi0Model
from multinet_jax.models.registry import load_model

__all__ = [
    "load_model", "load_openpi", "init_params", "param_shapes", "build_model", "attention", "configs", "registry",
    "InferenceOptions", "Model", "Pi0Model",
]


def _init(config: ModelConfig, rng: jax.Array) -> dict[str, Any]:
    """float32 parameters with openpi's tree: Pi0's full tree, or `{"PaliGemma": ...}` for Pi0-FAST and PaliGemma."""
    if isinstance(config, Pi0Config):
        return Pi0(config).init(rng, method=Pi0.init_all)["params"]
    variables = PaliGemma(config).init(rng, config.siglip.image_size, method=PaliGemma.init_all)
    return {"PaliGemma": variables["params"]}


def init_params(config: ModelConfig, rng: jax.Array) -> dict[str, Any]:
    """Random parameters (openpi-style initializers) with the real tree, in the config's dtype."""
    params = _init(config, rng)
    return jax.tree.map(lambda p: p.astype(config.dtype), params)


def param_shapes(config: ModelConfig) -> dict[str, Any]:
    """The parameter tree of `config` as ShapeDtypeStructs (no memory: `jax.eval_shape`)."""
    return jax.eval_shape(lambda: init_params(config, jax.random.key(0)))


def build_model(config: ModelConfig, params: Any, norm_stats: dict | None = None, mesh: Mesh | None = None):
    """`Pi0Model` for a Pi0Config (Pi0 or Pi0.5), `Pi0FastModel` (models/pi0_fast.py) for a Pi0FastConfig,
    `PaliGemmaModel` (models/paligemma.py, no norm stats: no actions) for a PaliGemmaConfig."""
    if isinstance(config, Pi0FastConfig):
        from multinet_jax.models.pi0_fast import Pi0FastModel

        return Pi0FastModel(config, params, norm_stats, mesh)
    if isinstance(config, PaliGemmaConfig):
        from multinet_jax.models.paligemma import PaliGemmaModel

        return PaliGemmaModel(config, params, mesh)
    return Pi0Model(config, params, norm_stats, mesh)


def load_openpi(
    checkpoint: str | pathlib.Path,
    *,
    dtype: str = "float32",
    mesh: Mesh | None = None,
    asset_id: str | None = None,
    **config_overrides: Any,
):
    """An openpi checkpoint (a local step dir holding `params/`, or `params/` itself) -> model.

    Parameters are restored directly as `dtype` ("float32" or "bfloat16", also the compute dtype) into the
    shardings of `mesh` (default: all devices on the "data" axis). Norm stats come from
    `assets/<asset_id>/norm_stats.json`; `asset_id` is needed only when the checkpoint holds several.
    """
    config = configs.infer_config(weights.checkpoint_shapes(checkpoint), dtype=dtype, **config_overrides)
    mesh = sharding.make_mesh() if mesh is None else mesh
    expected = param_shapes(config)
    params = weights.restore_params(checkpoint, expected, sharding.param_shardings(expected, mesh), dtype=dtype)
    norm_stats = weights.read_norm_stats(weights.params_directory(checkpoint).parent, asset_id)
    return build_model(config, params, norm_stats, mesh)

