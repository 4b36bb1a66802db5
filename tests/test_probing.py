"""Layerwise probes: planted per-layer signals recovered at their Bayes accuracy, shuffled labels at chance, the
solver against SciPy's L-BFGS on the same objective, grouped folds, and the protocol's retention number."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from scipy.stats import norm

from multinet_jax import probing

STRENGTHS = np.array([0.0, 0.25, 0.6, 1.1, 0.7, 0.3])  # class-mean offset along one direction, per layer (sigma 1)


def _planted(count=1200, width=12, seed=0):
    """Two layouts per item with opposite labels; layer l separates the classes by +/- STRENGTHS[l]."""
    rng = np.random.default_rng(seed)
    labels = np.tile([0, 1], count // 2)
    rng.shuffle(labels.reshape(-1, 2), axis=1)
    direction = rng.standard_normal(width)
    direction /= np.linalg.norm(direction)
    signal = (2 * labels - 1)[:, None, None] * STRENGTHS[None, :, None] * direction
    features = rng.standard_normal((count, len(STRENGTHS), width)) + signal
    return features.astype(np.float32), labels, np.arange(count) // 2


def test_planted_signal_follows_the_bayes_curve_and_controls_sit_at_chance():
    features, labels, groups = _planted()
    result = probing.fit_probes(features, labels, groups, num_folds=5, seed=0)
    bayes = norm.cdf(STRENGTHS)  # the best any classifier can do for +/- mu along a line with unit noise
    np.testing.assert_allclose(result.accuracy, bayes, atol=0.04)
    assert result.peak_layer == int(np.argmax(STRENGTHS)) and result.accuracy.shape == (len(STRENGTHS),)
    assert result.fold_accuracy.shape == (len(STRENGTHS), 5)
    np.testing.assert_allclose(result.control_accuracy, 0.5, atol=0.05)
    assert result.chance == 0.5 and result.converged.all()
    # both layouts of an item share a fold
    assert np.all(result.folds[0::2] == result.folds[1::2])


def _scipy_probe(x_train, y_train, x_test, num_classes, C):
    """The same probe fitted by SciPy's L-BFGS-B: standardize on the train rows, sklearn's mean-loss objective."""
    mean, std = x_train.mean(0), x_train.std(0)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    n, d = x_train.shape
    outputs = 1 if num_classes == 2 else num_classes

    def objective(theta):
        w, b = theta[: d * outputs].reshape(d, outputs), theta[d * outputs :]
        z = x_train @ w + b
        if outputs == 1:
            p = 1 / (1 + np.exp(-z[:, 0]))
            loss = np.logaddexp(0, z[:, 0]) - y_train * z[:, 0]
            dz = (p - y_train)[:, None]
        else:
            z = z - z.max(1, keepdims=True)
            log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
            one_hot = np.eye(num_classes)[y_train]
            loss, dz = -(one_hot * log_p).sum(1), np.exp(log_p) - one_hot
        value = loss.mean() + (w**2).sum() / (2 * C * n)
        grad_w = x_train.T @ dz / n + w / (C * n)
        return value, np.concatenate([grad_w.ravel(), dz.mean(0)])

    theta = scipy.optimize.minimize(objective, np.zeros(d * outputs + outputs), jac=True, method="L-BFGS-B",
                                    options={"maxiter": 2000, "gtol": 1e-8}).x
    z = x_test @ theta[: d * outputs].reshape(d, outputs) + theta[d * outputs :]
    return (z[:, 0] > 0).astype(int) if outputs == 1 else z.argmax(1)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_probes_match_scipy_lbfgs_on_the_same_objective(num_classes):
    rng = np.random.default_rng(1)
    count, width = 240, 20
    labels = rng.integers(0, num_classes, count)
    means = rng.standard_normal((2, num_classes, width)) * np.array([0.3, 0.15])[:, None, None]
    features = (rng.standard_normal((count, 2, width)) * rng.uniform(0.5, 3, width) + 1.5
                + np.stack([means[layer][labels] for layer in range(2)], 1)).astype(np.float32)
    result = probing.fit_probes(features, labels, num_folds=4, seed=3, C=0.5, max_iter=500, tol=1e-5, control=False)
    assert result.control_accuracy is None and result.converged.all()
    for layer in range(2):
        correct = 0
        for fold in range(4):
            test = result.folds == fold
            predicted = _scipy_probe(features[~test, layer].astype(np.float64), labels[~test],
                                     features[test, layer].astype(np.float64), num_classes, C=0.5)
            correct += int(np.sum(predicted == labels[test]))
        assert abs(result.accuracy[layer] * count - correct) <= 1  # at most one borderline sample flips


def test_grouped_folds():
    groups = np.repeat(np.arange(23), 2)
    folds = probing.grouped_folds(groups, 5, seed=0)
    assert np.all(folds[0::2] == folds[1::2])
    assert sorted(np.bincount(folds).tolist()) == [8, 8, 10, 10, 10]  # 23 groups of 2 dealt to 5 folds
    np.testing.assert_array_equal(folds, probing.grouped_folds(groups, 5, seed=0))
    assert not np.array_equal(folds, probing.grouped_folds(groups, 5, seed=1))
    with pytest.raises(ValueError, match=r"num_folds must be in \[2, 23\]"):
        probing.grouped_folds(groups, 24)


def test_retention_of_the_published_pi0_maxima():
    prefix = {"a": [60.0, 63.83], "b": [65.67, 51.0], "c": [71.26], "d": [59.18, 40.0]}
    action = {"a": [55.79], "b": [50.0, 55.72], "c": [56.99, 52.0], "d": [53.08]}
    assert probing.retention(prefix, action, chance=50) == pytest.approx(0.362, abs=5e-4)
    fractions = {task: [value / 100 for value in curve] for task, curve in prefix.items()}
    assert probing.retention(fractions, {t: [v / 100 for v in c] for t, c in action.items()}) == pytest.approx(0.362, abs=5e-4)
    assert probing.peak_layer([0.5, 0.7, 0.7, 0.6]) == 1
    with pytest.raises(ValueError, match="never exceeds chance"):
        probing.retention({"a": [0.5, 0.4]}, {"a": [0.6]})
    with pytest.raises(ValueError, match="same non-empty tasks"):
        probing.retention({"a": [0.7]}, {"b": [0.6]})


@pytest.mark.parametrize("features, labels, groups, message", [
    (np.zeros((4, 8)), np.array([0, 1, 0, 1]), None, r"features must be \[n, layers, width\]"),
    (np.zeros((4, 1, 2)), np.array([0, 1, 0]), None, r"labels must be \[n\] = \[4\]"),
    (np.zeros((4, 1, 2)), np.array([0, 1, 0, 1]), np.arange(3), r"groups must be \[n\] = \[4\]"),
    (np.zeros((4, 1, 2)), np.array([0.0, 1.0, 0.0, 1.0]), None, "non-negative integer class indices"),
    (np.zeros((4, 1, 2)), np.array([1, 1, 1, 1]), None, "a single class"),
    (np.full((4, 1, 2), np.nan), np.array([0, 1, 0, 1]), None, "NaN or inf"),
    # groups that each hold one class: a fold then trains on the other class alone (it scored 0 for two classes)
    (np.random.default_rng(0).normal(size=(8, 1, 2)), np.array([0, 0, 0, 0, 1, 1, 1, 1]), np.array([0, 0, 0, 0, 1, 1, 1, 1]),
     r"fold 0 trains on a single class \(\[1\]\): the groups put"),
])
def test_bad_probe_inputs(features, labels, groups, message):
    with pytest.raises(ValueError, match=message):
        probing.fit_probes(features, labels, groups, num_folds=2)


def test_a_large_constant_offset_changes_no_probe():
    """Standardized probes are invariant to a column's constant offset. One informative dimension with spread ~0.09
    (and 63 of noise) gave accuracy 0.825; offset by 1e4, as a residual stream's massive dimensions are, the float32
    one-pass variance E[x^2] - mean^2 cancelled to 0 (the column left unscaled) and the accuracy fell to chance (0.505).
    The base is rounded to the grid float32 resolves at 1e4 (2^-10), so the offset itself rounds nothing."""
    rng = np.random.default_rng(0)
    count, width = 200, 64
    labels = np.tile([0, 1], count // 2)
    groups = np.arange(count) // 2
    base = rng.normal(size=(count, 1, width))
    base[:, 0, 0] = 0.05 * (rng.normal(size=count) + 1.5 * (2 * labels - 1))
    base = np.round(base * 2**10) / 2**10
    offset = base.copy()
    offset[:, :, 0] += 1e4
    fit = lambda features: probing.fit_probes(features.astype(np.float32), labels, groups, num_folds=5)
    plain, shifted = fit(base), fit(offset)
    assert plain.accuracy[0] > 0.8 and plain.converged.all() and shifted.converged.all()
    np.testing.assert_array_equal(shifted.fold_accuracy, plain.fold_accuracy)
    np.testing.assert_array_equal(shifted.control_fold_accuracy, plain.control_fold_accuracy)
    np.testing.assert_array_equal(shifted.iterations, plain.iterations)


def test_the_standardizer_holds_every_digit_of_a_small_spread_on_a_large_offset():
    """Each fold's mean and std of a float32 column 1e4 + spread 0.05, against float64 over the same float32 values:
    E[x^2] - mean^2 gave variance 0 or 16 here (the true one is 0.0025). The solver also centres columns first, but a
    fold whose held-out rows sit far from its training rows leaves that fold's offset to the standardizer."""
    from multinet_jax.probing.probes import _standardizer

    rng = np.random.default_rng(0)
    x = (1e4 + 0.05 * rng.normal(size=(200, 3))).astype(np.float32)
    folds = probing.grouped_folds(np.arange(200), 5, seed=0)
    fold_train = folds[None, :] != np.arange(5)[:, None]
    mean, inv_std = _standardizer(jnp.asarray(x), jnp.asarray(fold_train))
    for fold, rows in enumerate(fold_train):
        np.testing.assert_allclose(mean[fold], x[rows].astype(np.float64).mean(0), rtol=0, atol=1e-3)
        np.testing.assert_allclose(1 / inv_std[fold], x[rows].astype(np.float64).std(0), rtol=1e-3)


