"""PIQA multiple choice and ODinW classification against a per-sample NumPy reference, on real labels."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.ipc
import pytest

import metrics_reference as reference
from conftest import shared_path
from metrics_helpers import assert_metrics_match, records
from multinet_jax import metrics


@pytest.fixture(scope="module")
def piqa_labels() -> list[int]:
    path = shared_path("data", "piqa_validation", "data-00000-of-00001.arrow")
    with pyarrow.ipc.open_stream(str(path)) as reader:
        return reader.read_all().column("label").to_pylist()


def _perturb(labels: list[int], num_options: list[int], rng: np.random.Generator) -> list:
    """Mostly right, some wrong, and every kind of invalid answer."""
    predictions = []
    for label, limit in zip(labels, num_options):
        kind = rng.integers(10)
        if kind < 5:
            predictions.append(label)
        elif kind < 8:
            predictions.append(int(rng.integers(limit)))
        else:
            predictions.append([None, limit, -1, "0", 1.0, [label]][int(rng.integers(6))])
    return predictions


def test_piqa_validation_labels_with_perturbed_predictions_match_reference(piqa_labels):
    predictions = _perturb(piqa_labels, [2] * len(piqa_labels), np.random.default_rng(0))
    result = metrics.score("piqa", records(predictions, piqa_labels))
    assert_metrics_match(result, reference.multiple_choice(predictions, piqa_labels, 2))
    assert result["total_samples"] == 1838
    assert 0 < result["total_invalid_preds"] < 1838


def test_piqa_all_invalid_has_zero_valid_accuracy():
    result = metrics.score("piqa", records([None, 2, "1"], [0, 1, 1]))
    assert result["valid_accuracy"] == 0.0 and result["overall_accuracy"] == 0.0
    assert result["invalid_percentage"] == 100.0
    assert result["choice_distribution"] == {"choice_0_count": 0, "choice_1_count": 0}


@pytest.fixture(scope="module")
def odinw_samples() -> tuple[list[int], list[int], list[str]]:
    """(label, number of options, subset) of MultiNet's ODinW sample objects, over both subsets: the options are the
    categories under the root (supercategory "none"), the label the object's category's place among them."""
    labels, num_options, subsets = [], [], []
    for subset in ("AerialMaritimeDrone", "NorthAmericaMushrooms"):
        folder = shared_path("data", "multinet_sample", "odinw", "public", subset)
        options = [entry["id"] for entry in json.loads((folder / "categories.json").read_text())["categories"]
                   if entry["supercategory"] != "none"]
        for pair in json.loads((folder / "object_caption_pairs.json").read_text()):
            labels.append(options.index(pair["category_id"]))
            num_options.append(len(options))
            subsets.append(subset)
    return labels, num_options, subsets


def test_odinw_real_categories_with_perturbed_predictions_match_reference_per_subset(odinw_samples):
    """Each subset scored alone over its own categories, as MultiNet's per-subset script did; the top level holds
    each rate's mean over the subsets (MultiNet's reported figure) and each count's total."""
    labels, num_options, subsets = (values * 60 for values in odinw_samples)  # the public sample is tiny: repeat it
    predictions = _perturb(labels, num_options, np.random.default_rng(1))
    result = metrics.score("odinw", records(predictions, labels, num_options=num_options, subset=subsets))
    expected = {}
    for subset in sorted(set(subsets)):
        rows = [row for row, name in enumerate(subsets) if name == subset]
        expected[subset] = reference.classification([predictions[row] for row in rows], [labels[row] for row in rows],
                                                    [num_options[row] for row in rows])
    assert_metrics_match(result["per_subset"], expected)
    for subset, scored in result["per_subset"].items():  # its own categories only
        assert set(scored["precision_per_class"]) == set(range(num_options[subsets.index(subset)]))
    assert len({num_options[subsets.index(subset)] for subset in result["per_subset"]}) == 2
    for metric in ("overall_accuracy", "valid_accuracy", "macro_f1", "micro_precision", "invalid_percentage"):
        assert result[metric] == pytest.approx(np.mean([scored[metric] for scored in expected.values()]), rel=1e-12)
    for count in ("total_samples", "total_invalid_preds", "total_tp", "invalid_fp"):
        assert result[count] == sum(scored[count] for scored in expected.values())
    assert "precision_per_class" not in result and "subset" in result["aggregation"]


def test_odinw_one_subset_without_names_is_scored_as_it_is(odinw_samples):
    labels, num_options, subsets = odinw_samples
    rows = [row for row, name in enumerate(subsets) if name == "AerialMaritimeDrone"]
    predictions = _perturb([labels[row] for row in rows], [num_options[row] for row in rows], np.random.default_rng(2))
    result = metrics.score("odinw", records(predictions, [labels[row] for row in rows], num_options=[num_options[row] for row in rows]))
    assert_metrics_match(result, reference.classification(predictions, [labels[row] for row in rows],
                                                          [num_options[row] for row in rows]))


