"""Magma on Overcooked-AI and openx_quadrupedal (`models/magma_protocol.py`) against MultiNet's own game scripts run.

`fixtures/multinet_magma_games.json` was written by running `overcooked_single_inference.py` and
`magma_openx_quadrupedal_inference.py` (ManifoldRG/MultiNet d6fe80e) unmodified with a scripted stand-in for
Magma-8B (`fixtures/generate_multinet_magma_games.py.txt`): Overcooked on `../shared/data/multinet_sample`, three sets
of answers; quadrupedal on a constructed 12-dim saytap-like shard whose steps the fixture holds. Every expected value
is read from it: the conversations, `generate` arguments, what the scripts parsed and their whole results files. The
project's side comes from its own sources, prompt builders, answer rules and metrics kernels.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest

from conftest import shared_path
from magma_helpers import GAMES_FIXTURE, write_quadrupedal
from multinet_jax import data, domains, metrics
from multinet_jax.data import prompts
from multinet_jax.eval import loop, preflight
from multinet_jax.models import magma_protocol

# The Overcooked script's names for the metrics the project's kernel gives under its own (the others are the same).
OVERCOOKED_NAMES = {"exact_match_rate": "exact_match", "total_invalids": "total_invalid_preds", "preds": "predicted_actions",
                    "gt_actions": "ground_truth_actions"}


@functools.cache
def fixture() -> dict:
    return json.loads(GAMES_FIXTURE.read_text())


def check_generation(domain: str, reference: dict) -> None:
    """Greedy with the script's budget; the chat rendered as text, then tokenized by the processor (its BOS)."""
    protocol, kwargs = magma_protocol.domain_protocol(domain), reference["generate_kwargs"][0]
    assert all(call == kwargs for call in reference["generate_kwargs"]) and not kwargs["do_sample"], domain
    assert protocol.max_new_tokens == kwargs["max_new_tokens"] and protocol.temperature is None, domain
    assert protocol.chat.tokenizer_bos == (not reference["chat_template_kwargs"][0]["tokenize"]), domain
    assert protocol.answers_in_text and protocol.answer == metrics.MAGMA_SCRIPTS_RULE, domain


def messages(domain: str, sample: dict) -> list[dict]:
    chat = magma_protocol.domain_protocol(domain).chat
    return chat.messages(sample[chat.question_field])


def records(domain: str, samples: list[dict], answers: list[str]) -> list[dict]:
    """The records the evaluator writes for these answers (`runners.SingleCall.output_records`' text path)."""
    under = loop.domain_for("magma", domain)
    rows = []
    for index, (sample, answer) in enumerate(zip(samples, answers)):
        rows.append({"id": sample["id"], "prediction": domains.parse_text(under, answer.strip(), sample),
                     "ground_truth": sample["ground_truth"], "answer_rule": under.protocol.answer})
    return rows


def assert_same(ours, theirs, where: str) -> None:
    """Numbers equal to the last bits but for float sums taken in another order (1e-12 relative); NaN as NaN."""
    if isinstance(theirs, dict):
        assert {str(key) for key in ours} == {str(key) for key in theirs}, where
        by_name = {str(key): value for key, value in ours.items()}
        for key, value in theirs.items():
            assert_same(by_name[str(key)], value, f"{where}.{key}")
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs), where
        for index, (mine, value) in enumerate(zip(ours, theirs)):
            assert_same(mine, value, f"{where}[{index}]")
    elif isinstance(theirs, float) and math.isnan(theirs):
        assert isinstance(ours, float) and math.isnan(ours), (where, ours)
    else:
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15), (where, ours, theirs)


# ---------------------------------------------------------------------------------------------------- Overcooked


@pytest.fixture(scope="module")
def overcooked(tmp_path_factory) -> list[dict]:
    source = data.make_source("overcooked_ai", shared_path("data", "multinet_sample", "overcooked_ai"), split="public",
                              cache_dir=tmp_path_factory.mktemp("cache"))
    return [source[index] for index in range(len(source))]


