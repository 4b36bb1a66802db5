"""Multiple choice (PIQA, MultiNet's `MCQMetricsCalculator`) and classification (ODinW,
`ClassificationMetricsCalculator`) as jitted kernels over predicted indices (-1 = invalid)."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from multinet_jax.metrics._numerics import divide, x64_jit
from multinet_jax.metrics.classes import class_metrics
from multinet_jax.metrics.records import as_numpy, is_integer

INVALID_CHOICE = -1


def pack_choices(predictions: Sequence[Any], num_options: Sequence[int], any_integer: bool = False) -> np.ndarray:
    """Predicted indices as int64, -1 where MultiNet's validator rejects them (not an int in range; with `any_integer`,
    MultiNet's Magma PIQA rule, not a non-negative int: one out of range is valid and wrong). Jax arrays are read as
    numpy's (`records.as_numpy`)."""
    return np.array(
        [int(p) if is_integer(p) and 0 <= p and (any_integer or p < limit) else INVALID_CHOICE
         for p, limit in zip(as_numpy(predictions), num_options)],
        np.int64,
    ).reshape(len(predictions))


def _accuracies(predicted: jax.Array, truth: jax.Array) -> dict[str, jax.Array]:
    count = predicted.shape[0]
    valid = predicted != INVALID_CHOICE
    num_valid = jnp.sum(valid)
    correct = predicted == truth
    invalid = count - num_valid
    return {
        "overall_accuracy": divide(jnp.sum(correct), count),
        "valid_accuracy": jnp.where(num_valid > 0, jnp.sum(correct & valid) / jnp.maximum(num_valid, 1), 0.0),
        "total_samples": count,
        "valid_predictions": num_valid,
        "total_invalid_preds": invalid,
        "invalid_percentage": divide(invalid, count) * 100,
    }


def _multiple_choice_kernel(predicted, truth, num_choices: int):
    # the last bin: invalid answers and valid ones naming no choice (MultiNet's Magma PIQA rule), neither reported
    counts = jnp.bincount(jnp.where((predicted >= 0) & (predicted < num_choices), predicted, num_choices), length=num_choices + 1)
    return _accuracies(predicted, truth) | {
        "num_choices": num_choices,
        "choice_distribution": {f"choice_{i}_count": counts[i] for i in range(num_choices)},
    }


def _classification_kernel(predicted, truth, num_classes: int):
    classes = class_metrics(predicted, truth, num_classes)
    return _accuracies(predicted, truth) | {
        "precision_per_class": classes["class_precisions"],
        "recall_per_class": classes["class_recalls"],
        "f1_per_class": classes["class_f1s"],
        **{key: classes[key] for key in _CLASSIFICATION_KEYS},
    }


_CLASSIFICATION_KEYS = (
    "macro_precision", "macro_recall", "macro_f1", "micro_precision", "micro_recall", "micro_f1",
    "total_tp", "total_fp", "total_fn", "valid_fp", "invalid_fp",
)

_multiple_choice = x64_jit(_multiple_choice_kernel, static_argnames="num_choices")
_classification = x64_jit(_classification_kernel, static_argnames="num_classes")


def _check_indices(predicted: Any, truth: Any, num_classes: int, *, any_choice: bool) -> None:
    """The kernels' inputs as `pack_choices` and `integer_ground_truth` make them: integer arrays of one length, labels
    in [0, num_classes), predictions -1 (invalid) or a class (with `any_choice`, any index >= 0). Anything else would
    be counted silently wrong (a -1 label as class 0, a True prediction as choice 1)."""
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"the number of classes must be a positive integer, got {num_classes!r}")
    for name, values in (("predicted", predicted), ("truth", truth)):
        if np.asarray(values).dtype.kind not in "iu" or np.ndim(values) != 1:
            raise ValueError(f"{name}: expected a 1-D integer array (pack_choices / integer_ground_truth), got "
                             f"{np.asarray(values).dtype} of shape {np.shape(values)}")
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} labels")
    wrong_labels = np.flatnonzero((truth < 0) | (truth >= num_classes))
    if wrong_labels.size:
        raise ValueError(f"truth[{wrong_labels[0]}] = {truth[wrong_labels[0]]}: not a class in [0, {num_classes})")
    beyond = np.zeros(len(predicted), bool) if any_choice else predicted >= num_classes
    wrong = np.flatnonzero((predicted < INVALID_CHOICE) | beyond)
    if wrong.size:
        raise ValueError(f"predicted[{wrong[0]}] = {predicted[wrong[0]]}: neither -1 (invalid) nor a class in [0, {num_classes})")


def multiple_choice(predicted: np.ndarray, truth: np.ndarray, num_choices: int) -> dict[str, Any]:
    """PIQA metrics: overall (invalid = wrong) and valid-only accuracy, choice distribution, invalid counts.
    `predicted` may name an index beyond the choices (valid and wrong: MultiNet's Magma PIQA rule)."""
    _check_indices(predicted, truth, num_choices, any_choice=True)
    return _multiple_choice(predicted, truth, num_choices=num_choices)


def classification(predicted: np.ndarray, truth: np.ndarray, num_classes: int) -> dict[str, Any]:
    """ODinW metrics: accuracies plus micro/macro/per-class precision, recall, F1 and tp/fp/fn totals."""
    _check_indices(predicted, truth, num_classes, any_choice=False)
    return _classification(predicted, truth, num_classes=num_classes)
