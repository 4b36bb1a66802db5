"""Open-X continuous-action metrics against MultiNet's published result and a per-sample NumPy reference."""

from __future__ import annotations

import json
import math
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

import metrics_reference as reference
from multinet_jax import metrics
from conftest import shared_path
from metrics_helpers import assert_metrics_match, records, with_pipeline_names

# Run metadata of MultiNet's pipeline, not functions of the predictions.
PIPELINE_KEYS = {"eval_time", "total_batches"}


@pytest.fixture(scope="module")
def published():
    return json.loads(shared_path("data", "multinet_pi0_openx_bimanual_results.json").read_text())


def test_reproduces_every_stored_multinet_metric(published):
    result = metrics.score("openx_bimanual", records(published["all_preds"], published["all_gt"]))
    stored = published["stored_aggregates"]
    compared = 0
    for key, value in stored.items():
        if key in PIPELINE_KEYS:
            continue
        ours = result[key]  # MultiNet's own names, including those its Pi0 script used (PIPELINE_NAMES)
        assert math.isclose(ours, value, rel_tol=1e-9, abs_tol=1e-300), f"{key}: {ours} != stored {value}"
        compared += 1
    assert compared == len(stored) - len(PIPELINE_KEYS)


def test_bundled_example_is_the_published_result(published):
    from conftest import REPO_ROOT

    lines = (REPO_ROOT / "examples" / "score" / "openx_bimanual_pi0.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [row["prediction"] for row in rows] == published["all_preds"]
    assert [row["ground_truth"] for row in rows] == published["all_gt"]


def _perturbed(truth: np.ndarray, rng: np.random.Generator) -> list:
    """Real ground truth plus noise, with every kind of invalid prediction mixed in."""
    predictions = (truth + rng.normal(0, 0.2, truth.shape) * rng.exponential(1, (len(truth), 1))).tolist()
    predictions[0] = None
    predictions[1] = predictions[1][:-1]  # wrong length
    predictions[2] = [float("nan")] + predictions[2][1:]
    predictions[3] = [math.inf] + predictions[3][1:]
    predictions[4] = [str(v) for v in predictions[4]]  # numeric strings (MultiNet's validator rejects them)
    predictions[5] = "not an action"
    predictions[6] = truth[6].tolist()  # exact: a success
    predictions[7] = [int(round(v)) for v in truth[7]]  # ints are valid numbers
    return predictions


def test_real_ground_truth_with_perturbed_and_invalid_predictions_matches_reference(published):
    truth = np.asarray(published["all_gt"])
    predictions = _perturbed(truth, np.random.default_rng(0))
    stats = metrics.action_stats_from_ground_truth(truth)
    result = metrics.score("openx", records(predictions, truth.tolist()), action_stats=stats)
    assert_metrics_match(result, with_pipeline_names(reference.continuous(predictions, truth, stats), "continuous"))
    assert result["total_invalid_preds"] == 6
    assert result["action_success_rate"] == pytest.approx(100 / len(truth))
    assert result["avg_baseline_relative_mae"] == math.inf  # invalid predictions are inf


def test_default_action_stats_come_from_the_ground_truth(published):
    truth = np.asarray(published["all_gt"])
    predictions = [None] + published["all_preds"][1:]
    default = metrics.score("openx", records(predictions, truth.tolist()))
    expected = reference.continuous(
        predictions, truth, {"min": truth.min(0), "max": truth.max(0), "mean": truth.mean(0)}
    )
    assert_metrics_match(default, with_pipeline_names(expected, "continuous"))


CAPABILITIES = json.loads((pathlib.Path(__file__).parent / "fixtures" / "multinet_capability_metrics.json").read_text())


@pytest.mark.parametrize("domain", ["openx_bimanual", "openx_mobile_manipulation"])
def test_capability_metrics_are_multinets(domain):
    """`fixtures/multinet_capability_metrics.json`: MultiNet's harness (`calculate_capability_metrics`, d6fe80e) on
    predictions valid for one slice only (None, NaN or inf in the other, too few or too many values), for none (a
    string: numpy makes every value one) and whole: the same slices under the same names, every metric it gave."""
    reference = CAPABILITIES[domain]
    result = metrics.score(domain, records(reference["predictions"], reference["ground_truth"]),
                           action_stats=reference["action_stats"])
    assert {name: list(span) for name, span in metrics.ACTION_SLICES[domain].items()} == reference["slices"]
    ours = result["capability_metrics"]
    assert set(ours) == set(reference["capability_metrics"])
    for name, expected in reference["capability_metrics"].items():
        assert_metrics_match({key: ours[name][key] for key in expected}, expected, rtol=1e-12)
    invalid = {name: expected["total_invalid_preds"] for name, expected in reference["capability_metrics"].items()}
    assert len(set(invalid.values())) == 2 and result["total_invalid_preds"] > max(invalid.values())  # per slice


@pytest.mark.parametrize("case", range(3))
def test_whole_vector_metrics_are_multinets_to_the_last_bit(case):
    """`fixtures/multinet_capability_metrics.json` "whole_vector": MultiNet's `RoboticsMetricsCalculator` on 7-dim
    integer errors whose per-sample means sit exactly on the outlier threshold (9/7 > 3 * 3/7 holds only when each
    7-dim mean is correctly rounded: XLA's division by a broadcast 7 as a multiply by 1/7 gave 0.0, not 1/3) and
    on random 7- and 14-dim errors: every threshold and per-sample statistic the same."""
    reference = CAPABILITIES["whole_vector"][case]
    result = metrics.score("openx", records(reference["predictions"], reference["ground_truth"]),
                           action_stats=reference["action_stats"])
    expected = with_pipeline_names(reference["metrics"], "continuous")
    assert_metrics_match({key: result[key] for key in expected}, expected, rtol=1e-12)
    for key in ("proportion_beyond_threshold_mae", "max_relative_mae", "action_success_rate", "total_invalid_preds"):
        assert result[key] == expected[key], key  # comparisons and per-sample values: bit for bit


def test_a_json_boolean_is_invalid_in_the_capability_slice_holding_it_as_in_the_whole_vector():
    truth = np.arange(28, dtype=float).reshape(2, 14).tolist()
    prediction = [*truth[0][:3], True, *truth[0][4:]]
    result = metrics.score("openx_bimanual", records([prediction, truth[1]], truth))
    assert result["total_invalid_preds"] == 1
    assert [result["capability_metrics"][arm]["total_invalid_preds"] for arm in ("arm1", "arm2")] == [1, 0]


def test_capability_slices_of_a_record_that_is_no_list_are_invalid():
    truth = np.arange(28, dtype=float).reshape(2, 14).tolist()
    result = metrics.score("openx_bimanual", records([None, truth[1]], truth))
    assert [result["capability_metrics"][arm]["total_invalid_preds"] for arm in ("arm1", "arm2")] == [1, 1]
    assert "capability_metrics" not in metrics.score("openx", records([None, truth[1]], truth))


def test_single_sample_makes_every_distribution_metric_nan():
    result = metrics.score("openx", records([[1.0, 2.0]], [[1.5, 2.0]]), action_stats={"min": [0, 0], "max": [2, 4], "mean": [1, 1]})
    for key in ("normalized_amse", "normalized_amae", "normalized_quantile_filtered_amae", "max_relative_mae",
                "proportion_beyond_threshold_mae", "normalized_baseline_relative_mae", "normalized_baseline_relative_mse"):
        assert math.isnan(result[key]), key
    assert result["avg_dataset_amae"] == 0.25  # mean(|[-0.5, 0]|)
    assert result["avg_baseline_relative_mae"] == 0.25 / 0.75  # baseline mean(|[1-1.5, 1-2]|)


@pytest.mark.parametrize("count", [2, 3])
def test_two_or_three_samples_leave_the_quantile_filter_too_few_values(count):
    truth = [[0.0, 0.0]] * count
    predictions = [[float(i + 1), 0.0] for i in range(count)]
    result = metrics.score("openx", records(predictions, truth), action_stats={"min": [0, 0], "max": [1, 1], "mean": [0.5, 0.5]})
    assert math.isnan(result["normalized_quantile_filtered_amae"])
    assert result["normalized_amae"] == pytest.approx(np.mean(np.arange(count) / (count - 1)))


def test_all_equal_errors_make_normalized_metrics_nan():
    truth = [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]
    predictions = [[t[0] + 1, t[1] - 1] for t in truth]  # every MAE and MSE is exactly 1
    result = metrics.score("openx", records(predictions, truth))
    assert result["avg_dataset_amae"] == 1.0 and result["max_relative_mae"] == 1.0
    assert math.isnan(result["normalized_amae"]) and math.isnan(result["normalized_amse"])
    assert math.isnan(result["normalized_quantile_filtered_amae"])
    assert result["proportion_beyond_threshold_mae"] == 0.0


def test_all_invalid_predictions_score_the_worst_case():
    truth = [[0.0, 1.0], [2.0, 5.0], [1.0, 3.0]]
    stats = {"min": [0.0, 1.0], "max": [2.0, 5.0], "mean": [1.0, 3.0]}
    result = metrics.score("openx", records([None, [1.0], ["a", "b"]], truth), action_stats=stats)
    assert result["total_invalid_preds"] == 3 and result["invalid_percentage"] == 100.0
    assert result["avg_dataset_amae"] == 3.0  # mean(|max - min|) = mean([2, 4])
    assert result["avg_dataset_amse"] == 10.0  # mean([4, 16])
    assert result["action_success_rate"] == 0.0
    assert result["avg_baseline_relative_mae"] == math.inf
    assert math.isnan(result["normalized_baseline_relative_mae"])  # no finite value
    assert math.isnan(result["normalized_amae"])  # all equal


def test_zero_baseline_is_one_for_a_perfect_prediction_and_inf_otherwise():
    truth = [[1.0, 3.0], [1.0, 3.0]]
    stats = {"min": [0.0, 0.0], "max": [2.0, 6.0], "mean": [1.0, 3.0]}  # mean == ground truth
    result = metrics.score("openx", records([[1.0, 3.0], [1.0, 3.0]], truth), action_stats=stats)
    assert result["avg_baseline_relative_mae"] == 1.0 and result["action_success_rate"] == 100.0
    result = metrics.score("openx", records([[1.0, 3.0], [1.5, 3.0]], truth), action_stats=stats)
    assert result["avg_baseline_relative_mae"] == math.inf


def test_arrays_and_python_lists_score_the_same():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(50, 7))
    predictions = truth + rng.normal(0, 0.3, truth.shape)
    predictions[4, 2] = np.nan
    from_arrays = metrics.pack_continuous(predictions, truth)
    from_lists = metrics.pack_continuous(predictions.tolist(), truth.tolist())
    np.testing.assert_array_equal(from_arrays.valid, from_lists.valid)
    assert not from_arrays.valid[4] and from_arrays.valid.sum() == 49
    stats = metrics.action_stats_from_ground_truth(truth)
    assert_metrics_match(
        metrics.to_python(metrics.continuous(from_arrays, stats)),
        metrics.to_python(metrics.continuous(from_lists, stats)),
        rtol=0,
    )


