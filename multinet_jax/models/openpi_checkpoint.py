"""openpi's checkpoint format (an orbax `params/` tree with `assets/<asset id>/norm_stats.json`) -> Pi0, Pi0.5 or
Pi0-FAST; and the parameter tree of every openpi-tree config (PaliGemma's too: `{"PaliGemma": ...}`).

    model = load(checkpoint, dtype="bfloat16", action_horizon=10)    # what `registry.load_model` calls

The family (Pi0; Pi0.5, recognised by its `time_mlp_in`; or Pi0-FAST) and every size come from the parameter
shapes (`configs.infer_config`); what shapes cannot tell (action horizon, max token length, FAST's action dim)
is what the openpi training config the checkpoint's path names sets (`OPENPI_CONFIGS`, `openpi_config_name`:
a published checkpoint's folder, or a fine-tune's `<config>/<exp>/<step>`), else openpi's defaults, and can be passed
as keyword overrides.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh

from multinet_jax import assets, sharding, weights
from multinet_jax.models import configs, registry
from multinet_jax.models.backbone import PaliGemma
from multinet_jax.models.configs import ModelConfig, Pi0Config, Pi0FastConfig, shapes_once_per_config
from multinet_jax.models.pi0 import Pi0, Pi0Model
from multinet_jax.models.pi0_fast import Pi0FastModel


@dataclasses.dataclass(frozen=True)
class OpenpiConfig:
    """What one of openpi's configs tells of the checkpoints trained with it that parameter shapes cannot: the family
    it trains, the model settings it gives beyond openpi's defaults (`configs.infer_config` overrides) and the frame of
    the actions it trains on, with the words saying so (None for a base checkpoint: its frame is that of the
    statistics picked, `ASSET_FRAMES`)."""

    family: str
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    frame: tuple[str, str] | None = None


_DROID_VELOCITY = ("joint_velocity", "DROID's joint velocities and gripper")
_DROID_POSITION = ("joint_position", "DROID's joint positions and gripper (as deltas from the state)")
_ALOHA = ("joint_position", "ALOHA's joint angles and grippers")
_LIBERO = ("ee_delta", "LIBERO's end-effector deltas")
_LIBERO_LESS_STATE = ("state_relative", "LIBERO's end-effector deltas less the state (extra_delta_transform=True; "
                                        "openpi's policy adds the state back)")
_FAST_LIBERO = {"action_dim": 7, "action_horizon": 10, "max_token_len": 180}
# openpi's published checkpoints (the base ones have no training config) and every TrainConfig of its
# src/openpi/training/config.py (15a9616), those its README and examples fine-tune with included: a fine-tune's
# training output is named for its config. Not its debug configs (fake data, dummy sizes), whose names ("debug")
# would claim folders of any model. The frames follow each config's `data=` (its robot's data config and
# transforms; DROID's action spaces per docs/norm_stats.md). tests/fixtures/openpi_published_configs.json holds what a
# parse of openpi's files gives, and the tests compare.
OPENPI_CONFIGS: dict[str, OpenpiConfig] = {
    "pi0_base": OpenpiConfig("pi0"), "pi0_fast_base": OpenpiConfig("pi0_fast"), "pi05_base": OpenpiConfig("pi05"),
    **{name: OpenpiConfig("pi0", frame=_ALOHA)
       for name in ("pi0_aloha", "pi0_aloha_towel", "pi0_aloha_tupperware", "pi0_aloha_pen_uncap", "pi0_aloha_sim")},
    **{name: OpenpiConfig("pi05", frame=_ALOHA) for name in ("pi05_aloha", "pi05_aloha_pen_uncap")},
    "pi0_droid": OpenpiConfig("pi0", {"action_horizon": 10}, _DROID_VELOCITY),
    "pi0_fast_droid": OpenpiConfig("pi0_fast", {"action_dim": 8, "action_horizon": 10}, _DROID_VELOCITY),
    "pi05_droid": OpenpiConfig("pi05", {"action_horizon": 15}, _DROID_VELOCITY),
    "pi0_fast_full_droid_finetune": OpenpiConfig("pi0_fast", {"action_dim": 8, "action_horizon": 16, "max_token_len": 180},
                                                 _DROID_POSITION),
    "pi05_full_droid_finetune": OpenpiConfig("pi05", {"action_dim": 32, "action_horizon": 16}, _DROID_POSITION),
    "pi05_droid_finetune": OpenpiConfig("pi05", {"action_dim": 32, "action_horizon": 16}, _DROID_VELOCITY),
    "pi0_libero": OpenpiConfig("pi0", frame=_LIBERO_LESS_STATE),
    "pi0_libero_low_mem_finetune": OpenpiConfig("pi0", frame=_LIBERO_LESS_STATE),
    "pi0_fast_libero": OpenpiConfig("pi0_fast", _FAST_LIBERO, _LIBERO_LESS_STATE),
    "pi0_fast_libero_low_mem_finetune": OpenpiConfig("pi0_fast", _FAST_LIBERO, _LIBERO_LESS_STATE),
    "pi05_libero": OpenpiConfig("pi05", {"action_horizon": 10, "discrete_state_input": False}, _LIBERO),
}


def openpi_config_name(checkpoint: str | pathlib.Path) -> str | None:
    """The openpi config (`OPENPI_CONFIGS`) a checkpoint's path names, else None: a published checkpoint's layout
    `<name>/params` wherever the folder was put (this evaluator's asset cache, openpi's own
    `~/.cache/openpi/openpi-assets/checkpoints/<name>`, a `gsutil cp -r` copy), or openpi's training output
    `<checkpoint_base_dir>/<name>/<exp name>/<step>/params` (`TrainConfig.checkpoint_dir`: a fine-tune trained with
    that config). The path as given is asked first, then with its links resolved."""
    for path in dict.fromkeys((pathlib.Path(checkpoint).absolute(), pathlib.Path(checkpoint).resolve())):
        folder = path.parent if path.name == "params" else path
        if folder.name in assets.OPENPI_CHECKPOINT_NAMES:
            return folder.name
        if folder.name.isdigit() and folder.parent.parent.name in OPENPI_CONFIGS:
            return folder.parent.parent.name
    return None


def training_settings(checkpoint: str | pathlib.Path, held_family: str) -> dict[str, Any]:
    """The settings of the openpi config the checkpoint's path names (`openpi_config_name`; keyword overrides of
    `load` win), {} for any other path. Without them a checkpoint trained on 10-step chunks was sampled at openpi's
    default 50, and a FAST one decoded as 32 action dims instead of 8, with nothing failing. `held_family`: the
    family its parameter shapes hold, which must be the config's."""
    name = openpi_config_name(checkpoint)
    if name is None:
        return {}
    config = OPENPI_CONFIGS[name]
    if config.family != held_family:
        raise weights.CheckpointError(
            f"{checkpoint}: its path names openpi's {name} config (a {config.family}), but its parameters are a "
            f"{held_family}'s: rename its folder, so that {name}'s settings are not taken for it")
    return dict(config.settings)


