"""openpi checkpoints with orbax alone: restore `params/` into a target dtype and sharding, read norm stats, write.

openpi's training writes `<step>/params/` as an orbax PyTree (OCDBT) checkpoint of `{"params": nnx.State}`, so
every leaf path ends in `value`; exported checkpoints may hold a plain dict instead. Both load. Arrays are read
straight into the requested dtype and `NamedSharding` (orbax `ArrayRestoreArgs`): no float32 copy of the whole
model ever sits in host memory. They are read in groups of at most `trees.RESTORE_GROUP_BYTES`, largest first: one orbax
restore of the whole tree reads every array at once, and its transient read buffers then add ~65% to the model's
bytes in peak host memory (full Pi0 as bfloat16, measured: 10.9 GB peak for 6.5 GB of parameters; grouped: 7.0 GB).
Norm stats live in `<step>/assets/<asset_id>/norm_stats.json` (openpi's `normalize.py` format:
`{"norm_stats": {key: {"mean", "std", "q01", "q99"}}}`). A LoRA fine-tune's factors are merged into their weights as
they are read (`lora_factors`, `lora_delta`), in float32, then cast.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import re
import string
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from multinet_jax import fingerprints
from multinet_jax.weights.trees import (
    CheckpointError,
    array_bytes,
    check_finite,
    check_norm_stats,
    check_layout,
    flatten_params,
    flatten_tree,
    load_progress,
    restore_groups,
    unflatten_params,
    unflatten_tree,
)

# Parameters only Pi0 / Pi0.5 have: the action expert (`*_1`) and the flow-matching head.
_PI0_ONLY_ROOTS = (
    "state_proj", "action_in_proj", "action_out_proj", "action_time_mlp_in", "action_time_mlp_out", "time_mlp_in",
    "time_mlp_out",
)


def is_pi0_only(path: str) -> bool:
    """True for the action expert's `*_1` parameters and the Pi0 / Pi0.5 flow-matching head."""
    parts = path.split("/")
    # Only the LLM has experts: SigLIP's own `LayerNorm_1` / `Dense_1` belong to PaliGemma.
    is_expert_1 = parts[:2] == ["PaliGemma", "llm"] and any(part.endswith("_1") for part in parts[2:])
    return parts[0] in _PI0_ONLY_ROOTS or is_expert_1


# openpi's LoRA fine-tunes (`gemma_2b_lora` / `gemma_300m_lora`: its *_low_mem_finetune configs) keep low-rank factors
# beside each adapted weight: `lora.Einsum`'s `<module>/lora_a` and `lora_b` (its weight `<module>/w`, applied with the
# module's equation) and `lora.FeedForward`'s `<mlp>/<weight>_lora_a` and `_lora_b`. They are merged into the weight
# at load (`lora_delta`), so the model and its decode loops are unchanged.
LORA_EINSUMS = {"q_einsum": "BTD,NDH->BTNH", "kv_einsum": "BSD,2KDH->2BSKH", "qkv_einsum": "BSD,3KDH->3BSKH",
                "attn_vec_einsum": "BTNH,NHD->BTD"}  # openpi's gemma.py / gemma_fast.py, by module name
# alpha / rank of every LoRA variant openpi defines (rank 16 alpha 16, rank 32 alpha 32, no rslora: the tests read
# openpi's own get_config); a checkpoint records neither.
LORA_SCALING = 1.0


@dataclasses.dataclass(frozen=True)
class LoraFactors:
    """The factors adapting one weight, and the einsum equation the weight is applied with (None: a feed-forward
    weight, which openpi's `lora.FeedForward` applies as `x @ a @ b`, unscaled)."""

    a: str
    b: str
    equation: str | None


