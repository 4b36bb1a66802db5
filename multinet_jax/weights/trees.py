"""What every checkpoint reader shares: flat `a/b/c` parameter paths, layout checks, bounded restore groups.

Each format's reader (`openpi.py` for orbax, `safetensors.py` for Hugging Face, ...) maps its own names to the Flax
tree's `a/b/c` paths, checks the layout against the model's expected shapes with `check_layout`, and reads arrays in
`restore_groups`: at most `RESTORE_GROUP_BYTES` (in the target dtype) in flight at once, largest first, so a reader's
transient buffers stay about one group and peak host memory stays near the parameters' own bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from multinet_jax import domains

FlatTree = dict[str, Any]
# Bytes (in the target dtype) read per group; bounds the transient read buffers to about one group.
RESTORE_GROUP_BYTES = 1 << 29
# A load shows its progress bar once it has run this long: a 7B checkpoint takes minutes, a tiny one none (and a
# checkpoint refused as it starts prints only its one-line error).
LOAD_PROGRESS_DELAY_S = 10.0


class CheckpointError(ValueError):
    """A checkpoint that cannot become the requested model; the message names the file or directory and the paths."""


@jax.jit
def _all_finite(arrays: list[jax.Array]) -> jax.Array:
    """Per array, whether every value is finite, in one program per restore group: eager `isfinite(array).all()`
    compiled two programs per leaf shape (about 2 s per process for a tiny Pi0's 28 shapes on CPU). `isfinite`
    itself, not `sum(array * 0) == 0` (3x faster to compile): that one XLA folds to 0 under fast math."""
    return jnp.stack([jnp.isfinite(array).all() for array in arrays])


def check_finite(source: Any, arrays: Mapping[str, Any]) -> None:
    """Parameters hold finite values: a flipped bit in a checkpoint file can decode to NaN or inf, which would
    otherwise surface only as a whole run of NaN predictions. Host arrays are checked on the host, device arrays
    on their devices (no copy either way)."""
    bad = [path for path, array in arrays.items() if isinstance(array, np.ndarray) and not np.isfinite(array).all()]
    on_device = [path for path, array in arrays.items() if not isinstance(array, np.ndarray)]
    if on_device:
        finite = np.asarray(_all_finite([arrays[path] for path in on_device]))
        bad += [path for path, ok in zip(on_device, finite) if not ok]
    if bad:
        raise CheckpointError(f"{source}: parameters {sorted(bad)} hold NaN or infinite values (corrupt checkpoint bytes?)")


def check_norm_stats(source: Any, stats: Any, where: str = "norm_stats") -> None:
    """Normalization statistics (nested dicts of number lists) hold finite numbers, and each mapping's entries are in
    order (`domains.ordered_stats_problem`): a NaN q01 or std would turn every unnormalized action into NaN, scored
    invalid, and a negative std or a q01 above its q99 would flip the actions, with nothing failing; and each list is
    flat (a `[d, 1]` column broadcast one row's actions into d rows). The error names the entry."""
    if isinstance(stats, Mapping):
        for key, value in stats.items():
            check_norm_stats(source, value, f"{where}[{key!r}]")
        problem = domains.ordered_stats_problem(stats)
        if problem is not None:
            raise CheckpointError(f"{source}: {where}: {problem}")
        return
    if stats is None or isinstance(stats, (str, bool)):
        return
    try:
        values = np.asarray(stats)
    except ValueError:  # a ragged list
        values = np.asarray(None, object)
    if values.dtype.kind not in "biuf":
        raise CheckpointError(f"{source}: {where} is not a number or a list of numbers")
    if not np.isfinite(values).all():
        raise CheckpointError(f"{source}: {where} holds NaN or infinite values")
    if values.ndim > 1:  # one number per dimension: a column [d, 1] would broadcast the batch into d rows
        raise CheckpointError(f"{source}: {where} has shape {values.shape}; expected one number per dimension")


def flatten_tree(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Nested mapping -> `{key tuple: leaf}`."""
    flat: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten_tree(value, (*prefix, key)))
        else:
            flat[(*prefix, key)] = value
    return flat


def unflatten_tree(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    """`{key tuple: leaf}` -> nested dicts."""
    tree: dict[str, Any] = {}
    for keys, value in flat.items():
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return tree


def flatten_params(tree: Mapping[str, Any]) -> FlatTree:
    """Nested params -> `{"a/b/c": leaf}`."""
    return {"/".join(keys): leaf for keys, leaf in flatten_tree(tree).items()}


def unflatten_params(flat: Mapping[str, Any]) -> dict[str, Any]:
    """`{"a/b/c": leaf}` -> nested params."""
    return unflatten_tree({tuple(path.split("/")): leaf for path, leaf in flat.items()})


def check_layout(source: Any, found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]]) -> None:
    """Raise CheckpointError naming `source` when the found paths or shapes differ from the model's."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source}: parameter paths differ from the model's: missing {missing}, unexpected {unexpected}")
    mismatched = [(path, tuple(expected[path]), tuple(found[path])) for path in sorted(found)
                  if tuple(found[path]) != tuple(expected[path])]
    if mismatched:
        listed = "; ".join(f"{path}: expected {want}, got {got}" for path, want, got in mismatched)
        raise CheckpointError(f"{source}: shape mismatches (path: expected, got): {listed}")


def load_progress(source: Any, shapes: Mapping[str, tuple[int, ...]], dtype: Any) -> tqdm.tqdm:
    """A bar on stderr over the bytes a reader places (`shapes` in `dtype`); each reader `update`s it per array or group."""
    total = sum(array_bytes(shape, dtype) for shape in shapes.values())
    return tqdm.tqdm(desc=f"loading {source}", total=total, unit="B", unit_scale=True,
                     dynamic_ncols=True, mininterval=1.0, delay=LOAD_PROGRESS_DELAY_S)


def array_bytes(shape: tuple[int, ...], dtype: Any) -> int:
    """Bytes of one array of `shape` in `dtype`."""
    return math.prod(shape) * np.dtype(dtype).itemsize


def restore_groups(shapes: Mapping[str, tuple[int, ...]], dtype: Any) -> list[list[str]]:
    """Paths split into groups of at most RESTORE_GROUP_BYTES as `dtype`, largest arrays first.

    Largest first so the big arrays' read buffers come and go while little of the model is resident; an array
    larger than the limit is a group of its own.
    """
    sizes = {path: array_bytes(shape, dtype) for path, shape in shapes.items()}
    groups: list[list[str]] = []
    group_bytes = 0
    for path in sorted(sizes, key=lambda path: (-sizes[path], path)):
        if not groups or group_bytes + sizes[path] > RESTORE_GROUP_BYTES:
            groups.append([])
            group_bytes = 0
        groups[-1].append(path)
        group_bytes += sizes[path]
    return groups
