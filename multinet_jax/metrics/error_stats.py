"""Aggregates of per-sample errors, shared by Open-X (MSE/MAE) and Overcooked (Brier MSE/MAE).

Mirrors MultiNet's `eval_utils` (`min_max_normalize`, `quantile_filter`, `calculate_max_relative_mae`,
`calculate_proportion_beyond_mae_threshold`) with its crash cases answered by NaN: a single sample,
all-equal errors (MultiNet's `min_max_normalize` returns NaN) and fewer than two values left after
the quantile filter.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from multinet_jax.metrics._numerics import divide, kth_smallest, next_order_statistic

QUANTILE_PERCENT = 0.05  # MultiNet's quantile_filter keeps [p0.05, p99.95]
OUTLIER_MULTIPLIER = 3.0  # proportion_beyond_threshold_mae counts errors > 3 * median
ZERO_MEDIAN_REPLACEMENT = 1e-10  # calculate_max_relative_mae's guard


def normalized_mean(values: jax.Array, keep: jax.Array | None = None) -> jax.Array:
    """Mean of min-max normalized `values[keep]`; NaN when fewer than two are kept or all are equal."""
    keep = jnp.ones(values.shape, bool) if keep is None else keep
    count = jnp.sum(keep)
    low = jnp.min(jnp.where(keep, values, jnp.inf))
    high = jnp.max(jnp.where(keep, values, -jnp.inf))
    spread = high - low
    degenerate = (count <= 1) | (spread == 0)
    scaled = divide(values - low, jnp.where(degenerate, 1.0, spread))
    mean = divide(jnp.sum(jnp.where(keep, scaled, 0.0)), jnp.maximum(count, 1))
    return jnp.where(degenerate, jnp.nan, mean)


def _sorted_pair(values: jax.Array, rank: int) -> tuple[jax.Array, jax.Array]:
    """(sorted[rank], sorted[min(rank + 1, N - 1)]) without sorting."""
    below = kth_smallest(values, rank)
    if rank + 1 >= values.shape[0]:
        return below, below
    return below, next_order_statistic(values, rank, below)


def _numpy_percentile(values: jax.Array, percent: float) -> jax.Array:
    """`np.percentile(values, percent)` (method 'linear').

    The virtual index and weight depend only on the static length, so they are computed on the
    host with NumPy's exact float operations; the lerp follows NumPy's `_lerp` branch on t >= 0.5.
    """
    count = values.shape[0]
    virtual_index = (count - 1) * (percent / 100)
    previous = min(math.floor(virtual_index), count - 1)
    gamma = virtual_index - previous
    below, above = _sorted_pair(values, previous)
    difference = above - below
    if gamma >= 0.5:
        return above - difference * (1 - gamma)
    return below + difference * gamma


def _median(values: jax.Array) -> jax.Array:
    """`np.median`: the middle order statistic, or the mean of the two middle ones."""
    count = values.shape[0]
    if count % 2:
        return kth_smallest(values, count // 2)
    below, above = _sorted_pair(values, count // 2 - 1)
    return (below + above) / 2


def error_aggregates(mses: jax.Array, maes: jax.Array) -> dict[str, jax.Array]:
    """MultiNet's dataset-level error metrics from per-sample MSEs and MAEs (traced, static N)."""
    count = maes.shape[0]
    total_mse = jnp.sum(mses)
    total_mae = jnp.sum(maes)
    result = {
        "num_timesteps": count,
        "total_dataset_amse": total_mse,
        "total_dataset_amae": total_mae,
        "avg_dataset_amse": divide(total_mse, count),
        "avg_dataset_amae": divide(total_mae, count),
    }
    if count == 1:
        nan = jnp.array(jnp.nan, maes.dtype)
        return result | {
            "normalized_amse": nan,
            "normalized_amae": nan,
            "normalized_quantile_filtered_amae": nan,
            "max_relative_mae": nan,
            "proportion_beyond_threshold_mae": nan,
        }
    low = _numpy_percentile(maes, QUANTILE_PERCENT)
    high = _numpy_percentile(maes, 100 - QUANTILE_PERCENT)
    in_quantiles = (low <= maes) & (maes <= high)
    # Every MAE is a mean of absolute values (>= 0), so |mae| is mae itself.
    median = _median(maes)
    return result | {
        "normalized_amse": normalized_mean(mses),
        "normalized_amae": normalized_mean(maes),
        "normalized_quantile_filtered_amae": normalized_mean(maes, in_quantiles),
        "max_relative_mae": jnp.max(maes) / jnp.where(median == 0, ZERO_MEDIAN_REPLACEMENT, median),
        "proportion_beyond_threshold_mae": divide(jnp.sum(maes > OUTLIER_MULTIPLIER * median), count),
    }