def lora_factors(paths: Iterable[str]) -> dict[str, LoraFactors]:
    """{adapted weight's path: its `LoraFactors`} among a checkpoint's parameter paths; a factor without its pair
    or its weight is a CheckpointError."""
    paths = set(paths)
    found = {}
    for path in sorted(paths):
        if path.endswith("/lora_a"):
            module = path.removesuffix("/lora_a")
            weight, equation = f"{module}/w", LORA_EINSUMS.get(module.rsplit("/", 1)[-1].removesuffix("_1"))
            if equation is None:
                raise CheckpointError(f"{path}: LoRA factors of an einsum openpi's models do not have ({module})")
            found[weight] = LoraFactors(path, f"{module}/lora_b", equation)
        elif path.endswith("_lora_a"):
            weight = path.removesuffix("_lora_a")
            found[weight] = LoraFactors(path, f"{weight}_lora_b", None)
    for weight, factors in found.items():
        for needed in (weight, factors.b):
            if needed not in paths:
                raise CheckpointError(f"{factors.a}: a LoRA factor without {needed} in the checkpoint")
    unpaired = sorted(path for path in paths if path.endswith(("/lora_b", "_lora_b"))
                      and path not in {factors.b for factors in found.values()})
    if unpaired:
        raise CheckpointError(f"{unpaired[0]}: a LoRA factor without its lora_a in the checkpoint")
    return found


def lora_delta(a: jax.Array, b: jax.Array, equation: str | None) -> jax.Array:
    """The change openpi's LoRA path makes to a weight stacked over layers (leading axis), as one weight:
    `x @ (w + delta)` = openpi's `x @ w + lora(x)`. Feed-forward: `a @ b`. Einsum (`lora.Einsum._make_lora_eqns`):
    `x` contracted with `a`, then the result with `b`, scaled; a label of `b` that is neither in that result nor in
    the output is summed over `b` alone (the attention output's heads: openpi sums the LoRA path over heads twice)."""
    if equation is None:
        return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)
    _, rhs, out = re.fullmatch(r"(.*),(.*)->(.*)", equation).groups()
    a_label, b_label = rhs[-2], rhs[-1]
    a_rhs, a_out, b_rhs = rhs.replace(b_label, "L"), out.replace(b_label, "L"), rhs.replace(a_label, "L")
    alone = iter("mnop")
    b_rhs = "".join(label if label in a_out or label in out else next(alone) for label in b_rhs)
    subscripts = f"Z{a_rhs},Z{b_rhs}->Z{rhs}"
    letters = dict(zip(sorted(set(subscripts) - set(",->")), string.ascii_letters))  # einsum wants letters ("2KDH")
    subscripts = "".join(letters.get(char, char) for char in subscripts)
    return LORA_SCALING * jnp.einsum(subscripts, a, b, precision=jax.lax.Precision.HIGHEST)


def params_directory(checkpoint: str | pathlib.Path) -> epath.Path:
    """The orbax `params/` directory of an openpi step dir (or `params/` itself); local or `gs://`."""
    # orbax needs absolute local paths; gs:// and other URLs pass through unchanged.
    path = fingerprints.as_path(checkpoint)
    if fingerprints.exists(path / "params" / "_METADATA"):
        return path / "params"
    if (path / "_METADATA").exists():
        return path
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    raise CheckpointError(f"{path}: neither it nor {path / 'params'} holds an orbax checkpoint (no _METADATA)")


def _model_path(keys: tuple[str, ...]) -> str:
    """Checkpoint key path -> model parameter path: drop nnx.State's `params` root and `value` leaf keys."""
    if keys[0] == "params":
        keys = keys[1:]
    if keys[-1] == "value":
        keys = keys[:-1]
    return "/".join(keys)


