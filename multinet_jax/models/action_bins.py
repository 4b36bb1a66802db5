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


def action_stats_problem(entry: Any) -> str | None:
    """What one dataset's entry of `norm_stats` lacks to unnormalize actions (an `action` mapping with q01 and q99 of
    one length), said after the entry's name; None when it holds them. Asked before any weight loads
    (`openvla_checkpoint.missing_action_stats`) and again where the statistics are read."""
    action = entry.get("action") if isinstance(entry, Mapping) else None
    if not isinstance(action, Mapping):
        return f"no 'action' statistics (it holds {sorted(entry) if isinstance(entry, Mapping) else type(entry).__name__})"
    missing = [name for name in ("q01", "q99") if name not in action]
    if missing:
        return f"action has no {' or '.join(repr(name) for name in missing)} (it holds {sorted(action)})"
    if np.shape(action["q01"]) != np.shape(action["q99"]):
        return f"action q01 {list(np.shape(action['q01']))} and q99 {list(np.shape(action['q99']))} differ in shape"
    return None


def select_stats(norm_stats: Mapping[str, Any], unnorm_key: str | None, source: str) -> dict[str, np.ndarray]:
    """`norm_stats[unnorm_key]["action"]` as arrays (q01, q99, mask); the only key when `unnorm_key` is None.
    `source` ("the checkpoint's") says where the statistics come from in the one-line errors."""
    if unnorm_key is None:
        if len(norm_stats) != 1:
            raise ValueError(f"{source} norm_stats hold {sorted(norm_stats)}: pass unnorm_key")
        unnorm_key = next(iter(norm_stats))
    if unnorm_key not in norm_stats:
        raise ValueError(f"unnorm_key {unnorm_key!r} is not in {source} norm_stats {sorted(norm_stats)}")
    problem = action_stats_problem(norm_stats[unnorm_key])
    if problem is not None:
        raise ValueError(f"{source} norm_stats[{unnorm_key!r}]: {problem}")
    stats = norm_stats[unnorm_key]["action"]
    q01 = np.asarray(stats["q01"], np.float64)
    return {"q01": q01, "q99": np.asarray(stats["q99"], np.float64),
            "mask": np.asarray(stats.get("mask", np.ones(q01.shape, bool)), bool)}


def unnormalize(actions: np.ndarray, stats: Mapping[str, np.ndarray]) -> np.ndarray:
    """Normalized actions `[..., dims]` -> the dataset's units where the mask allows (float64)."""
    unnormalized = 0.5 * (actions + 1) * (stats["q99"] - stats["q01"]) + stats["q01"]
    return np.where(stats["mask"], unnormalized, actions)
