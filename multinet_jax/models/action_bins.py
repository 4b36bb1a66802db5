"""Actions as one token per dimension (OpenVLA's scheme, which Magma's `ActionTokenizer` copies): the last `n_bins` ids
of the base vocabulary are bins of [-1, 1], unnormalized with a dataset's q01 / q99 where its mask allows.

Token t maps to bin `clip(V - t - 1, 0, n_bins - 2)` of the centers of `linspace(-1, 1, n_bins)` (V the base
vocabulary: OpenVLA's unpadded embedding, Magma's tokenizer); `0.5 (a + 1)(q99 - q01) + q01` where the statistics'
mask is True, `a` elsewhere; everything in float64, as both families' numpy code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

N_BINS = 256


def normalized_actions(token_ids: Any, vocab_size: int, n_bins: int = N_BINS) -> np.ndarray:
    """Action token ids -> bin centers in [-1, 1] (float64)."""
    edges = np.linspace(-1, 1, n_bins)
    centers = (edges[:-1] + edges[1:]) / 2.0
    return centers[np.clip(vocab_size - np.asarray(token_ids, np.int64) - 1, 0, len(centers) - 1)]


def select_stats(norm_stats: Mapping[str, Any], unnorm_key: str | None, source: str) -> dict[str, np.ndarray]:
    """`norm_stats[unnorm_key]["action"]` as arrays (q01, q99, mask); the only key when `unnorm_key` is None.
    `source` ("the checkpoint's") says where the statistics come from in the one-line errors."""
    if unnorm_key is None:
        if len(norm_stats) != 1:
            raise ValueError(f"{source} norm_stats hold {sorted(norm_stats)}: pass unnorm_key")
        unnorm_key = next(iter(norm_stats))
    if unnorm_key not in norm_stats:
        raise ValueError(f"unnorm_key {unnorm_key!r} is not in {source} norm_stats {sorted(norm_stats)}")
    stats = norm_stats[unnorm_key]["action"]
    q01 = np.asarray(stats["q01"], np.float64)
    return {"q01": q01, "q99": np.asarray(stats["q99"], np.float64),
            "mask": np.asarray(stats.get("mask", np.ones(q01.shape, bool)), bool)}


def unnormalize(actions: np.ndarray, stats: Mapping[str, np.ndarray]) -> np.ndarray:
    """Normalized actions `[..., dims]` -> the dataset's units where the mask allows (float64)."""
    unnormalized = 0.5 * (actions + 1) * (stats["q99"] - stats["q01"]) + stats["q01"]
    return np.where(stats["mask"], unnormalized, actions)
