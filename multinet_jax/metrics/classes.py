"""Per-class counts and precision/recall/F1 with MultiNet's invalid-as-false-positive rule.

An invalid prediction (index -1) matches no class: it is one false positive overall (`invalid_fp`)
but belongs to no class's counts, exactly as `eval_utils.calculate_tp_fp_fn_counts` counts it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from multinet_jax.metrics._numerics import f1_score, numpy_mean, safe_ratio


def class_metrics(predicted: jax.Array, truth: jax.Array, num_classes: int) -> dict[str, jax.Array]:
    """Micro and macro precision/recall/F1 and the per-class arrays (traced; -1 marks invalid)."""
    valid = (predicted >= 0) & (predicted < num_classes)
    hits = jnp.bincount(jnp.where(valid & (predicted == truth), truth, num_classes), length=num_classes + 1)
    predicted_counts = jnp.bincount(jnp.where(valid, predicted, num_classes), length=num_classes + 1)
    true_counts = jnp.bincount(truth, length=num_classes)
    true_positives = hits[:num_classes]
    false_positives = predicted_counts[:num_classes] - true_positives
    false_negatives = true_counts - true_positives
    invalid_fp = jnp.sum(~valid)
    total_tp, valid_fp, total_fn = jnp.sum(true_positives), jnp.sum(false_positives), jnp.sum(false_negatives)
    total_fp = valid_fp + invalid_fp
    micro_precision = safe_ratio(total_tp, total_tp + total_fp)
    micro_precision_without_invalid = safe_ratio(total_tp, total_tp + valid_fp)
    micro_recall = safe_ratio(total_tp, total_tp + total_fn)
    class_precisions = safe_ratio(true_positives, true_positives + false_positives)
    class_recalls = safe_ratio(true_positives, true_positives + false_negatives)
    class_f1s = f1_score(class_precisions, class_recalls)
    return {
        "micro_precision": micro_precision,
        "micro_precision_without_invalid": micro_precision_without_invalid,
        "micro_recall": micro_recall,
        "micro_f1": f1_score(micro_precision, micro_recall),
        "micro_f1_without_invalid": f1_score(micro_precision_without_invalid, micro_recall),
        # MultiNet's `np.mean` of the per-class values, in NumPy's summation order (a jnp.sum differs by an ulp)
        "macro_precision": numpy_mean(class_precisions),
        "macro_recall": numpy_mean(class_recalls),
        "macro_f1": numpy_mean(class_f1s),
        "class_precisions": class_precisions,
        "class_recalls": class_recalls,
        "class_f1s": class_f1s,
        "total_tp": total_tp,
        "total_fp": total_fp,
        "total_fn": total_fn,
        "valid_fp": valid_fp,
        "invalid_fp": invalid_fp,
    }
