"""Open-X continuous-action metrics (MultiNet's `RoboticsMetricsCalculator`) as one jitted kernel.

Per sample: MSE/MAE against the ground truth, baseline-relative MSE/MAE against always predicting
the action mean, and exact-match success. Invalid predictions score the worst case from the action
stats: mean (max - min)^2 and mean |max - min|, baseline-relative inf.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from multinet_jax.domains import ACTION_VALUE_LIMIT, ordered_stats_problem
from multinet_jax.metrics._numerics import divide, numpy_mean, x64_jit
from multinet_jax.metrics.error_stats import error_aggregates, normalized_mean
from multinet_jax.metrics.records import RecordError, as_numpy, is_finite_number, is_number

# Baseline errors below this count as zero (MultiNet's baseline-relative guard).
BASELINE_EPSILON = 1e-6

# Named slices of multi-part action spaces, scored on their own besides the whole vector, under `CAPABILITY_KEY`
# (MultiNet's harness: `get_capability_slices` and `calculate_capability_metrics` of scripts/eval_harness/evaluate.py).
ACTION_SLICES: dict[str, dict[str, tuple[int, int]]] = {
    "openx_bimanual": {"arm1": (0, 7), "arm2": (7, 14)},
    "openx_mobile_manipulation": {"base_navigation": (0, 3), "arm_manipulation": (3, 10)},
}
CAPABILITY_KEY = "capability_metrics"


class ContinuousInputs(NamedTuple):
    """Packed Open-X records: float64 predictions (ignored where invalid), ground truth, validity."""

    predictions: np.ndarray  # [N, D] float64, any values (even NaN) in invalid rows
    ground_truth: np.ndarray  # [N, D] float64
    valid: np.ndarray  # [N] bool


# JSON numbers arrive as these exact types (JSON `true` is no number: `records.is_number`).
_NUMBER_TYPES = frozenset({float, int})


def is_valid_action(prediction: Any, action_dim: int) -> bool:
    """MultiNet's `_validate_output`: a list of `action_dim` finite numbers (no strings, no NaN/inf)."""
    if not isinstance(prediction, (list, tuple, np.ndarray)) or len(prediction) != action_dim:
        return False
    return all(is_finite_number(item) for item in prediction)


def _is_numeric_list(values: Any, length: int) -> bool:
    """Fast path for JSON input: a list of plain Python numbers float64 can hold (finiteness is checked vectorized;
    an integer past float64's range is not finite, `records.is_finite_number`)."""
    if type(values) is not list or len(values) != length:
        return False
    types = set(map(type, values))
    return _NUMBER_TYPES.issuperset(types) and (int not in types or all(map(is_finite_number, values)))


def pack_continuous(predictions: Sequence[Any], ground_truth: Sequence[Any]) -> ContinuousInputs:
    """Decide validity on the host and pack into arrays; ragged or non-numeric ground truth is an error. Jax arrays
    are read as numpy's (`records.as_numpy`)."""
    predictions, truth = as_numpy(predictions), _pack_ground_truth(as_numpy(ground_truth))
    count, action_dim = truth.shape
    if len(predictions) != count:
        raise ValueError(f"{len(predictions)} predictions for {count} ground-truth actions")
    if isinstance(predictions, np.ndarray) and predictions.dtype.kind in "fiu" and predictions.shape == truth.shape:
        packed = np.asarray(predictions, np.float64)
        return ContinuousInputs(packed, truth, np.isfinite(packed).all(axis=1))
    valid = np.fromiter(
        (_is_numeric_list(p, action_dim) or is_valid_action(p, action_dim) for p in predictions), bool, count
    )
    packed = np.zeros((count, action_dim), np.float64)
    if valid.any():
        packed[valid] = np.asarray([p for p, ok in zip(predictions, valid) if ok], np.float64)
    return ContinuousInputs(packed, truth, valid & np.isfinite(packed).all(axis=1))


OVERFLOW_REASON = "finite predictions whose squared error would overflow float64 in the dataset's sums"


