"""The domain table and MultiNet's output mapping rules, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from multinet_jax import domains


@pytest.mark.parametrize(
    ("name", "folder", "kind", "output"),
    [
        ("openx_bimanual", "openx_bimanual", "continuous", domains.Output.CONTINUOUS_ACTIONS),
        ("openx_berkeley_gnm_sac_son", "openx_berkeley_gnm_sac_son", "continuous", domains.Output.CONTINUOUS_ACTIONS),
        ("openx_multi_embodiment", "openx_multi_embodiment", "vqa", domains.Output.TEXT),
        ("overcooked_ai", "overcooked_ai", "discrete", domains.Output.DISCRETE_ACTION),
        ("piqa", "piqa", "multiple_choice", domains.Output.TEXT),
        ("odinw", "odinw", "classification", domains.Output.TEXT),
        ("sqa3d", "sqa3d", "vqa", domains.Output.TEXT),
        ("bfcl", "bfcl_v3", "function_calls", domains.Output.TEXT),
    ],
)
def test_lookup(name, folder, kind, output):
    domain = domains.lookup(name)
    assert (domain.folder, domain.metric_kind, domain.output) == (folder, kind, output)


@pytest.mark.parametrize("name", ["openx_", "procgen", ""])
def test_unknown_domain_names_the_choices(name):
    with pytest.raises(ValueError, match="unknown domain"):
        domains.lookup(name)


def test_continuous_takes_first_step_first_dims_and_unnormalizes():
    actions = np.zeros((2, 3, 32))
    actions[0, 0, :4] = [1.0, -1.0, 0.5, 2.0]
    actions[0, 1, :4] = 99.0  # later steps of the chunk are ignored
    actions[1, 0, 1] = np.nan  # an undecodable row
    mean, std = [10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 0.0, 4.0]
    predictions = domains.continuous_predictions(actions, 3, domains.ActionNorm("mean_std", {"mean": mean, "std": std}))
    expected = [1.0 * (1 + 1e-6) + 10, -1.0 * (2 + 1e-6) + 20, 0.5 * 1e-6 + 30]
    np.testing.assert_allclose(predictions[0], expected, rtol=0, atol=1e-12)
    assert predictions[1] is None


def test_continuous_caps_at_32_dims():
    actions = np.ones((1, 1, 32))
    predictions = domains.continuous_predictions(actions, 40, domains.ActionNorm("mean_std", {"mean": np.zeros(40), "std": np.ones(40)}))
    assert len(predictions[0]) == 32


def test_quantile_unnormalization_is_openvlas_bounds_rule_where_masked():
    actions = np.array([[[-1.0, 0.0, 0.5]], [[1.0, 1.0, 1.0]]])
    norm = domains.ActionNorm("quantiles", {"q01": [-2.0, 0.0, 10.0], "q99": [2.0, 4.0, 20.0], "mask": [True, True, False]})
    assert domains.continuous_predictions(actions, 3, norm) == [[-2.0, 2.0, 0.5], [2.0, 4.0, 1.0]]
    with pytest.raises(ValueError, match="normalization stats have 2 dims, the actions need 3"):
        domains.continuous_predictions(actions, 3, domains.ActionNorm("quantiles", {"q01": [0, 0], "q99": [1, 1]}))


def test_discrete_rounds_unnormalized_dim0_and_rejects_out_of_range():
    mean, std = [17.5], [10.0]
    actions = np.zeros((5, 2, 32))
    actions[:, 0, 0] = [0.0, 1.0, -1.74, 1.9, np.inf]
    # x * (10 + 1e-6) + 17.5: 17.5 -> 18 (half to even), 27.50001 -> 28, 0.09998 -> 0, 36.50002 -> 37 (out of 0..35), inf
    assert domains.discrete_predictions(actions, domains.ActionNorm("mean_std", {"mean": mean, "std": std})) == [18, 28, 0, None, None]


@pytest.mark.parametrize(
    ("text", "num_options", "expected"),
    [("1", 2, 1), ("Solution 0 is better", 2, 0), ("answer: 2", 2, None), ("no digits", 2, None), ("7 and 3", 10, 7), ("", 3, None)],
)
def test_parse_choice(text, num_options, expected):
    assert domains.parse_choice(text, num_options) == expected


def test_parse_answer_strips_and_empty_is_invalid():
    assert domains.parse_answer("  a red chair \n") == "a red chair"
    assert domains.parse_answer(" \n ") is None


def test_parse_function_calls_matches_harness_pattern():
    text = "cd(folder='documents')\n touch( file_name='a.txt' )  then  ls(a=True)"
    assert domains.parse_function_calls(text) == ["cd(folder='documents')", "touch( file_name='a.txt' )", "ls(a=True)"]
    assert domains.parse_function_calls("no calls here") == []


def test_split_turns_by_markers_or_lines_padded_to_the_turn_count():
    assert domains.split_turns("=== Turn 1 ===\nls(a=True)\n=== Turn 2 ===\ncd(folder='x')", 3) == ["ls(a=True)", "cd(folder='x')", ""]
    assert domains.split_turns("ls()\n\npwd()\ncat(file_name='a')", 2) == ["ls()", "pwd()"]


def test_bfcl_prediction_has_one_call_list_per_ground_truth_turn():
    bfcl = domains.lookup("bfcl")
    sample = {"ground_truth": [["ls(a=True)"], ["pwd()"]]}
    assert domains.parse_text(bfcl, "Turn 1: ls(a=True)\nTurn 2: nothing", sample) == [["ls(a=True)"], []]
