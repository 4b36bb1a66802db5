"""big_vision's PaliGemma checkpoints (`pt_224.npz`, ...): a flat `.npz` of float arrays, read with numpy alone.

The keys are big_vision's parameter paths joined by `/` under `params/`: `params/img/...` (SigLIP, blocks stacked over
depth, incl. its `head` to the LLM width) and `params/llm/...` (Gemma, layers stacked), which openpi's
`PaliGemmaWeightLoader` unflattens into its `PaliGemma` module. So `params/<rest>` is this project's
`PaliGemma/<rest>`. openpi fills keys the file lacks with random initial values; here a missing or unexpected key is
an error naming the file and the keys. Nothing is unpickled (`allow_pickle=False`); shapes come from the members'
`.npy` headers, and the arrays are read one at a time, cast to the target dtype and placed in their sharding before
the next is read, so peak host memory is the restored parameters plus one array (PaliGemma's largest: the 257,152 x
2,048 embedding, 2.1 GB as float32).
"""

from __future__ import annotations

import pathlib
import zipfile
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from multinet_jax.weights.trees import CheckpointError, check_finite, check_layout, flatten_params, load_progress, unflatten_params

KEY_ROOT = "params"
MODEL_ROOT = "PaliGemma"


def is_big_vision_npz(path: str) -> bool:
    """A local `.npz` file (the registry's layout test; what is inside is checked when it loads, so a truncated or
    foreign npz fails naming its file and what is wrong)."""
    return "://" not in path and pathlib.Path(path).suffix == ".npz" and pathlib.Path(path).is_file()


def model_path(key: str) -> str:
    """`params/img/...` -> `PaliGemma/img/...`."""
    return f"{MODEL_ROOT}/{key.removeprefix(KEY_ROOT + '/')}"


def npz_key(path: str) -> str:
    """`PaliGemma/img/...` -> `params/img/...`."""
    return f"{KEY_ROOT}/{path.removeprefix(MODEL_ROOT + '/')}"


def read_shapes(path: str | pathlib.Path) -> dict[str, tuple[int, ...]]:
    """{npz key: shape} from the members' `.npy` headers, without reading any array; non-float arrays are refused."""
    shapes = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read_header(handle)
                key = member.removesuffix(".npy")
                if dtype.kind != "f":
                    raise CheckpointError(f"{path}: {key}: dtype {dtype} is not floating point")
                shapes[key] = tuple(shape)
    except (OSError, zipfile.BadZipFile, ValueError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path}: not a readable npz ({type(error).__name__}: {error})")
    if not shapes:
        raise CheckpointError(f"{path}: the npz holds no arrays")
    return shapes


def checkpoint_shapes(path: str | pathlib.Path) -> dict[str, tuple[int, ...]]:
    """{model path: shape} of the `params/` arrays (for `configs.infer_paligemma_config`)."""
    shapes = read_shapes(path)
    if not any(key.startswith(f"{KEY_ROOT}/") for key in shapes):
        raise CheckpointError(f"{path}: no {KEY_ROOT}/... keys: not a big_vision checkpoint (has e.g. {sorted(shapes)[:3]})")
    return {model_path(key): shape for key, shape in shapes.items()}


def restore_params(
    path: str | pathlib.Path, expected: Mapping[str, Any], shardings: Mapping[str, Any], *, dtype: str = "float32"
) -> dict[str, Any]:
    """The parameters of `expected` (nested ShapeDtypeStructs, `PaliGemma/...`) from the npz, as `dtype`, placed per
    `shardings`. CheckpointError names the file and the missing / unexpected keys, the mismatched shapes or the arrays
    holding NaN or inf."""
    expected_flat = {npz_key(path_): tuple(leaf.shape) for path_, leaf in flatten_params(expected).items()}
    sharding_flat = {npz_key(path_): value for path_, value in flatten_params(shardings).items()}
    check_layout(path, read_shapes(path), expected_flat)
    target = jnp.dtype(dtype)
    restored = {}
    try:
        with np.load(path, allow_pickle=False) as arrays, load_progress(path, expected_flat, target) as progress:
            for key in sorted(expected_flat):
                array = arrays[key].astype(target)
                check_finite(path, {key: array})  # after the cast, as the orbax and safetensors readers do
                restored[model_path(key)] = jax.block_until_ready(jax.device_put(array, sharding_flat[key]))
                progress.update(array.nbytes)
                del array  # the host copy goes before the next array is read
    except (OSError, zipfile.BadZipFile, ValueError) as error:  # a truncated member fails here
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path}: could not read the arrays (truncated or corrupt?): {type(error).__name__}: {error}")
    return unflatten_params(restored)


def save_npz(params: Mapping[str, Any], path: str | pathlib.Path) -> pathlib.Path:
    """Write `{"PaliGemma": ...}` parameters as big_vision does: a flat, uncompressed npz of `params/...` float32 keys."""
    flat = {npz_key(path_): np.asarray(leaf, np.float32) for path_, leaf in flatten_params(params).items()}
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **flat)
    return path