def test_classes_are_the_distinct_labels_and_chance_the_majority_share():
    """Labels {1, 2} are two classes (not a 3-class softmax with chance 1/3), and 3:1 labels have chance 0.75, what
    always answering the majority scores (1 / num_classes said 0.5)."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 2, 8))
    labels = np.tile([1, 2], 20)
    shifted = probing.fit_probes(features, labels, np.arange(40) // 2, num_folds=5, null_labels=labels[None, ::-1])
    indexed = probing.fit_probes(features, labels - 1, np.arange(40) // 2, num_folds=5, null_labels=labels[None, ::-1] - 1)
    assert shifted.num_classes == 2 and shifted.chance == 0.5 and shifted.classes.tolist() == [1, 2]
    for name in ("accuracy", "fold_accuracy", "control_accuracy", "null_accuracy", "iterations"):
        np.testing.assert_array_equal(getattr(shifted, name), getattr(indexed, name))
    unbalanced = probing.fit_probes(features, np.array([0, 0, 0, 1] * 10), num_folds=5)
    assert unbalanced.chance == 0.75 and unbalanced.class_counts.tolist() == [30, 10]
    with pytest.raises(ValueError, match=r"of the labels' 2 classes \[1, 2\]"):
        probing.fit_probes(features, labels, num_folds=5, null_labels=labels[None] - 1)
