"""Cross-validation folds that keep a group together (both layouts of an Act2Answer item in the same fold)."""

from __future__ import annotations

import numpy as np


def grouped_folds(groups: np.ndarray, num_folds: int, seed: int = 0) -> np.ndarray:
    """Fold index `[n]` per sample: the distinct groups, shuffled with `seed`, dealt round-robin to the folds.

    Groups of equal size (two layouts per item) give folds that differ by at most one group. A probe tested on a
    fold has then seen neither layout of any of its items, so it cannot answer by remembering the item.
    """
    groups = np.asarray(groups)
    if groups.ndim != 1:
        raise ValueError(f"groups must be one value per sample, got shape {groups.shape}")
    unique, inverse = np.unique(groups, return_inverse=True)
    if num_folds < 2 or num_folds > len(unique):
        raise ValueError(f"num_folds must be in [2, {len(unique)}] (the number of groups), got {num_folds}")
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_group = np.empty(len(unique), np.int32)
    fold_of_group[order] = np.arange(len(unique)) % num_folds
    return fold_of_group[inverse]
