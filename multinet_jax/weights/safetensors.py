"""Hugging Face checkpoints with `safetensors` alone (no torch, no transformers): list, check and restore tensors.

A model directory holds `model.safetensors`, or the sharded `model-0000N-of-0000M.safetensors` files with
`model.safetensors.index.json` (whose `weight_map` names each tensor's file); the Python files a real checkpoint
carries (`trust_remote_code`) are never read. A family maps its Flax tree onto the checkpoint's tensor names with one
`Source` per Flax parameter: the tensors it is made of and a host-side transform (transpose, head split, fused qkv
slice). A parameter stacked over layers (scanned blocks) larger than `trees.RESTORE_GROUP_BYTES` is assembled one
layer at a time into a device buffer updated in place (donated); smaller ones are stacked on the host. So peak host
memory is the restored parameters plus at most one group's bytes: each tensor is read through its own short-lived
`safe_open` (the file's mapping, and the pages it touched, go when it closes).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from multinet_jax.weights import trees
from multinet_jax.weights.trees import CheckpointError, flatten_params, unflatten_params

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One checkpoint tensor, as its file's header describes it (nothing read)."""

    file: pathlib.Path
    shape: tuple[int, ...]
    dtype: str


@dataclasses.dataclass(frozen=True)
class Source:
    """How one Flax parameter is made: `transform(*tensors)` of the named tensors, per layer when stacked.

    `names[i]` are the tensors of layer i (one entry for an unstacked parameter); the results of all layers are
    stacked on a new leading axis when `stacked`.
    """

    names: tuple[tuple[str, ...], ...]
    transform: Callable[..., np.ndarray] = lambda tensor: tensor
    stacked: bool = False


def checkpoint_files(directory: str | pathlib.Path) -> list[pathlib.Path]:
    """The safetensors files of a Hugging Face model directory (single file, or the shards its index names)."""
    return sorted(set(_weight_map(directory).values()))


def _weight_map(directory: str | pathlib.Path) -> dict[str, pathlib.Path]:
    """{tensor name: file} as the directory declares it: every name in `model.safetensors` (read from its header),
    else the index's `weight_map`. The single file wins when both are there, as in transformers' `from_pretrained`,
    so that a directory loads the tensors the reference implementation loads."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    if (directory / SINGLE_FILE).exists():
        return dict.fromkeys(_header_specs(directory / SINGLE_FILE), directory / SINGLE_FILE)
    index = directory / INDEX_FILE
    if not index.exists():
        raise CheckpointError(f"{directory}: holds neither {SINGLE_FILE} nor {INDEX_FILE}")
    try:
        weight_map = {name: directory / file for name, file in json.loads(index.read_text())["weight_map"].items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{index}: not a safetensors index (weight_map): {type(error).__name__}: {error}")
    missing = sorted({file.name for file in weight_map.values() if not file.exists()})
    if missing:
        raise CheckpointError(f"{index}: names shard files that are missing: {missing}")
    return weight_map


def _header_specs(file: pathlib.Path) -> dict[str, TensorSpec]:
    """{tensor name: TensorSpec} of one file's header; a header safetensors cannot read is refused naming the file."""
    try:
        with safe_open(file, framework="numpy") as handle:
            slices = {name: handle.get_slice(name) for name in handle.keys()}
            return {name: TensorSpec(file, tuple(part.get_shape()), part.get_dtype()) for name, part in slices.items()}
    except Exception as error:  # safetensors raises its own SafetensorError, OSError, ...
        raise CheckpointError(f"{file}: unreadable safetensors header ({type(error).__name__}: {error})")


def read_tensor_specs(directory: str | pathlib.Path) -> dict[str, TensorSpec]:
    """{tensor name: TensorSpec} from the files' headers, without reading any tensor.

    Each tensor must sit in the one file the index maps it to, and every name the index maps must be in a file: a
    tensor in two shards (which would otherwise take whichever was read last) or a map that disagrees with the
    shards is a checkpoint the index does not describe."""
    weight_map = _weight_map(directory)
    specs: dict[str, TensorSpec] = {}
    for file in sorted(set(weight_map.values())):
        for name, spec in _header_specs(file).items():
            if name in specs:
                raise CheckpointError(f"{file}: tensor {name!r} is also in {specs[name].file.name}")
            if weight_map.get(name) != file:
                mapped = weight_map[name].name if name in weight_map else "no file"
                raise CheckpointError(f"{directory / INDEX_FILE}: weight_map maps {name!r} to {mapped}, but the tensor "
                                      f"is in {file.name}")
            specs[name] = spec
    absent = sorted(set(weight_map) - set(specs))
    if absent:
        raise CheckpointError(f"{directory / INDEX_FILE}: weight_map names tensors no shard holds: {absent[:5]}"
                              f"{' ...' if len(absent) > 5 else ''}")
    unsupported = sorted({spec.dtype for spec in specs.values()} - set(_DTYPES))
    if unsupported:
        raise CheckpointError(f"{directory}: tensor dtypes {unsupported} are not floating point ({sorted(_DTYPES)})")
    return specs