def read_param_metadata(checkpoint: str | pathlib.Path) -> tuple[epath.Path, dict[str, tuple[tuple[str, ...], Any]]]:
    """(params dir, {model path: (checkpoint key path, orbax ArrayMetadata)}) without reading any array."""
    directory = params_directory(checkpoint)
    try:
        # The handler's own `metadata` raises what went wrong; `Checkpointer.metadata` logs it and returns None.
        flat = flatten_tree(dict(_pytree_handler().metadata(directory)))
    except Exception as error:  # orbax raises many types for corrupt files; name the directory instead
        raise CheckpointError(f"{directory}: unreadable orbax checkpoint metadata ({type(error).__name__}: {error})")
    if not flat:
        raise CheckpointError(f"{directory}: the checkpoint holds no arrays")
    # Restoring casts to the model's dtype: integers or booleans would load as numbers no training wrote.
    dtypes = {"/".join(keys): getattr(meta, "dtype", None) for keys, meta in flat.items()}
    not_float = {path: str(dtype) for path, dtype in dtypes.items() if dtype is None or not jnp.issubdtype(dtype, jnp.floating)}
    if not_float:
        raise CheckpointError(f"{directory}: parameters that are not floating point: {dict(sorted(not_float.items())[:5])}")
    entries: dict[str, tuple[tuple[str, ...], Any]] = {}
    for keys, meta in flat.items():
        path = _model_path(keys)
        if path in entries:  # `params/.../value` and a plain copy: which one is the model's?
            raise CheckpointError(f"{directory}: parameter {path} is stored twice: {'/'.join(entries[path][0])} and "
                                  f"{'/'.join(keys)}")
        entries[path] = (keys, meta)
    return directory, entries


def checkpoint_shapes(checkpoint: str | pathlib.Path) -> dict[str, tuple[int, ...]]:
    """{model path: shape} of a checkpoint's parameters (for `configs.infer_config`)."""
    _, entries = read_param_metadata(checkpoint)
    return {path: tuple(meta.shape) for path, (_, meta) in entries.items()}


def restore_params(
    checkpoint: str | pathlib.Path,
    expected: Mapping[str, Any],
    shardings: Mapping[str, Any],
    *,
    dtype: str = "float32",
    skip: Callable[[str], bool] = lambda path: False,
) -> dict[str, Any]:
    """Restore the parameters of `expected` (nested tree of shapes) as `dtype`, placed per `shardings`.

    Checkpoint parameters for which `skip(path)` holds are not read (e.g. Pi0's action expert when a
    PaliGemma-only model is built). Raises CheckpointError listing missing/unexpected paths, shape mismatches
    (path, expected, got), or an unreadable/truncated checkpoint.
    """
    directory, entries = read_param_metadata(checkpoint)
    expected_flat = flatten_params(expected)
    sharding_flat = flatten_params(shardings)
    every_factor = lora_factors(entries)
    adapted = {weight: factors for weight, factors in every_factor.items() if not skip(weight)}
    factor_paths = {path for factors in every_factor.values() for path in (factors.a, factors.b)}
    wanted = {path: entry for path, entry in entries.items() if not skip(path) and path not in factor_paths}
    check_layout(directory, {path: tuple(meta.shape) for path, (_, meta) in wanted.items()},
                 {path: tuple(leaf.shape) for path, leaf in expected_flat.items()})
    for factors in adapted.values():  # restored beside their weight, replicated (they are small)
        for path in (factors.a, factors.b):
            wanted[path] = entries[path]
            sharding_flat[path] = _replicated(next(iter(sharding_flat.values())))

    restored: dict[str, Any] = {}
    shapes = {path: tuple(meta.shape) for path, (_, meta) in wanted.items()}
    # Adapted weights and their factors are read in float32 and merged before the cast to `dtype`.
    merged = {path for weight, factors in adapted.items() for path in (weight, factors.a, factors.b)}
    # One checkpointer, so all groups share one tensorstore context (and its B-tree node cache).
    checkpointer = ocp.Checkpointer(_pytree_handler())
    try:
        with load_progress(checkpoint, shapes, dtype) as progress:
            for group in restore_groups({path: shape for path, shape in shapes.items() if path not in merged}, dtype):
                restored.update(_restore_group(checkpointer, directory, group, wanted, sharding_flat, jnp.dtype(dtype)))
                progress.update(sum(array_bytes(shapes[path], dtype) for path in group))
            for weight, factors in adapted.items():
                group = [weight, factors.a, factors.b]
                arrays = _restore_group(checkpointer, directory, group, wanted, sharding_flat, jnp.dtype("float32"))
                restored[weight] = _merge_lora(arrays[weight], arrays[factors.a], arrays[factors.b], factors.equation,
                                               jnp.dtype(dtype), sharding_flat[weight])
                progress.update(array_bytes(shapes[weight], dtype))
    finally:
        checkpointer.close()
    return unflatten_params(restored)