# The pre-training statistics openpi ships with its base checkpoints, by asset id (docs/norm_stats.md): every robot's
# actions are its joint angles and gripper positions, DROID's its joint velocities.
ASSET_FRAMES: dict[str, tuple[str, str]] = {
    "droid": _DROID_VELOCITY,
    **dict.fromkeys(("trossen", "trossen_mobile", "franka", "ur5e", "ur5e_dual", "arx", "arx_mobile", "fibocom_mobile"),
                    ("joint_position", "joint angles and gripper positions")),
}
_TAKEN_AS_EE_DELTA = ("openpi's norm_stats.json names no action dims: taken as end-effector deltas (a Pi0 fine-tuned "
                      "on Bridge / WidowX, Act2Answer's robot)")


def action_frame(checkpoint: str | None, asset_id: str | None) -> registry.ActionFrame:
    """What the checkpoint's actions are, for Act2Answer's action probe (the registry's preflight question: no
    weights read): its openpi config's robot (`OPENPI_CONFIGS`, the config its path names), else that of the
    pre-training statistics `asset_id` (or its only asset) holds (`ASSET_FRAMES`), else end-effector deltas taken,
    as for an in-memory model (`checkpoint` None)."""
    if checkpoint is None:
        return registry.ActionFrame("ee_delta", f"an in-memory openpi model: {_TAKEN_AS_EE_DELTA}")
    name = openpi_config_name(checkpoint)
    if name is not None and OPENPI_CONFIGS[name].frame is not None:
        kind, actions = OPENPI_CONFIGS[name].frame
        return registry.ActionFrame(kind, f"{checkpoint}: openpi's {name} config acts in {actions} (its training/config.py data)")
    held = asset_ids(checkpoint)
    asset = asset_id if asset_id is not None else held[0] if len(held) == 1 else None
    assets_dir = weights.params_directory(checkpoint).parent / "assets"
    stats = assets_dir if asset is None else assets_dir / asset / "norm_stats.json"
    if asset in ASSET_FRAMES:
        kind, actions = ASSET_FRAMES[asset]
        return registry.ActionFrame(kind, f"{stats}: openpi's {asset} pre-training statistics are of {actions} (its "
                                          "docs/norm_stats.md)")
    return registry.ActionFrame("ee_delta", f"{stats}: {_TAKEN_AS_EE_DELTA}")


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


