"""Scoring speed: 1,000,000 Open-X samples (D=7) and 1,000,000 Overcooked samples, full metric set.

Compares the jitted kernels with the straightforward per-sample NumPy implementation of the same
rules (`tests/metrics_reference.py`) in one run and reports the ratio. Timed paths:
  - `from_arrays`: NumPy arrays -> pack (validity from finiteness) -> kernel -> device values;
  - `score_api`:   `metrics.score(domain, records)` on Python records (host validation and packing
                   of every value included), Open-X only: it is the per-value Python check that costs;
  - `numpy_reference`: the per-sample loop, one run (it takes minutes).

    .venv/bin/python -m benchmarks.metrics_speed [--samples=1000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import time_call, write_report
from multinet_jax import metrics
from multinet_jax.metrics.discrete_actions import DiscreteInputs
from tests import metrics_reference as reference

INVALID_FRACTION = 0.01


def openx_data(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    truth = rng.normal(size=(count, 7))
    predictions = truth + rng.normal(0, 0.3, truth.shape) * rng.exponential(1, (count, 1))
    predictions[rng.random(count) < INVALID_FRACTION, 3] = np.nan
    return predictions, truth


def _overcooked_data(count: int, rng: np.random.Generator) -> DiscreteInputs:
    truth = rng.integers(0, 36, count)
    probabilities = rng.dirichlet(np.full(36, 0.5), count)
    valid = rng.random(count) >= INVALID_FRACTION
    return DiscreteInputs(np.where(valid[:, None], probabilities, 0.0), valid, truth)


def _timed_once(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results: dict[str, dict] = {"samples": args.samples, "invalid_fraction": INVALID_FRACTION}

    predictions, truth = openx_data(args.samples, rng)
    stats = metrics.action_stats_from_ground_truth(truth)
    from_arrays = time_call(lambda: metrics.continuous(metrics.pack_continuous(predictions, truth), stats), iters=args.iters)
    prediction_lists = [row if np.isfinite(row).all() else None for row in predictions.tolist()]
    records = [{"id": str(i), "prediction": p, "ground_truth": g} for i, (p, g) in enumerate(zip(prediction_lists, truth.tolist()))]
    score_api = time_call(lambda: metrics.score("openx", records, action_stats=stats), warmup=1, iters=1)
    expected, reference_seconds = _timed_once(lambda: reference.continuous(prediction_lists, truth, stats))
    ours = metrics.to_python(metrics.continuous(metrics.pack_continuous(predictions, truth), stats))
    results["openx"] = {
        "from_arrays": from_arrays,
        "score_api_from_python_records": score_api,
        "numpy_reference_s": reference_seconds,
        "speedup_from_arrays": reference_seconds / from_arrays["median_s"],
        "speedup_score_api": reference_seconds / score_api["median_s"],
        "max_relative_difference": _max_relative_difference(ours, expected),
    }
    del records, prediction_lists

    inputs = _overcooked_data(args.samples, rng)
    from_arrays = time_call(lambda: metrics.discrete(inputs), iters=args.iters)
    rows = [row if ok else None for row, ok in zip(inputs.probabilities, inputs.valid)]
    truth_list = inputs.ground_truth.tolist()
    expected, reference_seconds = _timed_once(lambda: reference.discrete(rows, truth_list))
    ours = metrics.to_python(metrics.discrete(inputs))
    results["overcooked"] = {
        "from_arrays": from_arrays,
        "numpy_reference_s": reference_seconds,
        "speedup_from_arrays": reference_seconds / from_arrays["median_s"],
        "max_relative_difference": _max_relative_difference(ours, expected),
    }
    write_report("metrics_speed", results)


def _max_relative_difference(ours: dict, expected: dict) -> float:
    """Largest relative gap over the scalar metrics both report (NaN/inf must agree exactly)."""
    worst = 0.0
    for key, value in expected.items():
        if isinstance(value, dict):
            worst = max(worst, _max_relative_difference(ours[key], value))
        elif isinstance(value, float) and np.isfinite(value):
            worst = max(worst, abs(ours[key] - value) / max(abs(value), 1e-300))
        elif isinstance(value, float) and not (np.isnan(value) and np.isnan(ours[key])) and ours[key] != value:
            return float("inf")
    return worst


if __name__ == "__main__":
    main()
