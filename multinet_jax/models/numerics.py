"""How the models write their bfloat16 math so that XLA's CPU backend runs it fast, with TPU/GPU semantics.

- `einsum` / `dot_general`: every weight matmul accumulates in float32 and rounds once to the operands' dtype. For
  bf16 operands XLA's CPU backend runs `dot(bf16, bf16) -> bf16` on a slow generic path but `dot(bf16, bf16) -> f32`
  on its native AVX512-BF16 kernel: on this project's 2-core Zen 4 machine a `[768, 1152] x [1152, 4304]` product
  runs at 110-140 GFLOP/s the first way and about 250 GFLOP/s the second. TPUs and GPUs also sum in float32, so
  results agree with the bf16-output product up to summation order. A bf16 product whose activation side is a
  single row (a decode step at batch 1) is computed on two rows, the second zero (see `_two_rows`).
- `gelu`: evaluated in float32 and rounded once (see its docstring).
- `scan_layers`: layer scans that never copy bf16 weights to float32 (see its docstring).
- `attend`: softmax attention with the normalization applied to the output (see its docstring).
For float32 models the first three are exactly the plain operations, and `attend` equals them up to float32 rounding.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


# Whether `_two_rows` pads (a jit cache key, as attention's mode is): off only to count a model's FLOPs.
_pad_one_row = jax.make_user_context(default_value=True)


@contextlib.contextmanager
def products_as_written() -> Iterator[None]:
    """Trace one-row products as the model writes them, without `_two_rows`' zero row: for counting the model's
    FLOPs (`benchmarks.flops`), which that row would inflate at batch 1 (it is the CPU backend's, not the model's)."""
    with _pad_one_row(False):
        yield


def _two_rows(lhs: jax.Array, rhs: jax.Array, free_axes: Sequence[int]) -> int | None:
    """The lhs axis to pad to two rows (the first of its free, i.e. non-contracting non-batch, axes) when the
    operands are narrower than float32 and those axes hold a single row; None otherwise.

    Why: XLA's CPU backend rewrites a product whose lhs is one row (a vector) into a float32 matrix-vector product,
    converting the whole bf16 weight to a float32 copy first: inside a decode loop at batch 1, a float32 copy of
    every weight per step, written and read again (`tests/test_models_loop_hlo.py`). With two rows the product runs
    on the bf16 weight as it lies (XLA's bf16 kernel); at decode sizes reading the weight dominates, so the zero row
    is nearly free. The H200 trace of issue 22 shows float32 weight copies in the same place (`loop_slice_fusion`);
    whether two rows remove them there has not been measured. float32 products are left as they are (bit-identical).
    """
    if not _pad_one_row.value or not free_axes or max(jnp.dtype(lhs.dtype).itemsize, jnp.dtype(rhs.dtype).itemsize) >= 4:
        return None
    return free_axes[0] if math.prod(lhs.shape[axis] for axis in free_axes) == 1 else None


def _padded(lhs: jax.Array, axis: int) -> jax.Array:
    return jnp.concatenate([lhs, jnp.zeros_like(lhs)], axis=axis)


def dot_general(
    lhs: jax.Array,
    rhs: jax.Array,
    dimension_numbers: Any,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """`lax.dot_general` with float32 accumulation, cast back to the operands' dtype (flax's `dot_general=`)."""
    out_dtype = preferred_element_type or jnp.result_type(lhs, rhs)
    (lhs_contracting, _), (lhs_batch, _) = dimension_numbers
    free = [axis for axis in range(lhs.ndim) if axis not in (*lhs_contracting, *lhs_batch)]
    axis = _two_rows(lhs, rhs, free)
    if axis is None:
        out = jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type=jnp.float32)
    else:
        padded = _padded(lhs, axis)
        out = jax.lax.dot_general(padded, rhs, dimension_numbers, precision, preferred_element_type=jnp.float32)
        # The output's axes: batch, lhs free, rhs free.
        out = jax.lax.slice_in_dim(out, 0, 1, axis=len(lhs_batch) + free.index(axis))
    return out.astype(out_dtype)


def einsum(equation: str, lhs: jax.Array, rhs: jax.Array, out_dtype: Any = None) -> jax.Array:
    """`jnp.einsum` of two operands (explicit `->` form) with float32 accumulation, in `out_dtype` (default: the
    operands' dtype)."""
    out_dtype = out_dtype or jnp.result_type(lhs, rhs)
    operands, output = equation.split("->")
    lhs_spec, rhs_spec = operands.split(",")
    axis = _two_rows(lhs, rhs, [i for i, letter in enumerate(lhs_spec) if letter not in rhs_spec])
    if axis is None:
        out = jnp.einsum(equation, lhs, rhs, preferred_element_type=jnp.float32)
    else:
        out = jnp.einsum(equation, _padded(lhs, axis), rhs, preferred_element_type=jnp.float32)
        out = jax.lax.slice_in_dim(out, 0, 1, axis=output.index(lhs_spec[axis]))
    return out.astype(out_dtype)


def bfloat16_as_bits(tree: Any) -> Any:
    """Every bfloat16 leaf as its uint16 bits (see `scan_layers`), the others as they are."""
    return jax.tree.map(lambda x: jax.lax.bitcast_convert_type(x, jnp.uint16) if x.dtype == jnp.bfloat16 else x, tree)


def bits_as_bfloat16(tree: Any) -> Any:
    """The inverse of `bfloat16_as_bits`."""
    return jax.tree.map(lambda x: jax.lax.bitcast_convert_type(x, jnp.bfloat16) if x.dtype == jnp.uint16 else x, tree)


def scan_layers(block: type[nn.Module], *, length: int, initializing: bool, **scan_kwargs: Any) -> type[nn.Module]:
    """`nn.scan` over a stack of identical layers (parameters stacked on a leading depth axis), with the stacked
    bfloat16 parameters passed through the loop as their uint16 bits.

    Why: XLA's CPU backend cannot slice bfloat16 arrays natively. A plain scan over bf16 weights makes it convert
    the whole stack to float32 once per call (a float32 copy of every weight: +1.6 GB for SigLIP So400m, +8 GB for
    Gemma 2B) and each layer's slice back to bf16; SigLIP's forward pass took 3.5 s instead of 2.8 s for three
    images on this project's CPU. Integer bits are sliced as they are. Parameter names are unchanged, and on
    accelerators the bitcasts cost nothing. Other bf16 arrays scanned over (a stacked KV cache) need the same:
    pass them as `bfloat16_as_bits` and read each layer's slice with `bits_as_bfloat16`.
    """
    per_layer = nn.map_variables(
        block, "params", trans_in_fn=bits_as_bfloat16, trans_out_fn=bfloat16_as_bits, init=initializing
    )
    scanned = nn.scan(
        per_layer, variable_axes={"params": 0, "intermediates": 0}, split_rngs={"params": True}, length=length, **scan_kwargs
    )
    return nn.map_variables(
        scanned, "params", trans_in_fn=bfloat16_as_bits, trans_out_fn=bits_as_bfloat16, init=initializing
    )


def gelu(x: jax.Array, approximate: bool = True) -> jax.Array:
    """GELU (tanh-approximated by default; erf with `approximate=False`) evaluated in float32 and rounded once to
    `x`'s dtype.

    Why: XLA's TPU and GPU fusions evaluate a bf16 elementwise chain in float32 and round once; XLA's CPU backend
    rounds after each of GELU's eight operations, which is both slower (a quarter of an MLP block's time) and further
    from what openpi's bf16 policies compute on accelerators.
    """
    return nn.gelu(x.astype(jnp.float32), approximate=approximate).astype(x.dtype)


def silu(x: jax.Array) -> jax.Array:
    """SiLU (Llama's gate activation) evaluated in float32 and rounded once to `x`'s dtype, as `gelu`."""
    return nn.silu(x.astype(jnp.float32)).astype(x.dtype)


def attend(logits: jax.Array, values: jax.Array, value_axes: str = "bksh") -> jax.Array:
    """`softmax(logits) @ values`: logits float32 `[b, heads, q, s]`, values `[b, heads, s, h]` (or as `value_axes`
    names them, e.g. `"bskh"`) -> `[b, heads, q, h]` in the values' dtype, the softmax's normalization applied to the
    output instead of to the weights.

    Why: dividing the `[q, s]` weights by their row sums is one more full pass over attention's largest array;
    dividing the `[q, h]` output (h < s) gives the same values up to float32 rounding (~1e-7 relative), and made
    SigLIP So400m's attention (24 images x 16 heads x 256 tokens) 1.65x faster in float32 on this project's CPU.
    The unnormalized weights lie in [0, 1] (each row's largest is exactly 1), so casting them to bfloat16 rounds
    them as finely, relatively, as the normalized ones; the product accumulates in float32 and is rounded once.
    """
    weights = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    totals = jnp.sum(weights, axis=-1, keepdims=True)
    out = einsum(f"bkqs,{value_axes}->bkqh", weights.astype(values.dtype), values, out_dtype=jnp.float32)
    return (out / totals).astype(values.dtype)
