"""MiniLM embedder against an independent NumPy forward pass; VQA and BFCL metrics against references."""

from __future__ import annotations

import functools
import json
import re

import numpy as np
import pyarrow.ipc
import pytest
import tokenizers

import metrics_reference as reference
from conftest import shared_path
from metrics_helpers import assert_metrics_match, numpy_minilm_embedding, records
from multinet_jax import metrics

# float32 Flax vs float64 NumPy forward passes of the same weights.
SIMILARITY_RTOL = 1e-5
# MultiNet's similarity metric names (VQAMetricsCalculator, BFCLMetricsCalculator): what skip_similarity leaves out.
SIMILARITY_NAMES = {
    "avg_similarity_score", "max_similarity_score", "min_similarity_score", "similarity_std",
    "high_similarity_percentage", "high_similarity_threshold",
}
SKIPPED_MARKER = {"similarity_metrics": "skipped (no sentence embedder given)"}


@pytest.fixture(scope="module")
def model_dir():
    return shared_path("models", "all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def embedder(model_dir):
    return metrics.SentenceEmbedder(model_dir)


@pytest.fixture(scope="module")
def numpy_similarity(model_dir):
    tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)

    @functools.cache
    def embed(text: str) -> np.ndarray:
        return numpy_minilm_embedding(model_dir, tokenizer.encode(text).ids)

    return lambda text, reference_text: float(embed(text) @ embed(reference_text))


@pytest.fixture(scope="module")
def piqa_rows() -> list[dict]:
    path = shared_path("data", "piqa_validation", "data-00000-of-00001.arrow")
    with pyarrow.ipc.open_stream(str(path)) as reader:
        return reader.read_all().slice(0, 12).to_pylist()


def test_embeddings_match_a_numpy_forward_pass(embedder, model_dir, piqa_rows):
    texts = [row["goal"] for row in piqa_rows[:5]] + [piqa_rows[0]["sol1"], "ok", ""]
    ours = embedder.embed(texts)
    tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    for text, embedding in zip(texts, ours):
        expected = numpy_minilm_embedding(model_dir, tokenizer.encode(text).ids)
        np.testing.assert_allclose(embedding, expected, atol=2e-6)
    assert ours.dtype == np.float32 and ours.shape == (len(texts), 384)


def test_long_text_is_truncated_like_sentence_transformers(embedder, model_dir):
    text = " ".join(["robot arm picks up the red block"] * 80)  # > 256 tokens
    tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)
    ids = tokenizer.encode(text).ids
    assert len(ids) == 256
    np.testing.assert_allclose(embedder.embed([text])[0], numpy_minilm_embedding(model_dir, ids), atol=2e-6)


@pytest.mark.parametrize("edit, problem", [
    (lambda d: _edit_json(d / "1_Pooling" / "config.json", pooling_mode_mean_tokens=False, pooling_mode_cls_token=True),
     r"1_Pooling/config.json: pooling \['pooling_mode_cls_token'\]: only mean pooling"),
    (lambda d: (d / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Transformer"},
                                                            {"type": "sentence_transformers.models.Pooling"},
                                                            {"type": "sentence_transformers.models.Dense"}])),
     r"modules.json: modules \[.*Dense'\]: only .*Transformer -> .*Pooling -> .*Normalize"),
    (lambda d: _edit_json(d / "config.json", model_type="mpnet"), r"config.json: model_type 'mpnet': only BERT encoders"),
])
def test_a_directory_declaring_another_pooling_or_encoder_is_refused(model_dir, tmp_path, edit, problem):
    """--embedder_dir names where all-MiniLM-L6-v2 is: a sentence-transformers directory declaring a CLS pooling, a
    Dense head or another encoder would otherwise be embedded as MiniLM's, its similarities silently not its own."""
    copy = tmp_path / "embedder"
    copy.mkdir()
    for path in sorted(model_dir.rglob("*")):  # the large files linked, the small ones copied to be edited
        target = copy / path.relative_to(model_dir)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.suffix == ".json":
            target.write_text(path.read_text())
        else:
            target.symlink_to(path)
    metrics.SentenceEmbedder(copy)  # the copy as it is loads
    edit(copy)
    with pytest.raises(ValueError, match=problem):
        metrics.SentenceEmbedder(copy)


