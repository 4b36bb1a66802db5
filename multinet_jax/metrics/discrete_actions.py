"""Overcooked discrete-action metrics (MultiNet's `OvercookedAIMetricsCalculator`) as jitted kernels.

A prediction is a joint action index in [0, 36) (scored as a one-hot distribution) or 36
probabilities in [0, 1] summing to 1 within 1e-5 (argmax is the action). Anything else is invalid:
Brier MAE and MSE 2.0, action -1. Records read by MultiNet's Magma script's rule (`any_sign`: the records'
`answer_rule` is "magma_scripts") take any 36 finite values summing to 1 within 1e-5
(`domains.script_joint_probabilities`). Joint action a is (player0, player1) = (a // 6, a % 6); per-player
metrics use the joint probabilities marginalized to 6 actions per player.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from multinet_jax import domains
from multinet_jax.metrics._numerics import divide, first_argmax, pairwise_sum, sequential_sum, x64_jit
from multinet_jax.metrics.classes import class_metrics
from multinet_jax.metrics.error_stats import error_aggregates
from multinet_jax.metrics.records import as_numpy, integer_ground_truth, is_finite_number, is_integer

NUM_JOINT_ACTIONS = 36
NUM_PLAYER_ACTIONS = 6
INVALID_BRIER_ERROR = 2.0  # MultiNet's max_brier_mae_error / max_brier_mse_error
INVALID_ACTION = -1


class DiscreteInputs(NamedTuple):
    """Packed Overcooked records: joint probabilities (zeros where invalid), validity, true actions."""

    probabilities: np.ndarray  # [N, 36] float64
    valid: np.ndarray  # [N] bool
    ground_truth: np.ndarray  # [N] int64


def joint_probabilities(prediction: Any) -> list[float] | None:
    """The 36 probabilities a prediction stands for, or None when MultiNet would call it invalid."""
    if is_integer(prediction):
        if not 0 <= prediction < NUM_JOINT_ACTIONS:
            return None
        one_hot = [0.0] * NUM_JOINT_ACTIONS
        one_hot[int(prediction)] = 1.0
        return one_hot
    if not isinstance(prediction, (list, np.ndarray)) or len(prediction) != NUM_JOINT_ACTIONS:
        return None
    # Numeric strings pass MultiNet's float() check but then crash its Brier arithmetic: invalid here (as is an
    # integer past float64's range, which float() refuses).
    if not all(is_finite_number(value) for value in prediction):
        return None
    values = [float(value) for value in prediction]
    if not all(0.0 <= value <= 1.0 for value in values) or not abs(sum(values) - 1.0) < domains.PROBABILITY_SUM_TOLERANCE:
        return None
    return values


def pack_discrete(predictions: Sequence[Any], ground_truth: Sequence[Any], *, any_sign: bool = False) -> DiscreteInputs:
    """`any_sign`: predictions valid by MultiNet's Magma Overcooked rule (module docstring) instead of the default.
    Jax arrays are read as numpy's (`records.as_numpy`)."""
    predictions, truth = as_numpy(predictions), integer_ground_truth(as_numpy(ground_truth), NUM_JOINT_ACTIONS)
    if len(predictions) != len(truth):
        raise ValueError(f"{len(predictions)} predictions for {len(truth)} ground-truth actions")
    if isinstance(predictions, np.ndarray) and predictions.dtype.kind in "iu" and predictions.ndim == 1:
        valid = (predictions >= 0) & (predictions < NUM_JOINT_ACTIONS)
        probabilities = np.zeros((len(truth), NUM_JOINT_ACTIONS), np.float64)
        probabilities[np.flatnonzero(valid), predictions[valid]] = 1.0
        return DiscreteInputs(probabilities, valid, truth)
    validate = domains.script_joint_probabilities if any_sign else joint_probabilities
    rows = [validate(prediction) for prediction in predictions]
    valid = np.array([row is not None for row in rows], bool).reshape(len(rows))
    zeros = [0.0] * NUM_JOINT_ACTIONS
    probabilities = np.array([zeros if row is None else row for row in rows], np.float64).reshape(-1, NUM_JOINT_ACTIONS)
    return DiscreteInputs(probabilities, valid, truth)


