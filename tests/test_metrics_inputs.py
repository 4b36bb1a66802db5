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
    result = metrics.to_python(metrics.multiple_choice(np.array([5, 0, 1]), np.array([1, 0, 0]), 2))
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


def _same(first, second):
    return json.dumps(metrics.to_python(first), sort_keys=True) == json.dumps(metrics.to_python(second), sort_keys=True)


def test_pack_continuous_reads_jax_arrays_as_numpy_arrays():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(8, 7)).astype(np.float32)  # jax's default float: the same values either way
    predictions = truth + 0.1 * rng.normal(size=(8, 7)).astype(np.float32)
    stats = metrics.action_stats_from_ground_truth(truth)
    expected = metrics.continuous(metrics.pack_continuous(predictions, truth), stats)
    assert int(expected["total_invalid_preds"]) == 0
    for jax_predictions, jax_truth in [(jnp.asarray(predictions), truth), (jnp.asarray(predictions), jnp.asarray(truth)),
                                       (list(jnp.asarray(predictions)), truth)]:
        assert _same(metrics.continuous(metrics.pack_continuous(jax_predictions, jax_truth), stats), expected)


def test_pack_discrete_and_pack_choices_read_jax_arrays_as_numpy_arrays():
    truth = np.array([3, 7, 35, 0, 12])
    predictions = np.array([3, 8, 35, 1, 12])
    expected = metrics.discrete(metrics.pack_discrete(predictions, truth))
    assert float(expected["exact_match"]) == 0.6
    for jax_predictions in [jnp.asarray(predictions), jnp.asarray(np.eye(36)[predictions]), list(jnp.asarray(predictions))]:
        assert _same(metrics.discrete(metrics.pack_discrete(jax_predictions, jnp.asarray(truth))), expected)
    choices = np.array([1, 0, 1, 1])
    assert metrics.pack_choices(jnp.asarray(choices), [2] * 4).tolist() == choices.tolist()
    assert metrics.pack_choices(list(jnp.asarray(choices)), [2] * 4).tolist() == choices.tolist()


@pytest.mark.parametrize("domain, options, problem", [
    ("overcooked_ai", {"action_stats": {"min": [0.0], "max": [1.0], "mean": [0.5]}},
     "action_stats= are Open-X's action statistics; domain 'overcooked_ai' scores no actions"),
    ("piqa", {"action_stats": {"min": [0.0], "max": [1.0], "mean": [0.5]}},
     "action_stats= are Open-X's action statistics; domain 'piqa' scores no actions"),
    ("piqa", {"skip_similarity": True},
     "skip_similarity= is for the text-similarity metrics of sqa3d, robovqa and bfcl; domain 'piqa' has none"),
    ("piqa", {"embedder": "/nonexistent/embedder"},
     "embedder= is for the text-similarity metrics of sqa3d, robovqa and bfcl; domain 'piqa' has none"),
    ("overcooked_ai", {"num_choices": 3}, "num_choices= is PIQA's options per question .*; domain 'overcooked_ai' reads none"),
    ("odinw", {"num_choices": 7}, "num_choices= is PIQA's options per question .*; domain 'odinw' reads none"),
    ("openx", {"num_choices": 5}, "num_choices= is PIQA's options per question .*; domain 'openx' reads none"),
])
def test_options_the_domain_does_not_read_are_refused_naming_them(domain, options, problem):
    """As the CLI refuses its flags: a result scored without them would look scored with them."""
    records = [{"id": index, "prediction": index % 2, "ground_truth": 1, "num_options": 3} for index in range(4)]
    if domain == "openx":
        records = _records([[0.1 * index] for index in range(4)], [[0.2]] * 4)
    elif domain != "odinw":
        records = _records([index % 2 for index in range(4)], [1] * 4)
    with pytest.raises(metrics.OptionError, match=f"^{problem}$"):
        multinet_jax.score(domain, records, **options)


