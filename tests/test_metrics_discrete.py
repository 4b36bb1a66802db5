"""Overcooked discrete-action metrics against a per-sample NumPy reference, on real joint actions."""

from __future__ import annotations

import ast
import csv
import json
import math
import pathlib

import numpy as np
import pytest

import metrics_reference as reference
from conftest import shared_path
from metrics_helpers import assert_metrics_match, records, with_pipeline_names
from multinet_jax import metrics

# overcooked_ai's Action.INDEX_TO_ACTION: NORTH, SOUTH, EAST, WEST, STAY, INTERACT.
PLAYER_ACTIONS = [(0, -1), (0, 1), (1, 0), (-1, 0), (0, 0), "interact"]


def _player_action(action) -> int:
    return PLAYER_ACTIONS.index(action if action == "interact" else tuple(action))


@pytest.fixture(scope="module")
def real_joint_actions() -> list[int]:
    """Joint actions (6 * player0 + player1) from MultiNet's Overcooked sample trajectory CSV."""
    csv.field_size_limit(1 << 30)
    path = shared_path("data", "multinet_sample", "overcooked_ai", "public", "2020_hh_trials_train.csv")
    with open(path, newline="") as file:
        joint = [ast.literal_eval(row["joint_action"].replace("'", '"')) for row in csv.DictReader(file)]
    return [6 * _player_action(p0) + _player_action(p1) for p0, p1 in joint]


INVALID_PREDICTIONS = [None, 36, -1, "4", [0.5] * 36, [float("nan")] + [1 / 35] * 35]


def _mixed_predictions(truth: list[int], rng: np.random.Generator) -> list:
    predictions = []
    for action in truth:
        kind = rng.integers(4 + len(INVALID_PREDICTIONS))
        if kind == 0:
            predictions.append(action)
        elif kind == 1:
            predictions.append(int(rng.integers(36)))
        elif kind == 2:
            predictions.append(rng.dirichlet(np.full(36, 0.3)).tolist())
        elif kind == 3:
            peaked = np.full(36, 0.1 / 35)
            peaked[action] = 0.9
            predictions.append(peaked.tolist())
        else:
            predictions.append(INVALID_PREDICTIONS[kind - 4])
    return predictions


def test_real_joint_actions_with_perturbed_predictions_match_reference(real_joint_actions):
    rng = np.random.default_rng(0)
    truth = real_joint_actions * 40  # the public sample is short: repeat it, predictions differ per copy
    predictions = _mixed_predictions(truth, rng)
    result = metrics.score("overcooked_ai", records(predictions, truth))
    assert_metrics_match(result, with_pipeline_names(reference.discrete(predictions, truth), "discrete"))


def test_random_joint_actions_with_every_invalid_kind_match_reference():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 36, 400).tolist()
    predictions = _mixed_predictions(truth, rng)
    predictions[:6] = [None, 36, -1, "4", [0.5] * 36, [1.0 + 2e-5] + [0.0] * 35]  # sum off by more than 1e-5
    predictions[6] = [1.0 + 5e-6] + [0.0] * 35  # within 1e-5 of 1 but a value > 1: invalid
    predictions[7] = [1.0 - 5e-6] + [5e-6 / 35] * 35  # sum within tolerance: valid
    result = metrics.score("overcooked", records(predictions, truth))
    expected = reference.discrete(predictions, truth)
    assert_metrics_match(result, with_pipeline_names(expected, "discrete"))
    assert result["predicted_actions"][:8] == [-1] * 7 + [0]


def test_player_marginals_split_the_joint_action():
    # Joint action 6 * player0 + player1: 17 is (EAST, INTERACT), 16 (EAST, STAY), 4 (NORTH, STAY),
    # 22 (WEST, STAY). Ties go to the first index, as np.argmax breaks them.
    half = [0.0] * 36
    half[16] = half[17] = 0.5  # player0 surely EAST; player1 STAY or INTERACT
    result = metrics.score("overcooked", records([17, 17, half], [17, 4, 22]))
    assert result["predicted_actions"] == [17, 17, 16]
    assert result["player0_results"]["predicted_actions"] == [2, 2, 2]
    assert result["player1_results"]["predicted_actions"] == [5, 5, 4]
    assert result["player0_results"]["ground_truth_actions"] == [2, 0, 3]
    assert result["player1_results"]["ground_truth_actions"] == [5, 4, 4]
    assert result["exact_match"] == 1 / 3
    assert result["player0_results"]["exact_match"] == 1 / 3
    assert result["player1_results"]["exact_match"] == 2 / 3
    assert result["player1_results"]["avg_dataset_amae"] == pytest.approx((0 + 2 + 1) / 3)


def test_all_invalid_predictions():
    result = metrics.score("overcooked", records([None, "x", 99], [0, 28, 35]))
    assert result["total_invalid_preds"] == 3 and result["percentage_invalids"] == 100.0
    assert result["avg_dataset_amae"] == 2.0 and result["avg_dataset_amse"] == 2.0
    assert math.isnan(result["normalized_amae"])  # all errors equal
    assert result["micro_precision"] == 0.0 and result["micro_precision_without_invalid"] == 0.0
    assert result["micro_recall"] == 0.0 and result["macro_f1"] == 0.0
    assert result["player1_results"]["total_invalid_preds"] == 3


def test_single_sample_is_nan_for_distribution_metrics():
    result = metrics.score("overcooked", records([[1 / 36] * 36], [5]))
    assert result["num_timesteps"] == 1
    assert math.isnan(result["normalized_amae"]) and math.isnan(result["max_relative_mae"])
    assert result["avg_dataset_amae"] == pytest.approx(35 / 36 + (1 - 1 / 36))


def test_integer_arrays_pack_like_python_ints():
    truth = np.array([0, 5, 28, 35])
    predictions = np.array([0, 36, 28, -1])
    from_array = metrics.pack_discrete(predictions, truth)
    from_list = metrics.pack_discrete(predictions.tolist(), truth.tolist())
    for packed_array, packed_list in zip(from_array, from_list):
        np.testing.assert_array_equal(packed_array, packed_list)


def test_bad_ground_truth_names_the_record():
    with pytest.raises(metrics.RecordError, match="record 1: field 'ground_truth'"):
        metrics.score("overcooked", records([0, 0], [3, 36]))
    with pytest.raises(metrics.RecordError, match="record 0: field 'ground_truth'"):
        metrics.score("overcooked", records([0], ["3"]))


def test_clipped_metrics_are_multinets_pi0_scripts():
    """Records that carry the rounded action clipped into [0, 35] (the evaluator's) get `avg_clipped_*`, computed as
    MultiNet's `overcooked_inference.py` did (expected values from its own functions, `fixtures/README.md`)."""
    reference = json.loads((pathlib.Path(__file__).parent / "fixtures" / "multinet_generated.json").read_text())["overcooked_clipped"]
    rounded, truth = reference["rounded_predictions"], reference["ground_truth"]
    predictions = [value if 0 <= value < 36 else None for value in rounded]
    clipped = [min(max(value, 0), 35) for value in rounded]
    result = metrics.score("overcooked", records(predictions, truth, clipped_prediction=clipped))
    for name, value in reference["multinet"].items():
        assert result[name] == pytest.approx(value, rel=1e-12), name
    assert not any(name.startswith("avg_clipped") for name in metrics.score("overcooked", records(predictions, truth)))
    with pytest.raises(metrics.RecordError, match="record 1: field 'clipped_prediction'"):
        metrics.score("overcooked", records([0, 0], [3, 5], clipped_prediction=[0, 36]))