def _brier(columns: list[jax.Array], label: jax.Array, valid: jax.Array) -> tuple[jax.Array, ...]:
    """Brier MSE/MAE against the one-hot label and the argmax, from per-class probability columns."""
    difference = [column - (label == index) for index, column in enumerate(columns)]
    maes = jnp.where(valid, pairwise_sum([jnp.abs(term) for term in difference]), INVALID_BRIER_ERROR)
    mses = jnp.where(valid, pairwise_sum([term**2 for term in difference]), INVALID_BRIER_ERROR)
    predicted = jnp.where(valid, first_argmax(columns), INVALID_ACTION)
    return mses, maes, predicted


def _gameplay_metrics(mses, maes, predicted, truth, num_classes: int) -> dict[str, jax.Array]:
    classes = class_metrics(predicted, truth, num_classes)
    count = maes.shape[0]
    return {
        "exact_match": divide(jnp.sum(predicted == truth), count),
        **error_aggregates(mses, maes),
        **{key: classes[key] for key in _GAMEPLAY_CLASS_KEYS},
        "total_invalid_preds": classes["invalid_fp"],
        "percentage_invalids": divide(classes["invalid_fp"], count) * 100,
        "predicted_actions": predicted,
        "ground_truth_actions": truth,
    }


_GAMEPLAY_CLASS_KEYS = (
    "micro_precision", "micro_precision_without_invalid", "micro_recall", "micro_f1", "micro_f1_without_invalid",
    "macro_precision", "macro_recall", "macro_f1", "class_precisions", "class_recalls", "class_f1s",
)


def _discrete_kernel(probabilities, valid, ground_truth):
    columns = [probabilities[:, index] for index in range(NUM_JOINT_ACTIONS)]
    joint = _gameplay_metrics(*_brier(columns, ground_truth, valid), ground_truth, NUM_JOINT_ACTIONS)
    # MultiNet marginalizes with a `+=` loop over the joint index a = 6 * player0 + player1:
    # player0's action sums over player1's in order, player1's over player0's.
    actions = range(NUM_PLAYER_ACTIONS)
    marginals = (
        [sequential_sum([columns[NUM_PLAYER_ACTIONS * p0 + p1] for p1 in actions]) for p0 in actions],
        [sequential_sum([columns[NUM_PLAYER_ACTIONS * p0 + p1] for p0 in actions]) for p1 in actions],
    )
    labels = (ground_truth // NUM_PLAYER_ACTIONS, ground_truth % NUM_PLAYER_ACTIONS)
    players = {
        f"player{index}_results": _gameplay_metrics(*_brier(marginal, label, valid), label, NUM_PLAYER_ACTIONS)
        for index, (marginal, label) in enumerate(zip(marginals, labels))
    }
    return joint | players


discrete_kernel = x64_jit(_discrete_kernel)


def discrete(inputs: DiscreteInputs) -> dict[str, Any]:
    """MultiNet's Overcooked metrics for packed inputs (device values; `score` makes them Python)."""
    return discrete_kernel(*inputs)


def _clipped_kernel(clipped, ground_truth):
    classes = class_metrics(clipped, ground_truth, NUM_JOINT_ACTIONS)
    return {
        "avg_clipped_emr": divide(jnp.sum(clipped == ground_truth), clipped.shape[0]),
        "avg_clipped_micro_precision": classes["micro_precision"],
        "avg_clipped_micro_recall": classes["micro_recall"],
        "avg_clipped_micro_f1": classes["micro_f1"],
    }


clipped_kernel = x64_jit(_clipped_kernel)


def clipped(predictions: Sequence[Any], ground_truth: Sequence[Any]) -> dict[str, Any]:
    """MultiNet's Pi0 Overcooked script's clipped metrics (`overcooked_inference.py`, d6fe80e lines 455-573): the
    rounded joint action clipped into [0, 35] (so never invalid) against the truth, exact match and micro
    precision / recall / F1. `predictions`: the records' `clipped_prediction`."""
    truth = integer_ground_truth(ground_truth, NUM_JOINT_ACTIONS)
    return clipped_kernel(integer_ground_truth(predictions, NUM_JOINT_ACTIONS, "clipped_prediction"), truth)
