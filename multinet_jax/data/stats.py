"""Per-dataset action statistics (min, max, mean, std, q01, q99) in one streaming pass, cached.

min/max are exact; mean/std are exact up to float64 rounding (Chan et al.'s pairwise merge of
counts, means and squared deviations). q01/q99 come from per-dimension 5000-bin histograms whose
edges are re-binned when the range grows, the scheme of openpi's `RunningStats` (behind MultiNet's
Pi0 norm stats), here with counts moved at bin centres and linear interpolation inside a bin: a
quantile is off by at most about one bin width, (max - min) / 5000, per re-binning.

`MultinetActionStats` reproduces, operation for operation, the statistics MultiNet v1.0 computed for
the split it evaluated (`OpenXDataset.action_stats` in `src/data_utils/openx_dataloader.py`, the ones
behind `--unnormalize=split`). A plain action tensor's sums were accumulated step by step in the action's own dtype
(float32: numpy's float64 zeros plus a TensorFlow tensor give a tensor), `std = sqrt(E[x^2] - E[x]^2 + 1e-8)` with both
squares taken by TensorFlow's `x ** 2` (which is not always `x * x`: its vectorized pow rounds differently, so a
constant dimension gets std 1e-4 and others differ from the exact std by up to ~1e-5). An action dict's float leaves,
concatenated and taken to numpy (`.numpy()`), were summed into float64 with numpy's float32 squares, the mean and its
square float64 (`from_dict`). Quantiles are exact `np.quantile` 1%/99% ones either way.

Open-X statistics (both kinds) are computed while converting (`openx.convert`) and cached in the
manifest of the converted steps, in the cache under a key of the source's content (`openx.conversion_dir`).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

NUM_QUANTILE_BINS = 5000


class RunningActionStats:
    """Accumulates [n, d] action batches; `result()` gives lists per statistic."""

    def __init__(self) -> None:
        self.count = 0
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None
        self._min: np.ndarray | None = None
        self._max: np.ndarray | None = None
        self._histograms: np.ndarray | None = None
        self._edges: np.ndarray | None = None

    def update(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch, np.float64)
        batch = batch.reshape(batch.shape[0], -1) if batch.ndim > 1 else batch.reshape(1, -1)
        if self._mean is not None and batch.shape[1] != self._mean.shape[0]:
            raise ValueError(f"action dim changed from {self._mean.shape[0]} to {batch.shape[1]}")
        n = batch.shape[0]
        batch_mean = batch.mean(axis=0)
        batch_m2 = ((batch - batch_mean) ** 2).sum(axis=0)
        if self._mean is None:
            self._mean, self._m2 = batch_mean, batch_m2
            self._min, self._max = batch.min(axis=0), batch.max(axis=0)
            self._edges = np.linspace(self._min - 1e-10, self._max + 1e-10, NUM_QUANTILE_BINS + 1, axis=1)
            self._histograms = np.zeros((batch.shape[1], NUM_QUANTILE_BINS))
        else:
            total = self.count + n
            delta = batch_mean - self._mean
            self._mean = self._mean + delta * (n / total)
            self._m2 = self._m2 + batch_m2 + delta**2 * (self.count * n / total)
            new_min, new_max = np.minimum(self._min, batch.min(axis=0)), np.maximum(self._max, batch.max(axis=0))
            if np.any(new_min < self._min) or np.any(new_max > self._max):
                self._rebin(new_min, new_max)
            self._min, self._max = new_min, new_max
        self.count += n
        for dim in range(batch.shape[1]):
            self._histograms[dim] += np.histogram(batch[:, dim], bins=self._edges[dim])[0]

    def _rebin(self, new_min: np.ndarray, new_max: np.ndarray) -> None:
        """Move every old bin's count (placed at its centre) into bins spanning the widened range."""
        new_edges = np.linspace(new_min, new_max, NUM_QUANTILE_BINS + 1, axis=1)
        for dim in range(new_edges.shape[0]):
            centres = (self._edges[dim, :-1] + self._edges[dim, 1:]) / 2
            self._histograms[dim] = np.histogram(centres, bins=new_edges[dim], weights=self._histograms[dim])[0]
        self._edges = new_edges

    def _quantile(self, q: float) -> np.ndarray:
        """Per dim, linear interpolation inside the bin where the cumulative count reaches q * count."""
        values = []
        for histogram, edges in zip(self._histograms, self._edges):
            cumulative = np.cumsum(histogram)
            index = min(int(np.searchsorted(cumulative, q * self.count)), NUM_QUANTILE_BINS - 1)
            before = cumulative[index - 1] if index else 0.0
            fraction = (q * self.count - before) / histogram[index] if histogram[index] else 0.0
            values.append(edges[index] + fraction * (edges[index + 1] - edges[index]))
        return np.array(values)

    def result(self) -> dict[str, list[float] | int]:
        if self.count == 0:
            raise ValueError("no actions seen: action statistics are undefined")
        return {
            "count": self.count,
            "size": [int(self._mean.shape[0])],
            "min": self._min.tolist(),
            "max": self._max.tolist(),
            "mean": self._mean.tolist(),
            "std": np.sqrt(self._m2 / self.count).tolist(),
            "q01": self._quantile(0.01).tolist(),
            "q99": self._quantile(0.99).tolist(),
        }


