"""The domain table and MultiNet's output mapping rules, on hand-computed cases."""

from __future__ import annotations

import pathlib

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


@pytest.mark.parametrize(("alias", "name"), list(domains.ALIASES.items()))
def test_an_alias_is_its_domain_for_every_command(alias, name, tmp_path):
    """`eval` (EvalConfig), `score` (metrics), `data` (sources, protocols) and the table take an alias as its
    canonical domain, and outputs use the canonical name."""
    import eval_helpers
    from multinet_jax import data, metrics
    from multinet_jax.eval import EvalConfig

    assert domains.lookup(alias) == domains.lookup(name) and domains.canonical(alias) == name
    assert metrics.metric_kind(alias) == metrics.metric_kind(name) == domains.lookup(name).metric_kind
    assert data.domain_protocol(alias) == data.domain_protocol(name)
    config = EvalConfig(**eval_helpers.settings(tmp_path, (alias, "piqa")))
    assert config.domains == (name, "piqa")
    with pytest.raises(ValueError, match=f"--domains names {name} more than once"):
        EvalConfig(**eval_helpers.settings(tmp_path, (alias, name)))
    if name == "overcooked_ai":  # a source read under the alias is the domain's own
        directory = pathlib.Path(eval_helpers.assets()["data_dir"]) / domains.lookup(name).folder
        by_alias, by_name = (data.make_source(which, directory, split="public") for which in (alias, name))
        assert len(by_alias) == len(by_name) > 0 and by_alias.dataset == by_name.dataset == name


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
    predictions, clipped = domains.discrete_predictions(actions, domains.ActionNorm("mean_std", {"mean": mean, "std": std}))
    assert predictions == [18, 28, 0, None, None]
    assert clipped == [18, 28, 0, 35, 0]  # MultiNet's np.clip into 0..35 for its avg_clipped_* metrics


@pytest.mark.parametrize(
    ("text", "expected"),
    [  # piqa_hf_inference._validate_output: `output.strip() in ['0', '1']`
        ("1", 1), ("0", 0), (" 1 \n", 1), ("\t0", 0),
        ("1.", None), ("01", None), ("+1", None), ("2", None), ("1 0", None), ("Solution 1", None), ("one", None), ("", None),
    ],
)
def test_piqa_accepts_only_a_whole_0_or_1(text, expected):
    assert domains.parse_piqa(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [  # odinw_hf_inference._validate_output: `int(output.strip())` in range(SUB_DATASET_CATEGORIES[subset])
        ("3", 3), (" 0\n", 0), ("+2", 2), ("-0", 0), ("0_3", 3), ("\u0663", 3),  # Python's int() rules, as MultiNet's
        ("5", None), ("-1", None), ("3.0", None), ("3 apples", None), ("Option 3", None), ("", None), ("0x3", None),
    ],
)
def test_odinw_is_pythons_int_of_the_whole_output_within_the_class_count(text, expected):
    assert domains.parse_odinw(text, num_options=5) == expected


def test_parse_answer_strips_and_empty_is_invalid():
    assert domains.parse_answer("  a red chair \n") == "a red chair"
    assert domains.parse_answer(" \n ") is None


def test_parse_function_calls_matches_multinets_pattern_as_written():
    """bfcl_hf_inference._extract_function_calls: `re.findall(r'\\b\\w+\\s*\\([^)]*\\)', response.strip())`, nothing collapsed."""
    text = "cd(folder='documents')\n touch( file_name='a.txt' )  then  ls(a=True,\n  b=1)"
    assert domains.parse_function_calls(text) == ["cd(folder='documents')", "touch( file_name='a.txt' )", "ls(a=True,\n  b=1)"]
    assert domains.parse_function_calls("sort(f(x))") == ["sort(f(x)"]  # [^)]* stops at the first ")"
    assert domains.parse_function_calls("no calls here") == [] and domains.parse_function_calls("") == []


def test_protocol_table_is_multinets():
    multinet = ("openx_bimanual", "overcooked_ai", "piqa", "odinw", "sqa3d", "openx_multi_embodiment", "bfcl")
    protocols = {name: domains.lookup(name).protocol for name in multinet}
    assert {name: p.max_new_tokens for name, p in protocols.items()} == {
        "openx_bimanual": None, "overcooked_ai": None, "piqa": 10, "odinw": 10, "sqa3d": 50, "openx_multi_embodiment": 50, "bfcl": 150}
    assert {name: p.max_prompt_tokens for name, p in protocols.items()} == {
        "openx_bimanual": 48, "overcooked_ai": 256, "piqa": None, "odinw": None, "sqa3d": None, "openx_multi_embodiment": None, "bfcl": None}
    assert [name for name, p in protocols.items() if p.prompt_format is domains.PromptFormat.OPENPI] == ["openx_bimanual", "overcooked_ai"]
    assert [name for name, p in protocols.items() if p.image_resize is domains.ImageResize.OPENPI] == ["openx_bimanual", "overcooked_ai"]
    assert [name for name, p in protocols.items() if p.turn_by_turn] == ["bfcl"] and protocols["bfcl"].blank_image == 255
    assert protocols["piqa"].blank_image == 0  # PIQA's black image, attended (piqa_hf_inference.py's default)