def invalidate_overflowing(inputs: ContinuousInputs) -> tuple[ContinuousInputs, np.ndarray]:
    """(inputs with the overflowing rows invalid, those rows).

    A finite prediction of ~1e160 passes MultiNet's validity check, but its squared error is inf and every average
    becomes inf or NaN. A row is cut off where its squared error, divided by the smallest baseline error and summed
    over the dataset, could exceed float64's range, so every metric stays finite.
    """
    count = max(len(inputs.valid), 1)
    limit = np.finfo(np.float64).max * BASELINE_EPSILON / count
    with np.errstate(over="ignore", invalid="ignore"):
        squared_error = np.sum((inputs.predictions - inputs.ground_truth) ** 2, axis=1)
    overflowing = np.flatnonzero(inputs.valid & ~(squared_error <= limit))
    if not overflowing.size:
        return inputs, overflowing
    valid = inputs.valid.copy()
    valid[overflowing] = False
    return inputs._replace(valid=valid), overflowing


def _pack_ground_truth(ground_truth: Sequence[Any]) -> np.ndarray:
    if len(ground_truth) == 0:
        raise ValueError("no records to score")
    first = ground_truth[0]
    action_dim = len(first) if isinstance(first, (list, tuple, np.ndarray)) else 0
    if isinstance(ground_truth, np.ndarray) and ground_truth.ndim == 2 and ground_truth.dtype.kind in "fiu":
        truth = np.asarray(ground_truth, np.float64)
    elif action_dim and all(_is_numeric_list(action, action_dim) for action in ground_truth):
        truth = np.asarray(ground_truth, np.float64)
    else:
        truth = np.asarray([_checked_action(action, index, action_dim) for index, action in enumerate(ground_truth)])
    bad_rows = np.flatnonzero(~np.isfinite(truth).all(axis=1))
    if bad_rows.size:
        raise RecordError(int(bad_rows[0]), "ground_truth", "contains NaN or inf")
    huge_rows = np.flatnonzero((np.abs(truth) > ACTION_VALUE_LIMIT).any(axis=1))
    if huge_rows.size:  # its errors would overflow and be blamed on the prediction
        raise RecordError(int(huge_rows[0]), "ground_truth", f"holds {np.abs(truth[huge_rows[0]]).max():g}, beyond "
                          f"+-{ACTION_VALUE_LIMIT:g} (no robot action is that large: corrupt data?)")
    return truth


def _checked_action(action: Any, index: int, action_dim: int) -> list[float]:
    if not isinstance(action, (list, tuple, np.ndarray)) or len(action) != action_dim or action_dim == 0:
        raise RecordError(index, "ground_truth", f"expected a list of {action_dim or 'some'} numbers (as in record 0)")
    if not all(is_number(value) for value in action):
        raise RecordError(index, "ground_truth", "expected numbers only")
    if not all(is_finite_number(value) or isinstance(value, (float, np.floating)) for value in action):
        raise RecordError(index, "ground_truth", f"holds an integer past float64's range (beyond +-{ACTION_VALUE_LIMIT:g}: "
                          "corrupt data?)")  # NaN / inf floats are named below, with the packed array
    return [float(value) for value in action]


def action_stats_from_ground_truth(ground_truth: np.ndarray) -> dict[str, list[float]]:
    """Per-dimension min/max/mean/std/q01/q99 of the ground truth: the default action stats."""
    return {
        "min": ground_truth.min(axis=0).tolist(),
        "max": ground_truth.max(axis=0).tolist(),
        "mean": ground_truth.mean(axis=0).tolist(),
        "std": ground_truth.std(axis=0).tolist(),
        "q01": np.quantile(ground_truth, 0.01, axis=0).tolist(),
        "q99": np.quantile(ground_truth, 0.99, axis=0).tolist(),
    }


class ActionStatsError(ValueError):
    """Action statistics that do not fit the actions scored (their width, their order)."""


def stats_arrays(action_stats: Mapping[str, Any], action_dim: int) -> tuple[np.ndarray, ...]:
    """(min, max, mean) as float64 [D] arrays, checked against the action dimension, and min <= max (a min above its
    max marks a mislabeled file). The mean is not held to [min, max]: MultiNet's own split statistics sum float32
    steps one by one (`data.stats.MultinetActionStats`), and on a long split a constant dimension's mean lands outside
    its range by a few percent; those are the statistics MultiNet scored with."""
    arrays = []
    for name in ("min", "max", "mean"):
        if name not in action_stats:
            raise ActionStatsError(f"action_stats: missing {name!r} (needs per-dimension 'min', 'max' and 'mean' lists)")
        values = np.asarray(action_stats[name], np.float64)
        if values.shape != (action_dim,) or not np.isfinite(values).all():
            raise ActionStatsError(f"action_stats: {name!r} must be {action_dim} finite numbers, one per dim of the "
                                   f"actions scored, got shape {values.shape}")
        arrays.append(values)
    problem = ordered_stats_problem({"min": arrays[0], "max": arrays[1]})
    if problem is not None:
        raise ActionStatsError(f"action_stats: {problem}")
    return tuple(arrays)


