"""Probe fitting speed: `probing.fit_probes` (all layers and folds in one jitted solve) vs a per-layer scikit-learn
`LogisticRegression` loop on the same folds, the Act2Answer protocol's full size: 36 layers (18 prefix + 18 action
expert of Pi0) x 5 grouped folds x 3,440 episodes (1,720 items x 2 layouts) x width 2048.

Features are synthetic but shaped like activations: per layer a low-rank correlated part (64 latent directions)
plus isotropic noise, with a planted per-layer signal towards the label. Both sides standardize with the training
rows' statistics and solve the same objective (C=1, lbfgs, the same max_iter and tol); the baseline's folds are
ours. Timed in alternation (ours, sklearn, ours, sklearn, ...), medians; ours excludes compilation (warmed up).
Needs the `bench` extra (scikit-learn); about 4 GB of RAM: run it under `flock /work/.heavy.lock`.

    .venv/bin/python -m benchmarks.probing_speed [--episodes=3440 --layers=36 --width=2048 --rounds=2]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from benchmarks.common import write_report
from multinet_jax import probing


def _features(episodes: int, layers: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.tile([0, 1], episodes // 2)  # two layouts per item, opposite targets
    rng.shuffle(labels.reshape(-1, 2), axis=1)
    groups = np.arange(episodes) // 2
    strength = 0.15 + 0.5 * np.exp(-0.5 * ((np.arange(layers) - layers * 0.35) / (layers * 0.15)) ** 2)
    features = np.empty((episodes, layers, width), np.float32)
    for layer in range(layers):
        latent = rng.standard_normal((episodes, 64)).astype(np.float32)
        mixing = rng.standard_normal((64, width)).astype(np.float32) / 4
        direction = rng.standard_normal(width).astype(np.float32) / np.sqrt(width)
        noise = rng.standard_normal((episodes, width), dtype=np.float32)
        features[:, layer] = latent @ mixing + noise + (2 * labels - 1)[:, None] * strength[layer] * direction * 12
    return features, labels, groups


def _sklearn_probes(features, labels, folds, C: float, max_iter: int, tol: float) -> tuple[np.ndarray, int, np.ndarray]:
    """Per layer and fold: StandardScaler + LogisticRegression(lbfgs); held-out accuracy, unconverged fits and the
    L-BFGS iterations `[layers, folds]`."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    accuracy = np.zeros(features.shape[1])
    iterations = np.zeros((features.shape[1], len(np.unique(folds))), np.int64)
    unconverged = 0
    for layer in range(features.shape[1]):
        correct = 0
        for index, fold in enumerate(np.unique(folds)):
            test = folds == fold
            scaler = StandardScaler().fit(features[~test, layer])
            model = LogisticRegression(C=C, max_iter=max_iter, tol=tol)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model.fit(scaler.transform(features[~test, layer]), labels[~test])
            unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
            iterations[layer, index] = int(model.n_iter_[0])
            correct += int(np.sum(model.predict(scaler.transform(features[test, layer])) == labels[test]))
        accuracy[layer] = correct / len(labels)
    return accuracy, unconverged, iterations


def _timed(fn):
    start = time.perf_counter()
    result = jax.block_until_ready(fn())
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=3440)
    parser.add_argument("--layers", type=int, default=36)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max_iter", type=int, default=100)
    parser.add_argument("--tol", type=float, default=1e-4)
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    features, labels, groups = _features(args.episodes, args.layers, args.width)
    options = {"num_folds": args.folds, "seed": 0, "C": 1.0, "max_iter": args.max_iter, "tol": args.tol}
    ours = lambda control: probing.fit_probes(features, labels, groups, control=control, **options)
    result, compile_and_first = _timed(lambda: ours(False))  # warm-up: includes tracing and compilation
    ours_seconds, sklearn_seconds, with_control_seconds = [], [], []
    for _ in range(args.rounds):
        result, seconds = _timed(lambda: ours(False))
        ours_seconds.append(seconds)
        (baseline, unconverged, sklearn_iterations), seconds = _timed(lambda: _sklearn_probes(features, labels, result.folds, 1.0, args.max_iter, args.tol))
        sklearn_seconds.append(seconds)
    ours(True)  # compile the with-control solve
    for _ in range(args.rounds):
        controlled, seconds = _timed(lambda: ours(True))
        with_control_seconds.append(seconds)
    gap = np.abs(result.accuracy - baseline) * 100
    write_report("probing_speed", {
        "shape": {"episodes": args.episodes, "layers": args.layers, "width": args.width, "folds": args.folds},
        "settings": {"C": 1.0, "max_iter": args.max_iter, "tol": args.tol, "rounds": args.rounds},
        "load_average_at_start": load_at_start,
        "ours_first_call_with_compile_s": compile_and_first,
        "ours_s": float(np.median(ours_seconds)),
        "ours_with_shuffled_control_s": float(np.median(with_control_seconds)),
        "sklearn_loop_s": float(np.median(sklearn_seconds)),
        "speedup": float(np.median(sklearn_seconds) / np.median(ours_seconds)),
        "speedup_with_control_vs_sklearn_without": float(np.median(sklearn_seconds) / np.median(with_control_seconds)),
        "max_accuracy_gap_points": float(gap.max()),
        "mean_accuracy_gap_points": float(gap.mean()),
        "ours_unconverged_fits": int((~result.converged).sum()),
        "sklearn_unconverged_fits": unconverged,
        "ours_iterations_per_layer": result.iterations.max(1).tolist(),  # a layer's step runs until its last fold converges
        "sklearn_iterations_per_layer": sklearn_iterations.max(1).tolist(),
        "ours_iterations_total": int(result.iterations.sum()),
        "sklearn_iterations_total": int(sklearn_iterations.sum()),
        "ours_accuracy": result.accuracy.round(4).tolist(),
        "sklearn_accuracy": baseline.round(4).tolist(),
        "ours_control_accuracy": controlled.control_accuracy.round(4).tolist(),
        "load_average_at_end": os.getloadavg()[0],
    })


if __name__ == "__main__":
    main()