def test_num_choices_still_sets_piqas_options():
    result = multinet_jax.score("piqa", _records([2, 0], [2, 1]), num_choices=3)
    assert (result["num_choices"], result["overall_accuracy"]) == (3, 0.5)


@pytest.mark.parametrize("domain, problem", [
    ("openx_bimanual ", r"malformed Open-X domain 'openx_bimanual ': expected openx_<dataset>, .*"),
    ("openx_Bimanual", r"malformed Open-X domain 'openx_Bimanual': expected openx_<dataset>, .*"),
    ("openx_", r"malformed Open-X domain 'openx_': expected openx_<dataset>, .*"),
    ("openx_bimanaul", r"unknown domain 'openx_bimanaul': did you mean 'openx_bimanual'\? .*"),
    ("openx_bi_manual", r"unknown domain 'openx_bi_manual': did you mean 'openx_bimanual'\? .*"),
    ("openx_mobile_manip", r"unknown domain 'openx_mobile_manip': did you mean 'openx_mobile_manipulation'\? .*"),
])
def test_openx_names_that_would_lose_a_domains_own_metrics_are_refused(domain, problem):
    """Scored as a generic Open-X dataset, a misspelt openx_bimanual would lose its capability metrics silently."""
    rng = np.random.default_rng(0)
    records = _records(rng.normal(size=(4, 14)).tolist(), rng.normal(size=(4, 14)).tolist())
    with pytest.raises(ValueError, match=f"^{problem}$"):
        multinet_jax.score(domain, records)
    assert "capability_metrics" in multinet_jax.score("openx_bimanual", records)


@pytest.mark.parametrize("domain", ["openx_single_arm", "openx_quadrupedal", "openx_wheeled_robot", "openx_jaco_play",
                                    "openx_utokyo_xarm_bimanual_converted_externally_to_rlds"])
def test_other_openx_datasets_score_as_generic_openx(domain):
    assert metrics.metric_kind(domain) == "continuous"


@pytest.mark.parametrize("domain", ["openx", "piqa", "overcooked_ai"])
def test_a_subset_on_a_domain_not_scored_by_subset_is_refused(domain):
    """Only ODinW scores each subset alone: elsewhere the subsets would be pooled without a word."""
    records = _records([[0.1], [0.2]], [[0.1], [0.3]]) if domain == "openx" else _records([1, 0], [1, 1])
    records[1][metrics.SUBSET_FIELD] = "b"
    with pytest.raises(metrics.RecordError, match=f"^record 1: field 'subset': given, but {domain} is not scored by subset"):
        multinet_jax.score(domain, records)


@pytest.mark.parametrize("ground_truth", [None, [0.0, 0.0]])
def test_a_null_id_is_refused_as_batch_padding(ground_truth):
    """`data.load(..., batch_size=...)` pads its last batch with rows of `_mask` False and id None (ground truth None,
    actions zero): scored, such a row would count a sample that does not exist."""
    records = _records([[0.1, 0.2], [0.0, 0.0]], [[0.1, 0.3], ground_truth])
    records[1]["id"] = None
    with pytest.raises(metrics.RecordError, match=r"^record 1: field 'id': null: the id of a padding row of "
                                                  r"`data.load\(\.\.\., batch_size=\.\.\.\)` \(its `_mask` is False\).*"
                                                  r"drop the rows whose `_mask` is False$"):
        multinet_jax.score("openx", records)


@pytest.mark.parametrize("ground_truth", [["ls()"], [[1]], "ls()"])
def test_bfcl_records_whose_ground_truth_is_not_turns_of_calls_are_refused(ground_truth):
    """The same rule the BFCL loader applies (`domains.is_turns_of_calls`): a record a user built otherwise is named."""
    records = [{"id": "a", "prediction": [["ls()"]], "ground_truth": ground_truth}]
    with pytest.raises(metrics.RecordError, match=r"^record 0: field 'ground_truth': expected a list of turns, each a "
                                                  r"list of call strings"):
        multinet_jax.score("bfcl", records, skip_similarity=True)