def _edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_similar_sentences_score_higher_than_unrelated(embedder):
    similarity = embedder.similarity(
        ["A man is eating food.", "A man is eating food."],
        ["A man is eating a piece of bread.", "The stock market fell sharply today."],
    )
    assert similarity[0] > 0.6 > 0.2 > similarity[1]


@pytest.fixture(scope="module")
def vqa_case(piqa_rows) -> tuple[list, list[str]]:
    """Predictions covering every VQA rule against real PIQA solutions as answers."""
    answers = [row["sol1"] for row in piqa_rows]
    predictions = [
        answers[0],  # exact
        answers[1].upper() + "!!",  # exact after normalization
        "  " + answers[2].replace(" ", "   ") + " ",  # whitespace differs only
        piqa_rows[3]["sol2"],  # the other solution: similar, not equal
        "",  # invalid: empty
        "   ",  # invalid: whitespace
        None,  # invalid
        5,  # invalid: not text
        "no",
        piqa_rows[9]["goal"],
        answers[10],
        "Put it in the oven.",
    ]
    return predictions, answers


def test_vqa_matches_reference(embedder, numpy_similarity, vqa_case):
    predictions, answers = vqa_case
    result = metrics.score("sqa3d", records(predictions, answers), embedder=embedder)
    expected = reference.vqa(predictions, answers, numpy_similarity)
    assert_metrics_match(result, expected, rtol=SIMILARITY_RTOL)
    assert result["exact_match_accuracy"] == 4 / 12 and result["total_invalid_preds"] == 4


@pytest.fixture(scope="module")
def bfcl_answers() -> list[list[list[str]]]:
    path = shared_path("data", "bfcl_v3", "possible_answer", "BFCL_v3_multi_turn_base.json")
    return [json.loads(line)["ground_truth"] for line in path.read_text().splitlines()[:6]]


def _perturb_conversation(truth: list[list[str]], kind: int) -> list[list[str]]:
    if kind == 0:
        return [list(turn) for turn in truth]  # all right
    if kind == 1:
        return [turn[:-1] if index == 1 else list(turn) for index, turn in enumerate(truth)]  # a call missing
    if kind == 2:
        return [[] if index == 0 else list(turn) for index, turn in enumerate(truth)]  # empty first turn
    if kind == 3:
        return [list(reversed(turn)) for turn in truth]  # order swapped
    if kind == 4:
        return [list(turn) for turn in truth] + [["ls()"]]  # an extra turn
    return [list(turn) for turn in truth[:-1]]  # a turn short


@pytest.fixture(scope="module")
def bfcl_predictions(bfcl_answers) -> list[list[list[str]]]:
    return [_perturb_conversation(truth, index % 6) for index, truth in enumerate(bfcl_answers)]


def test_bfcl_real_answers_with_perturbed_predictions_match_reference(embedder, numpy_similarity, bfcl_answers, bfcl_predictions):
    responses = ["\n".join("\n".join(turn) for turn in prediction) for prediction in bfcl_predictions]
    result = metrics.score("bfcl", records(bfcl_predictions, bfcl_answers), embedder=embedder)
    expected = reference.function_calls(bfcl_predictions, bfcl_answers, responses, numpy_similarity)
    assert_metrics_match(result, expected, rtol=SIMILARITY_RTOL)
    assert 0 < result["exact_match_accuracy"] < 1 and result["total_invalid_turns"] > 0