class MultinetActionStats:
    """MultiNet's split statistics (see the module docstring), fed one step's action vector at a time.

    Needs TensorFlow (the `tf` extra), which every Open-X conversion already imports: the squares must be
    TensorFlow's, on one step's `[D]` vector at a time, as MultiNet took them.
    """

    def __init__(self) -> None:
        self.count = 0
        self._sum: np.ndarray | None = None
        self._sum_of_squares: np.ndarray | None = None
        self._actions: list[np.ndarray] = []
        self._actions_dtype: np.dtype | None = None
        self._from_dict = False

    def update(self, action: np.ndarray, *, from_dict: bool = False) -> None:
        """Adds one step's flat action; `from_dict`: it is an action dict's float leaves concatenated (numpy float64
        sums, as MultiNet's `.numpy()` of them gave), else a plain action tensor (sums in its dtype, TensorFlow's
        squares)."""
        action = np.asarray(action).reshape(-1)
        if self._sum is None:
            self._from_dict = from_dict
            self._sum = np.zeros(action.shape, np.float64 if from_dict else action.dtype)
            self._sum_of_squares = self._sum.copy()
            self._actions_dtype = action.dtype
        elif action.shape != self._sum.shape or action.dtype != self._actions_dtype or from_dict != self._from_dict:
            raise ValueError(f"action changed from {self._actions_dtype} {self._sum.shape}"
                             f"{' (a dict)' if self._from_dict else ''} to {action.dtype} {action.shape}"
                             f"{' (a dict)' if from_dict else ''}")
        self._sum = self._sum + action
        self._sum_of_squares = self._sum_of_squares + self._square(action)
        self._actions.append(action)
        self.count += 1

    def _square(self, values: np.ndarray) -> np.ndarray:
        return values ** 2 if self._from_dict else _tensorflow_square(values)

    def result(self) -> dict[str, list[float] | int]:
        if self.count == 0:
            raise ValueError("no actions seen: action statistics are undefined")
        mean = self._sum / self._sum.dtype.type(self.count)
        variance = self._sum_of_squares / self._sum.dtype.type(self.count) - self._square(mean)
        actions = np.stack(self._actions)
        with np.errstate(invalid="ignore"):  # a variance cancelled below zero has no std (NaN), as MultiNet's had none
            std = np.sqrt(variance + variance.dtype.type(1e-8))
        return {
            "count": self.count,
            "size": [int(mean.shape[0])],
            "min": actions.min(axis=0).tolist(),
            "max": actions.max(axis=0).tolist(),
            "mean": mean.tolist(),
            "std": std.tolist(),
            "q01": np.quantile(actions, 0.01, axis=0).tolist(),
            "q99": np.quantile(actions, 0.99, axis=0).tolist(),
        }


def multinet_rebuilt_stats(actions: list[np.ndarray]) -> dict[str, list[float] | int]:
    """MultiNet's statistics over actions it rebuilt from action dicts (`openx_inference.py`
    `_recalculate_action_stats_from_tensors`, d6fe80e lines 101-139): numpy's min, max, mean and population std
    of the stacked actions, in their own dtype. q01/q99 (exact `np.quantile`), which MultiNet's recomputation left
    out, serve OpenVLA's bounds rule."""
    stacked = np.stack(actions)
    return {
        "count": int(stacked.shape[0]),
        "size": [int(stacked.shape[1])],
        "min": np.min(stacked, axis=0).tolist(),
        "max": np.max(stacked, axis=0).tolist(),
        "mean": np.mean(stacked, axis=0).tolist(),
        "std": np.std(stacked, axis=0).tolist(),
        "q01": np.quantile(stacked, 0.01, axis=0).tolist(),
        "q99": np.quantile(stacked, 0.99, axis=0).tolist(),
    }


def _tensorflow_square(values: np.ndarray) -> np.ndarray:
    """`tf.constant(values) ** 2` as MultiNet computed it (TensorFlow's pow, not `values * values`)."""
    import tensorflow as tf

    return (tf.constant(values) ** 2).numpy()


def openpi_running_mean_std(batches: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std as openpi's `normalize.RunningStats` accumulates them over `[n, d]` batches (MultiNet's Overcooked
    statistics, `overcooked_inference.get_dataset_stats`): float32 running means of x and x^2, each batch's mean
    weighted in by `n / count`, and `sqrt(max(0, E[x^2] - mean^2))`, operation for operation."""
    count, mean, mean_of_squares = 0, None, None
    for batch in batches:
        batch = np.asarray(batch, np.float32)
        if count == 0:
            mean, mean_of_squares = np.mean(batch, axis=0), np.mean(batch**2, axis=0)
        count += batch.shape[0]
        mean += (np.mean(batch, axis=0) - mean) * (batch.shape[0] / count)
        mean_of_squares += (np.mean(batch**2, axis=0) - mean_of_squares) * (batch.shape[0] / count)
    if count < 2:
        raise ValueError(f"statistics need 2 actions or more, got {count}")
    return mean, np.sqrt(np.maximum(0, mean_of_squares - mean**2))


def compute_action_stats(actions: Iterable[np.ndarray], chunk: int = 1024) -> dict:
    """One pass over per-step action vectors, accumulated in chunks of `chunk` steps."""
    stats, pending = RunningActionStats(), []
    for action in actions:
        pending.append(np.asarray(action, np.float64).reshape(-1))
        if len(pending) == chunk:
            stats.update(np.stack(pending))
            pending = []
    if pending:
        stats.update(np.stack(pending))
    return stats.result()