def test_overcooked_conversations_and_generation_are_the_scripts(overcooked):
    """MultiNet's VLM instruction for each timestep (layout, the seconds as read, meanings, options, answer format)
    in the script's conversation, in the script's order (trials in order, steps in order)."""
    reference = fixture()["overcooked"]["runs"][0]
    assert [messages("overcooked_ai", sample) for sample in overcooked] == reference["chats"]
    check_generation("overcooked_ai", reference)


@pytest.mark.parametrize("run", range(3))
def test_overcooked_answers_are_read_and_scored_as_the_script(overcooked, run):
    """Each scripted answer read by the script's rule (a Python or JSON list of 36 values `float()` takes, summing to
    1 within 1e-5, any signs), then the project's Overcooked kernel: the script's whole results, joint and per player."""
    reference = fixture()["overcooked"]["runs"][run]
    answers = [reference["answers"][index % len(reference["answers"])] for index in range(len(overcooked))]
    rows = records("overcooked_ai", overcooked, answers)
    results = reference["results"]
    assert [-1 if row["prediction"] is None else int(np.argmax(row["prediction"])) for row in rows] == results["preds"]
    assert [row["ground_truth"] for row in rows] == results["gt_actions"]
    scored = metrics.score("overcooked_ai", rows)
    for name in ("", "player0_results", "player1_results"):
        theirs = results[name] if name else {key: value for key, value in results.items() if not key.startswith("player")}
        ours = scored[name] if name else scored
        theirs = {OVERCOOKED_NAMES.get(key, key): value for key, value in theirs.items()
                  if key not in ("total_batches", "total_timesteps")}
        assert_same({key: ours[key] for key in theirs}, theirs, f"run {run} {name or 'joint'}")
    assert results["total_timesteps"] == len(rows)


def test_the_default_rule_would_have_read_some_answers_otherwise(overcooked):
    """Why the records name their rule: negative values and numeric strings summing to 1 are valid for the script
    (run 1's first two answers), invalid by the default Overcooked rule (probabilities in [0, 1])."""
    reference = fixture()["overcooked"]["runs"][1]
    rows = records("overcooked_ai", overcooked, reference["answers"])
    assert [row["prediction"] is not None for row in rows[:2]] == [True, True]
    default = metrics.score("overcooked_ai", [{key: value for key, value in row.items() if key != "answer_rule"} for row in rows])
    assert default["total_invalid_preds"] == reference["results"]["total_invalids"] + 1  # [-0.5, 1.5, ...]


# ---------------------------------------------------------------------------------------------------- openx_quadrupedal


@pytest.fixture(scope="module")
def quadrupedal(tmp_path_factory) -> tuple[list[dict], dict]:
    directory = write_quadrupedal(tmp_path_factory.mktemp("data")) / "openx_quadrupedal"
    source = data.make_source("openx_quadrupedal", directory, split="test", cache_dir=tmp_path_factory.mktemp("cache"),
                              instruction_prompt=True)
    return [source[index] for index in range(len(source))], data.source_action_stats(source, kind="multinet")


@pytest.mark.parametrize("model", ["pi0", "magma"])
def test_only_a_protocol_reading_multinets_vlm_instruction_needs_its_definitions(model, tmp_path):
    """The evaluator opens a domain's data under the model's protocol: openx_quadrupedal of other dims than saytap's
    12 (the bimanual sample's 14) opens for Pi0, which answers with actions, and is refused for Magma, whose
    question is MultiNet's VLM instruction (`preflight.open_domain_data`)."""
    (tmp_path / "openx_quadrupedal").symlink_to(shared_path("data", "multinet_sample", "openx_bimanual"))
    config = loop.EvalConfig(model=model, checkpoint="unread", tokenizer=None, domains=("openx_quadrupedal",),
                             data_dir=str(tmp_path), output_dir=str(tmp_path / "run"), split="public",
                             cache_dir=str(tmp_path / "cache"))
    domain = loop.domain_for(model, "openx_quadrupedal")
    if model == "magma":
        with pytest.raises(ValueError, match="openx_quadrupedal/public: openx_quadrupedal: the split's actions have 14 dims"):
            preflight.open_domain_data(config, domain)
    else:
        source = preflight.open_domain_data(config, domain)
        assert len(source) == 8 and prompts.INSTRUCTION_PROMPT not in source[0]