def test_ragged_or_non_numeric_ground_truth_is_an_error_naming_the_record():
    with pytest.raises(metrics.RecordError, match="record 1: field 'ground_truth'"):
        metrics.score("openx", records([[0.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [1.0]]))
    with pytest.raises(metrics.RecordError, match="record 0: field 'ground_truth'"):
        metrics.score("openx", records([[0.0]], [["1.0"]]))
    with pytest.raises(metrics.RecordError, match="record 0: field 'prediction': missing"):
        metrics.score("openx", [{"id": "a", "ground_truth": [1.0]}])


def test_kernels_leave_the_process_in_float32():
    metrics.score("openx", records([[0.0, 1.0], [1.0, 0.0]], [[0.5, 0.5], [0.0, 0.0]]))
    assert jnp.zeros(1).dtype == jnp.float32


def test_action_stats_with_a_min_above_its_max_are_refused_naming_the_first_bad_dim(published):
    truth = np.asarray(published["all_gt"], np.float64)
    stats = metrics.action_stats_from_ground_truth(truth)
    swapped = {**stats, "min": stats["max"], "max": stats["min"]}  # every dim that varies, the first of them named
    varying = np.flatnonzero(truth.max(axis=0) > truth.min(axis=0))
    with pytest.raises(ValueError, match=rf"'min' above 'max' in {varying.size} of 14 dims, first dim {varying[0]}: min "):
        metrics.score("openx_bimanual", records(published["all_preds"], truth.tolist()), action_stats=swapped)


def test_multinets_float32_split_means_outside_their_range_are_scored_as_multinet_scored_them():
    """MultiNet sums a split's steps one by one in float32: a constant dimension's mean leaves [min, max]."""
    from multinet_jax.data.stats import MultinetActionStats

    steps = np.stack([np.full(1000, 0.1, np.float32), np.linspace(-1, 1, 1000, dtype=np.float32)], axis=1)
    running = MultinetActionStats()
    for step in steps:
        running.update(step)
    stats = running.result()
    assert stats["mean"][0] < stats["min"][0] == stats["max"][0]  # what MultiNet's stats hold
    predictions = steps.astype(np.float64) + 0.01
    result = metrics.score("openx", records(predictions.tolist(), steps.tolist()), action_stats=stats)
    baseline = np.abs(np.asarray(stats["mean"]) - steps.astype(np.float64)).mean(axis=1)  # MultiNet's mean, as it scored
    expected = np.mean(np.abs(predictions - steps).mean(axis=1) / baseline)
    assert result["avg_baseline_relative_mae"] == pytest.approx(expected, rel=1e-9)