@shapes_once_per_config
def param_shapes(config: ModelConfig) -> dict[str, Any]:
    """The parameter tree of `config` as ShapeDtypeStructs (no memory: `jax.eval_shape`)."""
    return jax.eval_shape(lambda: init_params(config, jax.random.key(0)))


def named_config(name: str, dtype: str = "float32") -> ModelConfig:
    """A named config (`configs.NAMED_CONFIGS`: "pi0_tiny", "pi0_full", ...) in `dtype`."""
    return configs.get_config(name, dtype=dtype)


def random_params(config: ModelConfig, seed: int, scale: float) -> Any:
    """The parameter tree of `config` filled with `scale` * N(0, 1) from numpy's generator `seed` (host arrays)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: (rng.standard_normal(leaf.shape) * scale).astype(leaf.dtype), param_shapes(config))


def build_model(config: Pi0Config | Pi0FastConfig, params: Any, norm_stats: dict | None = None,
                mesh: Mesh | None = None, action_tokenizer: Any = None) -> Pi0Model | Pi0FastModel:
    """`Pi0Model` for a Pi0Config (Pi0 or Pi0.5), `Pi0FastModel` (with its `action_tokenizer`) for a Pi0FastConfig,
    on `mesh`."""
    if isinstance(config, Pi0FastConfig):
        return Pi0FastModel(config, params, norm_stats, mesh, action_tokenizer)
    if not isinstance(config, Pi0Config):
        raise TypeError(f"an openpi checkpoint holds Pi0, Pi0.5 or Pi0-FAST, not a {type(config).__name__}")
    if action_tokenizer is not None:
        raise ValueError("an action tokenizer is for Pi0-FAST's tokens; Pi0 and Pi0.5 predict actions by flow matching")
    return Pi0Model(config, params, norm_stats, mesh)


def write_random(directory: pathlib.Path, config_name: str, *, corpus: Any, seed: int, scale: float,
                 norm_dims: int = 32) -> pathlib.Path:
    """A random checkpoint of a named config in openpi's exact layout, with identity norm stats under the asset id
    "demo" (the demo's; `corpus` is unused: openpi checkpoints bundle no tokenizer)."""
    del corpus
    identity = {"mean": np.zeros(norm_dims), "std": np.ones(norm_dims), "q01": -np.ones(norm_dims), "q99": np.ones(norm_dims)}
    weights.save_openpi_checkpoint(random_params(named_config(config_name), seed, scale), directory,
                                   norm_stats={"actions": identity, "state": identity}, asset_id="demo")
    return pathlib.Path(directory)


def is_openpi(path: str) -> bool:
    """An openpi step directory (holding `params/`) or `params/` itself; remote (gs://) paths are openpi's."""
    if "://" in path:
        return True
    local = pathlib.Path(path)
    return (local / "params" / "_METADATA").exists() or (local / "_METADATA").exists()


def family(path: str) -> str:
    """The family an openpi checkpoint holds ("pi0", "pi05" or "pi0_fast"), from its parameter shapes (no arrays)."""
    return configs.family_name(_infer_config(path, weights.checkpoint_shapes(path)))


def _infer_config(checkpoint: str | pathlib.Path, shapes: Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """`configs.infer_config` of the checkpoint's parameter shapes; a tree it cannot read as a Pi0 / Pi0.5 / Pi0-FAST
    (one nested a level too deep, ...) is refused naming the params directory, as every other layout error is."""
    try:
        return configs.infer_config(shapes, **overrides)
    except ValueError as error:
        raise weights.CheckpointError(f"{weights.params_directory(checkpoint)}: {error}") from None


def asset_ids(checkpoint: str) -> tuple[str, ...]:
    """The asset ids whose statistics (`assets/<asset id>/norm_stats.json`) the checkpoint holds, `--asset_id`'s
    choices (the registry's preflight question: no weights read)."""
    return tuple(weights.norm_stats_asset_ids(weights.params_directory(checkpoint).parent))


def missing_action_stats(checkpoint: str, asset_id: str) -> str | None:
    """What asset `asset_id`'s norm_stats.json lacks to unnormalize actions (the registry's preflight question: no
    weights read), naming the file and key; None when it holds them. An asset may hold the state's statistics alone,
    which the loader takes (Pi0.5's state prompts read them) and `checkpoint_action_stats` then finds no `actions` in:
    only after the weights loaded. Read as the loader reads it, so a malformed file is refused here too."""
    directory = weights.params_directory(checkpoint).parent
    stats = weights.read_norm_stats(directory, asset_id)
    file = directory / "assets" / asset_id / "norm_stats.json"
    if "actions" not in stats:
        return f"{file}: norm_stats has no 'actions' key (it holds {sorted(stats)})"
    if stats["actions"].get("q01") is not None and stats["actions"].get("q99") is not None:
        return None
    held = family(checkpoint)  # from the parameter shapes: asked only where the quantiles are missing
    if registry.family(held).action_normalization == "openpi_quantiles":
        return f"{file}: norm_stats['actions'] has no q01 / q99, which openpi's quantile rule for {held}'s actions needs"
    return None


def checkpoint_config(checkpoint: str | pathlib.Path, dtype: str = "float32", *, log: bool = False,
                      **config_overrides: Any) -> Pi0Config | Pi0FastConfig:
    """The config `load` builds the checkpoint as: its parameter shapes (no arrays read), the settings of the openpi
    training config its path names (`training_settings`; logged with `log`), then `config_overrides`."""
    shapes = weights.checkpoint_shapes(checkpoint)
    settings = training_settings(checkpoint, configs.family_name(_infer_config(checkpoint, shapes)))
    if settings and log:
        logging.info("%s: openpi's %s config sets %s", checkpoint, openpi_config_name(checkpoint), settings)
    return _infer_config(checkpoint, shapes, dtype=dtype, **{**settings, **config_overrides})


def own_prompts(source: str | pathlib.Path | Pi0Model | Pi0FastModel) -> registry.OwnPrompts | None:
    """The action prompts Pi0.5 and Pi0-FAST build with the state, cut at the config's `max_token_len`; None for Pi0
    and a Pi0.5 without the state in its prompt (openpi's pi05_libero), whose prompts are the pipeline's. Of a
    checkpoint as `load` builds it (`checkpoint_config`) or of an in-memory model (the registry's question)."""
    config = source.config if isinstance(source, (Pi0Model, Pi0FastModel)) else checkpoint_config(source)
    if isinstance(config, Pi0Config) and not config.discrete_state_input:
        return None
    return registry.OwnPrompts(config.max_token_len, every_prompt=False)


def load(
    checkpoint: str | pathlib.Path,
    *,
    dtype: str = "float32",
    mesh: Mesh | None = None,
    asset_id: str | None = None,
    action_tokenizer: Any = None,
    **config_overrides: Any,
) -> Pi0Model | Pi0FastModel:
    """An openpi checkpoint (a local step dir holding `params/`, or `params/` itself) -> model.

    Parameters are restored directly as `dtype` ("float32" or "bfloat16", also the compute dtype) into the
    shardings of `mesh` (default: all devices on the "data" axis). Norm stats come from
    `assets/<asset_id>/norm_stats.json`; `asset_id` is needed only when the checkpoint holds several.
    `action_tokenizer`: Pi0-FAST's (`pi0_fast.load_action_tokenizer`), which openpi's checkpoints do not ship.
    """
    config = checkpoint_config(checkpoint, dtype, log=True, **config_overrides)
    mesh = sharding.make_mesh() if mesh is None else mesh
    expected = param_shapes(config)
    params = weights.restore_params(checkpoint, expected, sharding.param_shardings(expected, mesh), dtype=dtype)
    norm_stats = weights.read_norm_stats(weights.params_directory(checkpoint).parent, asset_id)
    return build_model(config, params, norm_stats, mesh, action_tokenizer)
