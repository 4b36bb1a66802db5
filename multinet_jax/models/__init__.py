"""The model families: `load_model` for any checkpoint the registry recognizes, `init_params` for random openpi models.

    model = load_model("gs://openpi-assets/checkpoints/pi0_base", dtype="bfloat16")
    actions = model.sample_actions(observation, rng=jax.random.key(0))   # [b, horizon, action_dim]

`registry` names the family a checkpoint holds and the checkpoint format it is stored in; every family returns an
`interface.Model`. This package only re-exports, lazily, so that `models.registry` (the family names the CLI's flags
list) imports without JAX; each name lives in the module listed in `_EXPORTS`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_model": "registry",
    "init_params": "openpi_checkpoint",
    "param_shapes": "openpi_checkpoint",
    "build_model": "openpi_checkpoint",
    "InferenceOptions": "interface",
    "Model": "interface",
    "Pi0Model": "pi0",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """A re-exported name, or a submodule (`models.configs`) imported on first use."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