def _replicated(like: Any) -> Any:
    """A sharding replicating an array over the mesh of `like` (or `like` itself, a single device's)."""
    mesh = getattr(like, "mesh", None)
    return like if mesh is None else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def _merge_lora(weight: jax.Array, a: jax.Array, b: jax.Array, equation: str | None, dtype: Any, sharding: Any) -> jax.Array:
    """`weight + lora_delta(a, b)` in float32, cast to `dtype` and placed as `sharding` (one jitted call per weight)."""
    merge = jax.jit(lambda w, a, b: (w + lora_delta(a, b, equation)).astype(dtype), out_shardings=sharding)
    return jax.block_until_ready(merge(weight, a, b))


def _restore_group(
    checkpointer: ocp.Checkpointer,
    directory: Any,
    group: list[str],
    wanted: Mapping[str, tuple[tuple[str, ...], Any]],
    sharding_flat: Mapping[str, Any],
    dtype: jnp.dtype,
) -> dict[str, Any]:
    """Read one group of parameters (model path -> array) and wait until it sits on its devices."""
    restore_args = unflatten_tree(
        {
            wanted[path][0]: ocp.ArrayRestoreArgs(
                restore_type=jax.Array, dtype=dtype, sharding=sharding_flat[path], global_shape=wanted[path][1].shape
            )
            for path in group
        }
    )
    item = unflatten_tree({wanted[path][0]: wanted[path][1] for path in group})
    try:
        group_tree = checkpointer.restore(
            directory, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
        )
    except Exception as error:  # tensorstore/orbax errors for missing or truncated chunks
        # orbax wraps tensorstore's error (which names the array and the bytes it lacks) in one that prints the
        # TensorStore spec's bound method: report tensorstore's.
        cause: BaseException = error
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise CheckpointError(
            f"{directory}: could not read the parameter arrays (truncated or corrupt?): {type(cause).__name__}: {cause}"
        )
    # device_put is asynchronous: wait, so this group's host read buffers are freed before the next is read.
    group_flat = jax.block_until_ready(flatten_tree(group_tree))
    arrays = {path: group_flat[wanted[path][0]] for path in group}
    check_finite(directory, arrays)
    return arrays


async def _settled(operation: Awaitable[Any]) -> Any:
    """`await operation`; when it fails, first wait for every read it started, so that none outlives orbax's loop.

    orbax runs each restore (and each metadata read) on an event loop of its own and closes that loop as soon as the
    first read fails (`asyncio_utils._run_sync_via_new_loop`: `run_until_complete`, then `close`), while the reads
    that `asyncio.gather` started beside it still run in tensorstore. Each then posts its result to the closed loop
    (`call_soon_threadsafe` in tensorstore's `Future.__await__` callback) or is dropped unfinished, and Python prints
    each as unraisable ("Event loop is closed", "Exception ignored in: <coroutine ...>") around the one error line.
    Waiting here, while the loop still runs, leaves nothing in flight; the first error then propagates unchanged.
    (Cancelling them instead would race: a read that completes as it is cancelled still posts to the loop after its
    task is done.)
    """
    running_before = asyncio.all_tasks()
    try:
        return await operation
    except Exception:
        # Every task started since is one of this operation's reads (or a step of one): none waits on this one.
        while started := asyncio.all_tasks() - running_before - {asyncio.current_task()}:
            await asyncio.wait(started)
        raise


class _SettledReads:
    """Mixin for an orbax type handler: its failed reads end only once all their sibling reads have (`_settled`)."""

    async def metadata(self, infos: Sequence[Any]) -> Sequence[Any]:
        return await _settled(super().metadata(infos))

    async def deserialize(self, infos: Sequence[Any], args: Sequence[Any] | None = None) -> Sequence[Any]:
        return await _settled(super().deserialize(infos, args))


class _SettledArrayHandler(_SettledReads, ocp.type_handlers.ArrayHandler):
    """Reads the arrays (`ArrayRestoreArgs` restores every parameter as a `jax.Array`)."""


class _SettledNumpyHandler(_SettledReads, ocp.type_handlers.NumpyHandler):
    """Reads the metadata of leaves saved as numpy arrays (metadata goes by the type each leaf was saved as)."""


