"""Which kernel runs each softmax attention: chosen in this one place, at trace time, from the backend.

Every attention of the project goes through `gemma.grouped_attention` (Gemma's prefix, Pi0's suffix, the KV-cache
decode step, OpenVLA's Llama, which is the same Gemma, and SigLIP / DINOv2 through `vit.py`), which asks `choose`:

- `reference`: the project's own layout (`gemma.grouped_attention`'s batched matmuls, `numerics.attend`). Always on
  CPU and TPU, and on a GPU for the calls cuDNN cannot take.
- `cudnn`: `jax.nn.dot_product_attention(..., implementation="cudnn")`, cuDNN's fused flash attention, on a CUDA GPU
  for calls whose q, k and v are all bfloat16 (or all float16) with a head dim that is a multiple of 8 and at most
  128 (256 from compute capability 9.0, Hopper), the limits jax 0.10-0.11 check before lowering it
  (`jax._src.cudnn.fused_attention_stablehlo.check_layout` / `check_is_flash_attention`). Any batch, query length
  (the decode step's 1 included), key length and GQA grouping; the boolean mask goes in as it is.
- `xla`: the same wrapper with `implementation="xla"`. Never chosen by `auto`: forcing it runs everything of the fast
  path but the kernel (layouts, mask, GQA, dtypes) on any backend, which is how the tests and the benchmark suite's
  CPU dry run exercise it.

The mode is `MULTINET_JAX_ATTENTION` (`auto`, the default; `reference`; `xla`) or, inside a program, the context
manager `mode("...")`. It is a jit-cache key (`jax.make_user_context`): a function traced under one mode is traced
again under another, never served from the other's cache. Under `auto`, `choices(table)` gives per call shape which of
cuDNN and the reference to take where cuDNN can (the benchmark suite measures both per shape and passes the faster:
`benchmarks/suite_attention.py`); it is a jit-cache key too.

Semantics kept from the reference: q arrives already scaled (the wrapper passes `scale=1`); query head n reads KV
head n // group, as the reference folds them; `attn_mask` bool `[b, t, s]` applies to every head. A query row with
no valid key attends uniformly over all keys (openpi's prefill into its preallocated cache, `decoding`'s docstring):
the reference writes -0.7 * float32's max into such logits, jax's `xla` implementation writes the same value, and its
`cudnn` one turns the mask into a bfloat16 bias of -2**41 added to float32 scores, which rounds every score under
2**17 in size to the same -2**41, uniform again. That last is read from jax's source, not run on a GPU in this
project yet: the suite's parity stage (`benchmarks/suite.py`) checks it, on the device, before timing anything.

Nothing is chosen silently: each traced call's choice (implementation, why, shapes, dtype) goes to every open
`recording()`, and a GPU call that cuDNN cannot take is logged once per reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

ENV_VAR = "MULTINET_JAX_ATTENTION"
MODES = ("auto", "reference", "xla")
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
HOPPER = (9, 0)

_log = logging.getLogger(__name__)


# The environment's value is checked where it is read (`current_mode`), so a wrong one is a one-line error of the
# command that traces a model, not a failed import.
_mode = jax.make_user_context(default_value=os.environ.get(ENV_VAR, "auto").strip().lower() or "auto")
# `choices`' table as sorted (shape key, implementation) pairs: hashable, as a jit-cache key must be.
_choices = jax.make_user_context(default_value=())

ShapeKey = tuple[tuple[int, ...], tuple[int, ...], str]  # (q shape, k/v shape, dtype) of one call
CHOICES = ("cudnn", "reference")


@contextlib.contextmanager
def mode(name: str) -> Iterator[None]:
    """Trace attention under mode `name` (`auto`, `reference`, `xla`) inside the `with` block."""
    if name not in MODES:
        raise ValueError(f"attention mode must be one of {', '.join(MODES)}, got {name!r}")
    with _mode(name):
        yield


def shape_key(q_shape: Sequence[int], kv_shape: Sequence[int], dtype: Any) -> ShapeKey:
    """What `choices` looks a call up by: q `[b, t, heads, h]`, k/v `[b, s, kv_heads, h]`, the dtype's name."""
    return tuple(int(n) for n in q_shape), tuple(int(n) for n in kv_shape), str(dtype)


@contextlib.contextmanager
def choices(table: Mapping[ShapeKey, str]) -> Iterator[None]:
    """Trace `auto` with `table`'s implementation (`cudnn` or `reference`) for each call shape it holds, where cuDNN
    can take the call; other shapes as `auto` chooses without it."""
    unknown = sorted({implementation for implementation in table.values() if implementation not in CHOICES})
    if unknown:
        raise ValueError(f"attention choices must be among {', '.join(CHOICES)}, got {', '.join(unknown)}")
    with _choices(tuple(sorted(table.items()))):
        yield


def current_mode() -> str:
    """The mode attention is traced under now (`mode`'s, else `$MULTINET_JAX_ATTENTION`'s, else `auto`)."""
    value = _mode.value
    if value not in MODES:
        raise ValueError(f"${ENV_VAR}: {value!r} is not an attention mode (one of {', '.join(MODES)})")
    return value


