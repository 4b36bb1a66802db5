"""Plots: percentages and plain values on separate axes, counts on whole-number axes, every class shown."""

from __future__ import annotations

import numpy as np

from multinet_jax import domains
from multinet_jax.eval import summary


def _overcooked_records() -> list[dict]:
    truths, predictions = [0, 5, 5, 35], [5, 5, None, 35]
    return [{"id": str(i), "prediction": p, "ground_truth": t} for i, (p, t) in enumerate(zip(predictions, truths))]


def test_class_distribution_shows_every_class_with_zero_counts():
    labels, predicted, truth = summary._class_counts(domains.lookup("overcooked_ai"), _overcooked_records())
    assert labels == [str(index) for index in range(36)] + ["invalid"]
    assert dict(zip(labels, predicted)) == {**{label: 0 for label in labels}, "5": 2, "35": 1, "invalid": 1}
    assert dict(zip(labels, truth)) == {**{label: 0 for label in labels}, "0": 1, "5": 2, "35": 1}


def test_percentages_never_share_an_axis_with_fractions_and_counts_are_whole_numbers():
    metrics = {"exact_match": 0.5, "micro_f1": 0.4, "macro_f1": 0.3, "avg_dataset_amae": 1.25, "percentage_invalids": 25.0}
    figure = summary.domain_figure(domains.lookup("overcooked_ai"), metrics, _overcooked_records())
    plain, percent, distribution = figure.axes
    assert [tick.get_text() for tick in plain.get_yticklabels()] == ["exact_match", "micro_f1", "macro_f1", "avg_dataset_amae"]
    assert [tick.get_text() for tick in percent.get_yticklabels()] == ["percentage_invalids"] and percent.get_xlim() == (0, 100)
    ticks = distribution.get_yticks()
    assert distribution.get_ylabel() == "samples" and np.array_equal(ticks, np.round(ticks))
    assert len(distribution.get_xticklabels()) == 37