def test_odinw_subset_mean_leaves_out_a_subset_without_a_value():
    """A subset whose every answer is invalid has no valid accuracy (NaN): the mean is over the others, as
    MultiNet's safe_mean left NaN out."""
    names = ("MaskWearing", "BCCD")  # 2 and 3 categories
    rows = records([None, None, 1, 0], [0, 1, 1, 1], num_options=[2, 2, 3, 3], subset=[names[0]] * 2 + [names[1]] * 2)
    per_subset = {name: metrics.score("odinw", [row for row in rows if row["subset"] == name]) for name in names}
    result = metrics.score("odinw", rows)
    assert result["overall_accuracy"] == pytest.approx((0.0 + 0.5) / 2)
    values = [per_subset[name]["valid_accuracy"] for name in names]
    finite = [value for value in values if not np.isnan(value)]
    assert result["valid_accuracy"] == pytest.approx(np.mean(finite))


@pytest.mark.parametrize("extra, message", [
    ({"num_options": [5, 5, 2]}, r"record 2: field 'subset': missing, and the records have 2 option counts \(\[2, 5\]\)"),
    ({"num_options": [5, 5, 2], "subset": ["Aquarium", "Aquarium", None]},
     r"record 0: field 'num_options': 5, but MultiNet's ODinW subset 'Aquarium' has 7 categories"),
    ({"num_options": [5, 5, 2], "subset": ["AerialMaritimeDrone", "AerialMaritimeDrone", None]},
     r"record 2: field 'subset': expected one of MultiNet's 24 ODinW subsets \(domains.ODINW_SUBSET_CLASSES\), got None"),
    ({"num_options": [5, 5, 2], "subset": ["AerialMaritimeDrone", "AerialMaritimeDrone", "Dice"]},
     r"record 2: field 'subset': expected one of MultiNet's 24 ODinW subsets .*, got 'Dice'"),
    ({"num_options": [5, 5, 2], "subset": ["AerialMaritimeDrone"] * 3},
     r"record 2: field 'num_options': 2, but MultiNet's ODinW subset 'AerialMaritimeDrone' has 5 categories"),
])
def test_odinw_records_of_several_subsets_must_name_them_as_multinet_did(extra, message):
    """MultiNet scored each of its subsets over the categories its table gives it: an unknown subset, or another
    option count (empty classes in its macro means), is refused."""
    with pytest.raises(metrics.RecordError, match=message):
        metrics.score("odinw", records([0, 1, 1], [0, 1, 1], **extra))


def test_odinw_records_naming_a_subset_partly_are_refused():
    rows = records([0, 1], [0, 1], num_options=[5, 5])
    rows[0]["subset"] = "AerialMaritimeDrone"
    with pytest.raises(metrics.RecordError, match="record 1: field 'subset': missing"):
        metrics.score("odinw", rows)


def test_odinw_invalid_predictions_count_as_false_positives():
    result = metrics.score("odinw", records([1, None, 2, 5], [1, 0, 0, 2], num_options=[3, 3, 3, 3]))
    assert (result["total_tp"], result["valid_fp"], result["invalid_fp"], result["total_fn"]) == (1, 1, 2, 3)
    assert result["micro_precision"] == 1 / 4
    assert result["micro_recall"] == 1 / 4
    assert result["overall_accuracy"] == 1 / 4 and result["valid_accuracy"] == 1 / 2
    assert result["precision_per_class"] == {0: 0.0, 1: 1.0, 2: 0.0}


def test_odinw_needs_num_options():
    with pytest.raises(metrics.RecordError, match="record 0: field 'num_options': missing"):
        metrics.score("odinw", records([0], [0]))


@pytest.mark.parametrize("num_classes", [13, 37])
def test_odinw_macro_means_equal_the_reference_bit_for_bit(num_classes):
    """MultiNet's `np.mean` of the per-class values sums them in NumPy's pairwise order; a plain jnp.sum differed in
    the last bit with 13 or 37 classes."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.integers(0, num_classes, 200).tolist()
        predictions = rng.integers(-1, num_classes, 200).tolist()
        result = metrics.score("odinw", records(predictions, labels, num_options=[num_classes] * len(labels)))
        expected = reference.classification(predictions, labels, [num_classes] * len(labels))
        assert {key: result[key] for key in ("macro_precision", "macro_recall", "macro_f1")} == {
            key: expected[key] for key in ("macro_precision", "macro_recall", "macro_f1")}