@dataclasses.dataclass(frozen=True)
class Device:
    """What the choice depends on: the platform, whether it is CUDA, its compute capability."""

    platform: str
    cuda: bool = False
    compute_capability: tuple[int, int] | None = None


def current_device() -> Device:
    """The default device as the choice sees it (its first device; a mesh is made of one kind)."""
    device = jax.devices()[0]
    if device.platform != "gpu":
        return Device(device.platform)
    capability = getattr(device, "compute_capability", None)
    cuda = "cuda" in str(getattr(device.client, "platform_version", "")).lower()
    return Device("gpu", cuda, tuple(int(part) for part in capability.split(".")) if capability else None)


@dataclasses.dataclass(frozen=True)
class Choice:
    implementation: str  # "reference", "cudnn" or "xla"
    reason: str


def cudnn_unsupported(q: jax.ShapeDtypeStruct, k: jax.ShapeDtypeStruct, v: jax.ShapeDtypeStruct,
                      device: Device) -> str | None:
    """Why cuDNN's flash attention cannot take this call on `device` (None when it can)."""
    if device.platform != "gpu" or not device.cuda:
        return f"not a CUDA GPU ({device.platform})"
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in CUDNN_DTYPES:
        return f"dtypes {q.dtype}/{k.dtype}/{v.dtype}: cuDNN takes bfloat16 or float16 q, k, v"
    max_head_dim = 256 if device.compute_capability and device.compute_capability >= HOPPER else 128
    head_dim = q.shape[-1]
    if head_dim % 8 or head_dim > max_head_dim:
        return f"head dim {head_dim}: cuDNN takes multiples of 8 up to {max_head_dim} on this GPU"
    return None


def choose(q: jax.ShapeDtypeStruct, k: jax.ShapeDtypeStruct, v: jax.ShapeDtypeStruct, attention_mode: str,
           device: Device, table: Mapping[ShapeKey, str] | None = None) -> Choice:
    """The implementation of one call (q `[b, t, heads, h]`, k/v `[b, s, kv_heads, h]`) under `attention_mode`, and
    under `auto` `table`'s choice for its shape where cuDNN can take it (`choices`)."""
    if attention_mode == "reference":
        return Choice("reference", "mode reference")
    if attention_mode == "xla":
        return Choice("xla", "mode xla (the fast path's layout with XLA's kernel)")
    if device.platform != "gpu":
        return Choice("reference", f"auto on {device.platform}")
    unsupported = cudnn_unsupported(q, k, v, device)
    if unsupported:
        return Choice("reference", f"auto on GPU, cuDNN cannot: {unsupported}")
    chosen = (table or {}).get(shape_key(q.shape, k.shape, q.dtype))
    if chosen is not None:
        return Choice(chosen, "auto on a CUDA GPU, the faster measured for this shape")
    return Choice("cudnn", "auto on a CUDA GPU")


_recordings: list[list[dict]] = []
_logged: set[str] = set()


@contextlib.contextmanager
def recording() -> Iterator[list[dict]]:
    """Collect the choice of every attention call traced inside the block (one dict per call)."""
    calls: list[dict] = []
    _recordings.append(calls)
    try:
        yield calls
    finally:
        _recordings.remove(calls)


def distinct(calls: list[dict]) -> list[dict]:
    """`calls` without repeats (a function traced twice, e.g. for FLOP counting, records each call twice)."""
    seen, unique = set(), []
    for call in calls:
        key = repr(sorted(call.items()))
        if key not in seen:
            seen.add(key)
            unique.append(call)
    return unique


def _note(choice: Choice, q: jax.Array, k: jax.Array) -> None:
    call = {"implementation": choice.implementation, "reason": choice.reason, "q": list(q.shape),
            "kv": list(k.shape), "dtype": str(q.dtype)}
    for calls in _recordings:
        calls.append(call)
    if "cuDNN cannot" in choice.reason and choice.reason not in _logged:
        _logged.add(choice.reason)
        _log.warning("attention: %s; such calls use the reference attention", choice.reason)


def implementation_for(q: jax.Array, k: jax.Array, v: jax.Array) -> str:
    """The implementation of this call under the current mode and device, recorded (called while tracing)."""
    choice = choose(q, k, v, current_mode(), current_device(), dict(_choices.value))
    _note(choice, q, k)
    return choice.implementation


def fused(q: jax.Array, k: jax.Array, v: jax.Array, attn_mask: jax.Array | None, implementation: str) -> jax.Array:
    """`gemma.grouped_attention`'s contract through `jax.nn.dot_product_attention(implementation=...)`."""
    mask = None if attn_mask is None else attn_mask[:, None, :, :]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=1.0, implementation=implementation)


def fast_path() -> str | None:
    """The fused implementation the current mode takes on this device for the calls that allow one (None: none)."""
    attention_mode, device = current_mode(), current_device()
    return {"xla": "xla", "auto": "cudnn" if device.platform == "gpu" and device.cuda else None}.get(attention_mode)


def manifest_entry() -> dict[str, str | None]:
    """What a run manifest records: the mode and its fast path on this device (with the dtype, every call's choice)."""
    return {"mode": current_mode(), "fast_path": fast_path()}