def save_checkpoint(tensors: Mapping[str, np.ndarray], directory: str | pathlib.Path, *, num_shards: int = 1) -> None:
    """Write tensors as Hugging Face does: `model.safetensors`, or `model-0000N-of-0000M.safetensors` + index
    (tensors dealt to the shards in name order, each shard holding about the same bytes)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if num_shards == 1:
        save_file(dict(tensors), directory / SINGLE_FILE, metadata={"format": "pt"})
        return
    shard_bytes = -(-sum(tensor.nbytes for tensor in tensors.values()) // num_shards)
    shards: list[list[str]] = [[]]
    filled = 0
    for name in sorted(tensors):
        if filled >= shard_bytes and len(shards) < num_shards:
            shards.append([])
            filled = 0
        shards[-1].append(name)
        filled += tensors[name].nbytes
    save_shards(({name: tensors[name] for name in names} for names in shards), directory, len(shards))


def save_shards(shards: Iterable[Mapping[str, np.ndarray]], directory: str | pathlib.Path, num_shards: int) -> None:
    """Write `num_shards` shards as they come (a generator keeps one shard in memory) plus the index."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weight_map, total = {}, 0
    for index, shard in enumerate(shards):
        file = f"model-{index + 1:05d}-of-{num_shards:05d}.safetensors"
        save_file(dict(shard), directory / file, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(shard, file)
        total += sum(tensor.nbytes for tensor in shard.values())
    (directory / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def _read_tensor(spec: TensorSpec, name: str, dtype: np.dtype) -> np.ndarray:
    """One tensor cast to `dtype`, its values checked after the cast: a float32 value beyond bfloat16's range would
    otherwise load as inf. (The families' transforms only move values, so casting before them changes nothing.)"""
    try:
        with safe_open(spec.file, framework="numpy") as handle:
            tensor = handle.get_tensor(name)
    except Exception as error:  # a truncated file fails here, naming neither file nor tensor
        raise CheckpointError(f"{spec.file}: could not read tensor {name!r} (truncated or corrupt?): {error}")
    if tuple(tensor.shape) != spec.shape:
        raise CheckpointError(f"{spec.file}: tensor {name!r} has shape {tensor.shape}, its header says {spec.shape}")
    tensor = tensor.astype(dtype)
    trees.check_finite(spec.file, {name: tensor})
    return tensor


@functools.partial(jax.jit, donate_argnums=0)
def _write_layer(stack: jax.Array, layer: jax.Array, index: jax.Array) -> jax.Array:
    return jax.lax.dynamic_update_index_in_dim(stack, layer, index, axis=0)


def restore(
    directory: str | pathlib.Path,
    sources: Mapping[str, Source],
    expected: Mapping[str, Any],
    shardings: Mapping[str, Any],
    *,
    dtype: str = "float32",
    unused: Callable[[Collection[str]], Collection[str]] = lambda names: (),
) -> dict[str, Any]:
    """The Flax parameters of `expected` (nested ShapeDtypeStructs) from a Hugging Face model directory.

    `sources` maps every flat Flax path to its `Source`; `unused(names)` picks the checkpoint's tensors the model
    knows but never reads. The checkpoint must hold exactly the tensors the sources name plus those (anything else,
    or anything missing, is an error naming the directory); each result must have the expected shape. Arrays are
    cast to `dtype` on the host, one layer at a time, and placed per `shardings`.
    """
    specs = read_tensor_specs(directory)
    expected_flat = {path: tuple(leaf.shape) for path, leaf in flatten_params(expected).items()}
    sharding_flat = flatten_params(shardings)
    named = {name for source in sources.values() for layer in source.names for name in layer}
    missing, unexpected = sorted(named - set(specs)), sorted(set(specs) - named - set(unused(specs.keys())))
    if missing or unexpected:
        raise CheckpointError(f"{directory}: tensor names differ from the model's: missing {missing}, unexpected {unexpected}")
    if set(sources) != set(expected_flat):
        raise CheckpointError(f"{directory}: the family's name map does not cover the model: "
                              f"{sorted(set(expected_flat) ^ set(sources))}")
    target = np.dtype(jnp.dtype(dtype))
    restored: dict[str, Any] = {}
    with trees.load_progress(directory, expected_flat, target) as progress:
        for path, source in sources.items():
            restored[path] = _restore_one(directory, path, source, specs, expected_flat[path], target, sharding_flat[path])
            progress.update(trees.array_bytes(expected_flat[path], target))
    return unflatten_params(restored)


def _restore_one(directory: Any, path: str, source: Source, specs: Mapping[str, TensorSpec], shape: tuple[int, ...],
                 target: np.dtype, sharding: Any) -> jax.Array:
    """One Flax parameter built from its checkpoint tensors, cast to `target` and placed per `sharding`."""
    layers = (_make_layer(path, source, layer, specs, target) for layer in source.names)
    if source.stacked:  # every layer's shape is checked before it is stacked, naming its tensors
        layers = (_check_layer(directory, path, index, source.names[index], layer, shape[1:])
                  for index, layer in enumerate(layers))
    if source.stacked and trees.array_bytes(shape, target) > trees.RESTORE_GROUP_BYTES:
        return _stack_on_device(directory, path, layers, shape, target, sharding)
    array = np.stack(list(layers)) if source.stacked else next(layers)
    _check_shape(directory, path, array.shape, shape)
    return jax.block_until_ready(jax.device_put(array, sharding))


def _make_layer(path: str, source: Source, names: Sequence[str], specs: Mapping[str, TensorSpec], dtype: np.dtype) -> np.ndarray:
    tensors = [_read_tensor(specs[name], name, dtype) for name in names]
    try:
        return np.asarray(source.transform(*tensors))
    except ValueError as error:  # a reshape/split of a tensor whose shape does not fit the model
        shapes = {name: tensor.shape for name, tensor in zip(names, tensors)}
        raise CheckpointError(f"{specs[names[0]].file}: {path}: tensors {shapes} do not fit the model ({error})")


def _check_layer(directory: Any, path: str, index: int, names: Sequence[str], layer: np.ndarray,
                 want: tuple[int, ...]) -> np.ndarray:
    """One layer of a stacked parameter, whose shape must be the stack's (a transposed tensor is named, not stacked)."""
    if tuple(layer.shape) != tuple(want):
        raise CheckpointError(f"{directory}: {path}[{index}] (from {list(names)}): expected shape {tuple(want)}, the "
                              f"checkpoint gives {tuple(layer.shape)}")
    return layer


def _check_shape(directory: Any, path: str, got: tuple[int, ...], want: tuple[int, ...]) -> None:
    if tuple(got) != tuple(want):
        raise CheckpointError(f"{directory}: {path}: expected shape {tuple(want)}, the checkpoint gives {tuple(got)}")


def _stack_on_device(directory: Any, path: str, layers: Any, shape: tuple[int, ...], dtype: np.dtype, sharding: Any) -> jax.Array:
    """Write each layer into a zero-initialized, donated device buffer: no host copy of the whole stack."""
    stack = jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=sharding)()
    count = 0
    for index, layer in enumerate(layers):
        stack = jax.block_until_ready(_write_layer(stack, layer, np.int32(index)))
        count += 1
    if count != shape[0]:
        raise CheckpointError(f"{directory}: {path}: {count} layers in the checkpoint, the model has {shape[0]}")
    return stack


# -- Hugging Face (torch) tensors in the Flax layouts the shared modules use -------------------------------------

def transposed(weight: np.ndarray) -> np.ndarray:
    """torch Linear `[out, in]` -> flax Dense kernel `[in, out]`."""
    return weight.T


def heads_in(weight: np.ndarray, heads: int) -> np.ndarray:
    """torch Linear `[heads * head_dim, width]` -> `[width, heads, head_dim]` (flax DenseGeneral kernel)."""
    return weight.T.reshape(weight.shape[1], heads, -1)


def heads_out(weight: np.ndarray, heads: int) -> np.ndarray:
    """torch Linear `[width, heads * head_dim]` -> `[heads, head_dim, width]`."""
    return weight.T.reshape(heads, -1, weight.shape[0])


def llama_layer_sources(prefix: str, flax_prefix: str, layers: Sequence[int], num_heads: int,
                        num_kv_heads: int) -> dict[str, Source]:
    """One `gemma.Block` (Llama switches, one expert) stacked over Hugging Face Llama decoder layers
    `<prefix>.<i>.*` for i in `layers`, in that order, under the Flax path `flax_prefix`.

    The k/v projections may read another width than the layer's (SmolVLA's cross-attention layers project the
    VLM's keys and values): `kv_einsum`'s input dimension is whatever the checkpoint's tensors have.
    """
    def per_layer(*names: str, transform: Callable[..., np.ndarray] = lambda tensor: tensor) -> Source:
        return Source(tuple(tuple(f"{prefix}.{i}.{name}" for name in names) for i in layers), transform, stacked=True)

    def heads_first(weight: np.ndarray, heads: int) -> np.ndarray:
        return heads_in(weight, heads).transpose(1, 0, 2)

    return {
        f"{flax_prefix}/pre_attention_norm/scale": per_layer("input_layernorm.weight"),
        f"{flax_prefix}/pre_ffw_norm/scale": per_layer("post_attention_layernorm.weight"),
        f"{flax_prefix}/attn/q_einsum/w": per_layer("self_attn.q_proj.weight", transform=lambda q: heads_first(q, num_heads)),
        f"{flax_prefix}/attn/kv_einsum/w": per_layer(
            "self_attn.k_proj.weight", "self_attn.v_proj.weight",
            transform=lambda k, v: np.stack([heads_first(k, num_kv_heads), heads_first(v, num_kv_heads)])),
        f"{flax_prefix}/attn/attn_vec_einsum/w": per_layer(
            "self_attn.o_proj.weight", transform=lambda o: heads_out(o, num_heads)),
        f"{flax_prefix}/mlp/gating_einsum": per_layer(
            "mlp.gate_proj.weight", "mlp.up_proj.weight", transform=lambda gate, up: np.stack([gate.T, up.T])),
        f"{flax_prefix}/mlp/linear": per_layer("mlp.down_proj.weight", transform=transposed),
    }