def test_quadrupedal_prompts_print_multinets_statistics(quadrupedal):
    """The statistics the script's prompts printed are MultiNet's of the split, to the last bit; every step's
    conversation is the script's (all batches), and the run as MultiNet ran it lacks the first batch's."""
    ours, stats = quadrupedal
    reference = fixture()["openx_quadrupedal"]
    for key, printed in reference["all_batches"]["prompt_stats"].items():
        assert stats[key] == printed["values"], key
    assert [messages("openx_quadrupedal", sample) for sample in ours] == reference["all_batches"]["chats"]
    assert reference["as_run"]["chats"] == reference["all_batches"]["chats"][2:]  # its first batch (2 steps) raised
    assert reference["as_run"]["results"]["total_timesteps"] == len(ours) - 2
    check_generation("openx_quadrupedal", reference["all_batches"])


def test_quadrupedal_answers_are_read_and_scored_as_the_script(quadrupedal):
    """Each answer read by the script's rule (a literal, a non-list as a one-value list, 12 values none a str or set,
    bytes and booleans taken by float()), row by row as the script validated and converted it, then the project's
    Open-X kernel with the split's MultiNet statistics: the script's results over every batch."""
    ours, stats = quadrupedal
    reference = fixture()["openx_quadrupedal"]["all_batches"]
    rows = records("openx_quadrupedal", ours, reference["answers"])
    assert len(rows) == len(reference["scored"]) == len(reference["answers"])
    for row, theirs in zip(rows, reference["scored"]):
        assert row["ground_truth"] == theirs["ground_truth"]
        assert row["prediction"] == theirs["floats"], theirs["parsed"]
    assert sum(row["prediction"] is None for row in rows) == reference["results"]["total_invalid_preds"]
    scored = metrics.score("openx_quadrupedal", rows, action_stats=stats)
    theirs = {key: value for key, value in reference["results"].items() if key != "total_batches"}
    assert_same({key: scored[key] for key in theirs}, theirs, "quadrupedal")


@pytest.mark.parametrize("answer, dims, expected", [
    ("[None, 0.5]", 2, None),  # MultiNet's float(None) raised and dropped the batch: invalid here
    ("[[0.5], 0.5]", 2, None),
    ("[NaN, 0.5]", 2, None),  # JSON's NaN: MultiNet's errors became NaN
    ("[1e999, 0.5]", 2, None),
])
def test_quadrupedal_answers_the_script_crashed_on_or_scored_non_finite_are_invalid(answer, dims, expected):
    """The documented deviations (`magma_protocol` module docstring): answers the script could not score."""
    assert domains.parse_action_values(answer, dims) == expected


@pytest.mark.parametrize("answer, expected", [
    ("[" + ", ".join(['"nan"'] + ["0.0"] * 34 + ["1.0"]) + "]", None),  # MultiNet's sum check passed it, Brier NaN
    ("[" + ", ".join(["1.0"] + ["0.0"] * 35) + "]", [1.0] + [0.0] * 35),
])
def test_overcooked_non_finite_probabilities_are_invalid(answer, expected):
    assert domains.parse_joint_probabilities(answer) == expected


def test_quadrupedal_instruction_needs_the_definitions_dims():
    stats = {"min": [0.0] * 3, "max": [1.0] * 3, "mean": [0.5] * 3}
    with pytest.raises(ValueError, match=r"^openx_quadrupedal: the split's actions have 3 dims, MultiNet's "
                                         r"utokyo_saytap_converted_externally_to_rlds definitions describe 12$"):
        prompts.openx_instruction_prompt("openx_quadrupedal", "trot in place", stats)
