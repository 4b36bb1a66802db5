"""Checkpoint readers, one per format, each mapping its names into the Flax trees of `multinet_jax.models`.

- `openpi`: openpi's orbax checkpoints (Pi0 / Pi0-FAST / Pi0.5 `params/`, `assets/*/norm_stats.json`), and writing
  them (the demo and the benchmarks build checkpoints in openpi's exact layout).
- `safetensors`: Hugging Face checkpoints (`model.safetensors` or sharded `model-0000N-of-0000M.safetensors` + index).
- `big_vision`: big_vision's PaliGemma `.npz` checkpoints (`params/img/...`, `params/llm/...`; numpy, no pickles).
- `trees`: what every reader shares: flat `a/b/c` paths, layout checks, restore groups of bounded bytes.
Every reader restores straight into the requested dtype and the mesh's shardings, one bounded group at a time.
"""

from multinet_jax.weights import big_vision, openpi, safetensors, trees
from multinet_jax.weights.openpi import (
    checkpoint_shapes,
    is_pi0_only,
    params_directory,
    norm_stats_asset_ids,
    read_norm_stats,
    read_param_metadata,
    restore_params,
    save_openpi_checkpoint,
)
from multinet_jax.weights.trees import CheckpointError, FlatTree, flatten_params, unflatten_params

__all__ = [
    "big_vision",
    "openpi",
    "safetensors",
    "trees",
    "CheckpointError",
    "FlatTree",
    "checkpoint_shapes",
    "flatten_params",
    "is_pi0_only",
    "params_directory",
    "norm_stats_asset_ids",
    "read_norm_stats",
    "read_param_metadata",
    "restore_params",
    "save_openpi_checkpoint",
    "unflatten_params",
]
