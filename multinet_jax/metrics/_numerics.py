"""Numerical building blocks shared by the metric kernels.

MultiNet computes its metrics with NumPy in float64. To match it value for value the kernels run
with 64-bit types enabled for the duration of each call only (the models in the same process stay
float32), and sums over a sample's few dimensions follow NumPy's own summation order.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

# NumPy's pairwise summation works on blocks of this many elements (numpy/_core/src/umath/loops_utils.h).
_NUMPY_PAIRWISE_BLOCK = 128


def x64_jit(fn: Callable[..., Any], **jit_kwargs: Any) -> Callable[..., Any]:
    """`jax.jit(fn)` whose every call runs with 64-bit types enabled, for that call only.

    Enabling x64 process-wide would silently turn the float32 models into float64; a scoped
    context keeps the metric kernels exact without touching anything else.
    """
    jitted = jax.jit(fn, **jit_kwargs)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with jax.enable_x64(True):
            return jitted(*args, **kwargs)

    return call


def pairwise_sum(columns: Sequence[jax.Array]) -> jax.Array:
    """Sum of equally shaped arrays in exactly NumPy's pairwise order for a vector of that length.

    `np.sum`/`np.mean` of a contiguous float64 vector add up to 8 interleaved partial sums, so a
    plain left-to-right sum differs from MultiNet's per-sample errors in the last bit; matching
    the order keeps per-sample values, and every threshold comparison on them, identical. Taking
    the terms as separate columns lets XLA fuse them into one pass without materializing [N, D].
    """
    length = len(columns)
    if length < 8:
        total = jnp.zeros_like(columns[0])
        for column in columns:
            total = total + column
        return total
    if length <= _NUMPY_PAIRWISE_BLOCK:
        partial = list(columns[:8])
        blocked = length - length % 8
        for start in range(8, blocked, 8):
            partial = [partial[lane] + columns[start + lane] for lane in range(8)]
        total = ((partial[0] + partial[1]) + (partial[2] + partial[3])) + (
            (partial[4] + partial[5]) + (partial[6] + partial[7])
        )
        for column in columns[blocked:]:
            total = total + column
        return total
    half = length // 2
    half -= half % 8
    return pairwise_sum(columns[:half]) + pairwise_sum(columns[half:])


def numpy_sum(values: jax.Array) -> jax.Array:
    """`np.sum` over the last (static, short) axis, in NumPy's order."""
    return pairwise_sum([values[..., index] for index in range(values.shape[-1])])


def divide(numerator: jax.Array, count: int | jax.Array) -> jax.Array:
    """numerator / count, correctly rounded like NumPy's division.

    XLA rewrites division by a constant, or by any scalar broadcast over an array (even one passed in at run
    time), into multiplication by its reciprocal, which is off by an ulp (3 / 3 * 100 == 99.99999999999999; a
    7-dim mean in a third of samples, flipping a threshold comparison): the divisor is hidden at the numerator's
    full shape, so XLA sees neither a constant nor a broadcast scalar and keeps a true divide.
    """
    divisor = jnp.broadcast_to(jnp.asarray(count, jnp.result_type(numerator, float)), jnp.shape(numerator))
    return numerator / jax.lax.optimization_barrier(divisor)


def numpy_mean(values: jax.Array) -> jax.Array:
    """`np.mean` over the last axis: NumPy-ordered sum, then one division."""
    return divide(numpy_sum(values), values.shape[-1])


def sequential_sum(columns: Sequence[jax.Array]) -> jax.Array:
    """Left-to-right sum starting from 0.0, as a Python `+=` loop accumulates it."""
    total = jnp.zeros_like(columns[0])
    for column in columns:
        total = total + column
    return total


def first_argmax(columns: Sequence[jax.Array]) -> jax.Array:
    """Index of the first largest column per row (`np.argmax`), as one fused pass over columns.

    XLA's CPU argmax over a short minor axis is ~10x slower than this running comparison.
    """
    best, index = columns[0], jnp.zeros(columns[0].shape, jnp.int32)
    for position, column in enumerate(columns[1:], start=1):
        better = column > best
        best, index = jnp.where(better, column, best), jnp.where(better, position, index)
    return index


def safe_ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """numerator / denominator, 0.0 where the denominator is 0 (MultiNet's rule for precision/recall/F1)."""
    zero = denominator == 0
    return jnp.where(zero, 0.0, numerator / jnp.where(zero, 1.0, denominator))


def f1_score(precision: jax.Array, recall: jax.Array) -> jax.Array:
    """2pr / (p + r), 0.0 when p + r == 0, in MultiNet's operation order."""
    return safe_ratio(2 * (precision * recall), precision + recall)


_DIGIT_BITS = 16
_DIGITS = 1 << _DIGIT_BITS


def _sortable_keys(values: jax.Array) -> jax.Array:
    """float64 -> uint64 keys whose unsigned order is the float order (negative floats flipped)."""
    bits = jax.lax.bitcast_convert_type(values, jnp.uint64)
    negative = (bits >> 63) == 1
    return jnp.where(negative, ~bits, bits | jnp.uint64(1 << 63))


def _float_from_key(key: jax.Array) -> jax.Array:
    negative = (key >> 63) == 0
    bits = jnp.where(negative, ~key, key & jnp.uint64((1 << 63) - 1))
    return jax.lax.bitcast_convert_type(bits, jnp.float64)


def kth_smallest(values: jax.Array, rank: int) -> jax.Array:
    """`np.sort(values)[rank]` for float64 values by radix selection, without sorting.

    XLA's CPU sort of a million float64 costs ~0.7 s; four 16-bit digit histograms (scatter-adds)
    find any order statistic exactly in a few milliseconds each.
    """
    keys = _sortable_keys(values)

    def select_digit(step, state):
        prefix, remaining = state
        shift = jnp.uint64(64 - _DIGIT_BITS) - jnp.uint64(_DIGIT_BITS) * step.astype(jnp.uint64)
        # Keys agreeing with the digits chosen so far (all of them on the first step).
        candidate = (keys >> (shift + jnp.uint64(_DIGIT_BITS)) == prefix >> (shift + jnp.uint64(_DIGIT_BITS))) | (step == 0)
        digit = ((keys >> shift) & jnp.uint64(_DIGITS - 1)).astype(jnp.int32)
        counts = jnp.bincount(jnp.where(candidate, digit, _DIGITS), length=_DIGITS + 1)[:_DIGITS]
        cumulative = jnp.cumsum(counts)
        chosen = jnp.searchsorted(cumulative, remaining, side="right")
        return prefix | (chosen.astype(jnp.uint64) << shift), remaining - (cumulative[chosen] - counts[chosen])

    initial = (jnp.uint64(0), jnp.asarray(rank, jnp.int64))
    prefix, _ = jax.lax.fori_loop(0, 64 // _DIGIT_BITS, select_digit, initial)
    return _float_from_key(prefix)


def next_order_statistic(values: jax.Array, rank: int, value_at_rank: jax.Array) -> jax.Array:
    """`np.sort(values)[rank + 1]` given `np.sort(values)[rank]`: a tie, or the next larger value."""
    tied = jnp.sum(values <= value_at_rank) > rank + 1
    return jnp.where(tied, value_at_rank, jnp.min(jnp.where(values > value_at_rank, values, jnp.inf)))
