"""What a notebook hands `score`: numpy and jax values score as their JSON lines do, and inputs that would be scored
silently wrong (a mistyped answer rule, a field on some records only, labels the kernels would clip) are refused."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

import multinet_jax
from multinet_jax import metrics


def _records(predictions, truths):
    return [{"id": index, "prediction": prediction, "ground_truth": truth}
            for index, (prediction, truth) in enumerate(zip(predictions, truths))]


def _as_read_back(records):
    """The records as a predictions file holds them (what MultiNet's validity rules were written for)."""
    return [json.loads(json.dumps(record, default=lambda value: np.asarray(value).tolist())) for record in records]


@pytest.mark.parametrize("domain, predictions, truths", [
    # a jnp.argmax, a 0-d numpy array and a numpy integer: each is the choice it holds
    ("piqa", [jnp.argmax(jnp.array([0.2, 0.8])), np.array(0), np.int64(1)], [1, 0, 0]),
    # model outputs as they come: a jax array, a list of jax scalars, a float32 numpy array
    ("openx", [jnp.array([0.1, 0.2]), list(jnp.array([0.3, 0.4])), np.array([0.5, 0.6], np.float32)],
     [[0.1, 0.2], [0.3, 0.5], [0.5, 0.5]]),
    # a jax probability vector and a jax scalar class
    ("overcooked_ai", [jnp.zeros(36).at[4].set(1.0), jnp.int32(7)], [4, 8]),
    # a tuple of probabilities: its JSON line holds a list
    ("overcooked_ai", [tuple(np.eye(36)[4].tolist())], [4]),
])
def test_arrays_score_as_their_json_lines(domain, predictions, truths):
    records = _records(predictions, truths)
    in_memory = multinet_jax.score(domain, records)
    read_back = multinet_jax.score(domain, _as_read_back(records))
    assert json.dumps(in_memory, sort_keys=True) == json.dumps(read_back, sort_keys=True)  # NaN equal to NaN
    invalid = in_memory.get("total_invalid_preds", in_memory.get("percentage_invalids"))
    assert invalid == 0  # every one of them is a valid prediction once it is plain JSON


def test_bfcl_calls_in_tuples_score_as_their_json_lines():
    records = _records([(("cd(folder='a')",), ("ls()",))], [[["cd(folder='a')"], ["ls()"]]])
    in_memory = multinet_jax.score("bfcl", records, skip_similarity=True)
    assert in_memory == multinet_jax.score("bfcl", _as_read_back(records), skip_similarity=True)
    assert in_memory["exact_match_accuracy"] == 1.0


def test_a_mistyped_answer_rule_is_refused():
    records = [{**record, metrics.ANSWER_RULE_FIELD: "magma"} for record in _records([5, 0, 1], [1, 0, 0])]
    with pytest.raises(metrics.RecordError, match=r"record 0: field 'answer_rule': expected one of \['pi0_scripts', "
                                                  r"'magma_scripts'\], got 'magma'"):
        multinet_jax.score("piqa", records)


def test_clipped_predictions_on_some_records_only_are_refused():
    records = _records([3, 3], [3, 4])
    records[0][metrics.CLIPPED_FIELD] = 3
    with pytest.raises(metrics.RecordError, match="record 1: field 'clipped_prediction': missing, but record 0 has one"):
        multinet_jax.score("overcooked_ai", records)


@pytest.mark.parametrize("num_choices", [True, 1, 2.0, "2"])
def test_num_choices_is_an_integer_of_at_least_two(num_choices):
    with pytest.raises(ValueError, match=f"num_choices must be an integer of at least 2, got {num_choices!r}"):
        multinet_jax.score("piqa", _records([1, 0], [1, 0]), num_choices=num_choices)


@pytest.mark.parametrize("kernel, predicted, truth, problem", [
    # jnp.bincount would count the label -1 as class 0 and drop 7
    (metrics.classification, [0, 1, 2], [-1, 1, 2], r"truth\[0\] = -1: not a class in \[0, 3\)"),
    (metrics.classification, [0, 1, 2], [0, 1, 7], r"truth\[2\] = 7: not a class in \[0, 3\)"),
    (metrics.classification, [0, 3, 2], [0, 1, 2], r"predicted\[1\] = 3: neither -1 \(invalid\) nor a class"),
    (metrics.multiple_choice, [5, -2, 1], [1, 0, 0], r"predicted\[1\] = -2: neither -1 \(invalid\) nor a class"),
    (metrics.multiple_choice, [True, False, True], [1, 0, 0], "predicted: expected a 1-D integer array"),
    (metrics.multiple_choice, [1, 0, 1], [1.0, 0.0, 0.0], "truth: expected a 1-D integer array"),
])
def test_the_exported_kernels_refuse_what_they_would_count_wrong(kernel, predicted, truth, problem):
    with pytest.raises(ValueError, match=problem):
        kernel(np.array(predicted), np.array(truth), 3 if kernel is metrics.classification else 2)


def test_the_kernels_count_an_index_beyond_the_choices_as_valid_and_wrong_only_for_multiple_choice():
    """MultiNet's Magma PIQA rule: an answer naming no choice is valid and wrong (pack_choices with any_integer)."""
    result = metrics.multiple_choice(np.array([5, 0, 1]), np.array([1, 0, 0]), 2)
    assert (result["valid_predictions"], result["overall_accuracy"]) == (3, pytest.approx(1 / 3))


@pytest.mark.parametrize("domain, outputs, truths", [
    ("piqa", [1, 0], [1, 1]),  # MultiNet's MCQ adapters: an int class index
    ("openx", [[0.15, -0.23], [0.44, 0.12]], [[0.1, -0.2], [0.4, 0.1]]),  # its Open-X adapters: an action vector
])
def test_multinet_harness_outputs_are_refused_naming_what_to_score(domain, outputs, truths):
    """MultiNet's eval-harness adapters return `{"raw_output": str, "extracted_outputs": ...}` per sample and its
    calculators score `extracted_outputs`; scored as they are, every one would count as an invalid prediction."""
    harness = _records([{"raw_output": json.dumps(output), "extracted_outputs": output} for output in outputs], truths)
    with pytest.raises(metrics.RecordError, match=r"^record 0: field 'prediction': a MultiNet harness output \(keys "
                                                  r"\['extracted_outputs', 'raw_output'\]\); put its 'extracted_outputs' "
                                                  r"in 'prediction' .* and its 'raw_output' in 'raw_output'$"):
        multinet_jax.score(domain, harness)
    unwrapped = [{**record, "prediction": record["prediction"]["extracted_outputs"]} for record in harness]
    result = multinet_jax.score(domain, unwrapped)
    assert result.get("total_invalid_preds", result.get("percentage_invalids")) == 0