def _baseline_relative(errors: jax.Array, baseline: jax.Array, valid: jax.Array) -> jax.Array:
    near_zero = baseline < BASELINE_EPSILON
    ratio = errors / jnp.where(near_zero, 1.0, baseline)
    degenerate = jnp.where(errors < BASELINE_EPSILON, 1.0, jnp.inf)
    return jnp.where(valid, jnp.where(near_zero, degenerate, ratio), jnp.inf)


def _continuous_kernel(predictions, ground_truth, valid, action_min, action_max, action_mean):
    count = ground_truth.shape[0]
    difference = predictions - ground_truth
    worst_mse = numpy_mean((action_max - action_min) ** 2)
    worst_mae = numpy_mean(jnp.abs(action_max - action_min))
    mses = jnp.where(valid, numpy_mean(difference**2), worst_mse)
    maes = jnp.where(valid, numpy_mean(jnp.abs(difference)), worst_mae)
    baseline_difference = action_mean - ground_truth
    relative_mae = _baseline_relative(maes, numpy_mean(jnp.abs(baseline_difference)), valid)
    relative_mse = _baseline_relative(mses, numpy_mean(baseline_difference**2), valid)
    success = valid & jnp.all(predictions == ground_truth, axis=1)
    invalid = count - jnp.sum(valid)
    return error_aggregates(mses, maes) | {
        "action_success_rate": divide(jnp.sum(success), count) * 100,
        "avg_baseline_relative_mae": divide(jnp.sum(relative_mae), count),
        "avg_baseline_relative_mse": divide(jnp.sum(relative_mse), count),
        "normalized_baseline_relative_mae": normalized_mean(relative_mae, jnp.isfinite(relative_mae)),
        "normalized_baseline_relative_mse": normalized_mean(relative_mse, jnp.isfinite(relative_mse)),
        "total_invalid_preds": invalid,
        "invalid_percentage": divide(invalid, count) * 100,
    }


continuous_kernel = x64_jit(_continuous_kernel)


def continuous(inputs: ContinuousInputs, action_stats: Mapping[str, Any]) -> dict[str, jax.Array]:
    """MultiNet's Open-X metrics for packed inputs (device scalars; see `score` for Python values)."""
    action_min, action_max, action_mean = stats_arrays(action_stats, inputs.ground_truth.shape[1])
    return continuous_kernel(*inputs, action_min, action_max, action_mean)


def capability_metrics(predictions: Sequence[Any], ground_truth: np.ndarray, action_stats: Mapping[str, Any],
                       slices: Mapping[str, tuple[int, int]]) -> dict[str, dict[str, jax.Array]]:
    """Each named slice scored on its own, as MultiNet's harness did: the slice of each prediction as numpy sliced it
    (`_numpy_slice`), valid or not by itself (a None in one arm leaves the other valid; too few values can fill the
    first slice), against the ground truth's and the statistics' slice."""
    result = {}
    for name, (start, stop) in slices.items():
        if stop > ground_truth.shape[1]:
            raise ValueError(f"action slice {name!r} [{start}:{stop}] exceeds action dim {ground_truth.shape[1]}")
        part = pack_continuous([_numpy_slice(prediction, start, stop) for prediction in predictions], ground_truth[:, start:stop])
        part, _ = invalidate_overflowing(part)
        result[name] = continuous(part, {key: np.asarray(action_stats[key])[start:stop] for key in ("min", "max", "mean")})
    return result


def _numpy_slice(prediction: Any, start: int, stop: int) -> list[Any] | None:
    """`np.array(prediction)[start:stop]` as a list, as the harness sliced it (one string among numbers makes every
    value a string); None (invalid) where numpy cannot (the harness raised), or where the slice holds a JSON
    `true` / `false`, invalid in the whole vector too (`records.is_number`): numpy would read it as 1.0 / 0.0."""
    if _is_numeric_list(prediction, len(prediction) if type(prediction) is list else -1):
        return prediction[start:stop]  # plain numbers: numpy would give the same values
    if not isinstance(prediction, (list, tuple, np.ndarray)):
        return None
    if any(isinstance(value, (bool, np.bool_)) for value in list(prediction)[start:stop]):
        return None
    try:
        values = np.array(prediction)
    except ValueError:  # ragged
        return None
    return list(values[start:stop]) if values.ndim == 1 else None