def _pytree_handler() -> ocp.PyTreeCheckpointHandler:
    """orbax's PyTree handler, its array handlers settling their failed reads, other types as orbax's defaults.

    Unlike orbax's default `jax.Array` handler it has no ArrayMetadata store: that store serves writing and PRNG-key
    arrays, and parameters hold none.
    """
    handlers = ocp.type_handlers
    registry = handlers.create_type_handler_registry(
        *((kind, handlers.get_type_handler(kind)) for kind in handlers.supported_types()),
        (np.ndarray, _SettledNumpyHandler()),
        (jax.Array, _SettledArrayHandler()),
    )
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def norm_stats_asset_ids(checkpoint_dir: str | pathlib.Path) -> list[str]:
    """The asset ids whose `assets/<asset_id>/norm_stats.json` the checkpoint holds. An id may contain slashes:
    openpi names assets by dataset repo id (`pi05_libero` holds `assets/physical-intelligence/libero/`)."""
    assets = epath.Path(checkpoint_dir) / "assets"
    if not assets.exists():
        return []
    found = (directory.relative_to(assets).as_posix() for directory, _, files in assets.walk() if "norm_stats.json" in files)
    return sorted(asset_id for asset_id in found if asset_id != ".")


def read_norm_stats(checkpoint_dir: str | pathlib.Path, asset_id: str | None = None) -> dict[str, dict] | None:
    """`assets/<asset_id>/norm_stats.json` -> {key: {"mean", "std", "q01", "q99": np.ndarray | None}}.

    None when the checkpoint has no norm stats and no `asset_id` was asked for. A checkpoint with stats for several
    asset ids needs `asset_id`: picking one silently would unnormalize with another robot's statistics.
    """
    assets = epath.Path(checkpoint_dir) / "assets"
    available = norm_stats_asset_ids(checkpoint_dir)
    if asset_id is None:
        if not available:
            return None
        if len(available) > 1:
            raise CheckpointError(f"{assets}: norm stats for several asset ids {available}; pass --asset_id "
                                  "(load_model(..., asset_id=...)) to pick the one of your robot and data")
        asset_id = available[0]
    elif asset_id not in available:
        raise CheckpointError(f"{assets}: no norm stats for --asset_id={asset_id!r} (the checkpoint has "
                              f"{available or 'none'})")
    path = assets / asset_id / "norm_stats.json"
    try:
        raw = json.loads(path.read_text())["norm_stats"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: not an openpi norm_stats.json ({type(error).__name__}: {error})")
    stats = {}
    for key, entry in raw.items():
        for field in ("mean", "std"):
            if field not in entry:
                raise CheckpointError(f"{path}: norm_stats[{key!r}] lacks {field!r}")
        stats[key] = {
            field: None if entry.get(field) is None else np.asarray(entry[field], np.float32)
            for field in ("mean", "std", "q01", "q99")
        }
    check_norm_stats(path, stats)
    return stats


def save_openpi_checkpoint(
    params: Mapping[str, Any],
    directory: str | pathlib.Path,
    norm_stats: Mapping[str, Mapping[str, Any]] | None = None,
    asset_id: str = "multinet_jax",
) -> epath.Path:
    """Write `<directory>/params` (orbax OCDBT `{"params": ...}` with `value` leaves, as openpi's training does)
    and, when given, `<directory>/assets/<asset_id>/norm_stats.json`. Leaves may be jax or numpy arrays."""
    directory = epath.Path(directory)
    wrapped = {"params": unflatten_tree({(*keys, "value"): leaf for keys, leaf in flatten_tree(params).items()})}
    ocp.PyTreeCheckpointer().save(directory / "params", wrapped)
    if norm_stats is not None:
        asset_dir = directory / "assets" / asset_id
        asset_dir.mkdir(parents=True, exist_ok=True)
        serializable = {
            key: {field: np.asarray(value).tolist() for field, value in entry.items() if value is not None}
            for key, entry in norm_stats.items()
        }
        (asset_dir / "norm_stats.json").write_text(json.dumps({"norm_stats": serializable}, indent=2))
    return directory