def test_bfcl_malformed_predictions_predict_no_calls(embedder):
    truth = [["cd(folder='a')"], ["ls()"]]
    result = metrics.score("bfcl", records([None, [["cd(folder='a')"], "ls()"]], [truth, truth]), embedder=embedder)
    assert result["total_invalid_turns"] == 3 and result["total_invalid_conversations"] == 2
    assert result["turn_level_accuracy"] == {"turn_1_accuracy": 0.5, "turn_2_accuracy": 0.0}
    assert result["avg_turn_of_first_failure"] == 1.5  # turn 1 for the first, turn 2 for the second
    assert result["turn_level_recalls_until_failure"] == {
        "turn_1_recall_until_failure": 0.5,
        "turn_2_recall_until_failure": 0.0,
    }


def test_raw_responses_drive_similarity_when_given(embedder):
    truth = [["cd(folder='a')"]]
    with_calls = metrics.score("bfcl", records([[["cd(folder='a')"]]], [truth]), embedder=embedder)
    with_text = metrics.score(
        "bfcl", records([[["cd(folder='a')"]]], [truth], responses=[["I will go to folder a."]]), embedder=embedder
    )
    assert with_calls["avg_similarity_score"] == pytest.approx(1.0, abs=1e-6)
    assert with_text["avg_similarity_score"] < 0.9
    assert with_text["exact_match_accuracy"] == 1.0


@pytest.mark.parametrize("responses, message", [
    ([["cd to a"], None], "record 1: field 'responses': missing, but record 0 has them"),
    ([["cd to a", "then list"], ["cd to a"]], "record 0: field 'responses': 2 turns' answers for a prediction of 1 turns"),
])
def test_raw_responses_on_some_records_or_of_other_turns_are_refused(responses, message):
    """Similarity embeds one kind of text for every conversation, one answer per predicted turn."""
    rows = records([[["cd(folder='a')"]]] * 2, [[["cd(folder='a')"]]] * 2)
    for row, given in zip(rows, responses):
        if given is not None:
            row["responses"] = given
    with pytest.raises(metrics.RecordError, match=re.escape(message)):
        metrics.score("bfcl", rows, skip_similarity=True)


@pytest.mark.parametrize("domain", ["sqa3d", "bfcl"])
def test_skip_similarity_keeps_every_other_metric_and_marks_the_gap(domain, embedder, vqa_case, bfcl_answers, bfcl_predictions):
    predictions, truths = vqa_case if domain == "sqa3d" else (bfcl_predictions, bfcl_answers)
    with_embedder = metrics.score(domain, records(predictions, truths), embedder=embedder)
    skipped = metrics.score(domain, records(predictions, truths), skip_similarity=True)
    assert SIMILARITY_NAMES <= set(with_embedder)
    assert skipped == {name: value for name, value in with_embedder.items() if name not in SIMILARITY_NAMES} | SKIPPED_MARKER


@pytest.mark.parametrize("domain", ["robovqa", "sqa3d", "openx_multi_embodiment", "bfcl"])
def test_text_domains_require_the_embedder_or_the_explicit_opt_out(domain):
    truth = [["ls()"]] if domain == "bfcl" else "a"
    with pytest.raises(ValueError, match="all-MiniLM-L6-v2.*skip_similarity"):
        metrics.score(domain, records([truth], [truth]))
    with pytest.raises(ValueError, match="contradict"):
        metrics.score(domain, records([truth], [truth]), embedder="unused", skip_similarity=True)
    assert metrics.score(domain, records([truth], [truth]), skip_similarity=True)["exact_match_accuracy"] == 1.0


def test_skip_similarity_is_refused_for_the_other_kinds():
    """Ignored, the result would look scored without a similarity it never had (the CLI refuses the flag too)."""
    with pytest.raises(metrics.OptionError, match="^skip_similarity= is for the text-similarity metrics"):
        metrics.score("piqa", records([0, 1], [0, 0]), skip_similarity=True)
