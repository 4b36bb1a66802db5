"""BFCL multi-turn function-call metrics (MultiNet's `BFCLMetricsCalculator`).

Calls are compared as strings on the host, turn by turn, into fixed [conversations, turns] arrays
(with a mask for conversations that have fewer turns); one jitted kernel aggregates them.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from multinet_jax import domains
from multinet_jax.metrics._numerics import divide, x64_jit
from multinet_jax.metrics.embedder import SentenceEmbedder
from multinet_jax.metrics.records import RecordError
from multinet_jax.metrics.text_answers import similarity_aggregates


class TurnComparisons(NamedTuple):
    """Per-conversation, per-turn comparison results (padded to the longest conversation)."""

    turn_present: np.ndarray  # [C, T] bool: turn < max(len(predicted), len(truth))
    turn_match: np.ndarray  # [C, T] float64: predicted calls == true calls
    turn_recall: np.ndarray  # [C, T] float64: in-order matches until the first mismatch / true calls
    turn_invalid: np.ndarray  # [C, T] bool: nothing predicted where calls were expected
    conversation_match: np.ndarray  # [C] float64: flattened calls equal
    predicted_functions: np.ndarray  # [C] int64
    true_functions: np.ndarray  # [C] int64
    true_turns: np.ndarray  # [C] int64


def _calls(turn: Any) -> list[str]:
    """A predicted turn's calls; anything but a list of strings predicts no call (as MultiNet treats a non-dict turn)."""
    return list(turn) if isinstance(turn, list) and all(isinstance(call, str) for call in turn) else []


def predicted_turns(prediction: Any) -> list[list[str]]:
    return [_calls(turn) for turn in prediction] if isinstance(prediction, list) else []


def true_turns(ground_truth: Any, index: int) -> list[list[str]]:
    if not domains.is_turns_of_calls(ground_truth):
        raise RecordError(index, "ground_truth", "expected a list of turns, each a list of call strings")
    return ground_truth


def _recall_until_failure(predicted: list[str], truth: list[str]) -> float:
    if not truth:
        return 1.0
    matches = 0
    for predicted_call, true_call in zip(predicted, truth):
        if predicted_call != true_call:
            break
        matches += 1
    return matches / len(truth)


def compare_turns(predictions: Sequence[list[list[str]]], truths: Sequence[list[list[str]]]) -> TurnComparisons:
    count = len(truths)
    max_turns = max((max(len(p), len(t)) for p, t in zip(predictions, truths)), default=0)
    shape = (count, max(max_turns, 1))
    present, invalid = np.zeros(shape, bool), np.zeros(shape, bool)
    match, recall = np.zeros(shape), np.zeros(shape)
    for row, (predicted, truth) in enumerate(zip(predictions, truths)):
        for turn in range(max(len(predicted), len(truth))):
            predicted_calls = predicted[turn] if turn < len(predicted) else []
            true_calls = truth[turn] if turn < len(truth) else []
            present[row, turn] = True
            invalid[row, turn] = not predicted_calls and bool(true_calls)
            match[row, turn] = predicted_calls == true_calls
            recall[row, turn] = _recall_until_failure(predicted_calls, true_calls)
    flatten = lambda turns: [call for turn in turns for call in turn]  # noqa: E731
    return TurnComparisons(
        present,
        match,
        recall,
        invalid,
        np.array([flatten(p) == flatten(t) for p, t in zip(predictions, truths)], np.float64),
        np.array([len(flatten(p)) for p in predictions], np.int64),
        np.array([len(flatten(t)) for t in truths], np.int64),
        np.array([len(t) for t in truths], np.int64),
    )


def _per_turn_mean(values: jax.Array, present: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(present, values, 0.0), axis=0) / jnp.maximum(jnp.sum(present, axis=0), 1)


def _function_call_kernel(comparisons: TurnComparisons, similarity: jax.Array | None):
    """`similarity` None (no embedder): the similarity aggregates are left out (a static choice under jit)."""
    count = comparisons.true_turns.shape[0]
    present = comparisons.turn_present
    failed = present & (comparisons.turn_match == 0.0)
    turns = jnp.sum(present, axis=1)
    first_failure = jnp.where(jnp.any(failed, axis=1), jnp.argmax(failed, axis=1) + 1, turns + 1)
    invalid_turns = jnp.sum(comparisons.turn_invalid)
    invalid_conversations = jnp.sum(jnp.any(comparisons.turn_invalid, axis=1))
    true_turn_total = jnp.sum(comparisons.true_turns)
    predicted_total = jnp.sum(comparisons.predicted_functions)
    true_total = jnp.sum(comparisons.true_functions)
    return {
        "turn_accuracy": _per_turn_mean(comparisons.turn_match, present),
        "turn_recall_until_failure": _per_turn_mean(comparisons.turn_recall, present),
        "avg_turn_of_first_failure": divide(jnp.sum(first_failure), count),
        "total_invalid_turns": invalid_turns,
        "invalid_turn_percentage": jnp.where(true_turn_total > 0, invalid_turns / jnp.maximum(true_turn_total, 1) * 100, 0.0),
        "total_invalid_conversations": invalid_conversations,
        "invalid_conversation_percentage": divide(invalid_conversations, count) * 100,
        "exact_match_accuracy": divide(jnp.sum(comparisons.conversation_match), count),
        **({} if similarity is None else similarity_aggregates(similarity)),
        "total_samples": count,
        "total_predicted_functions": predicted_total,
        "total_ground_truth_functions": true_total,
        "avg_predicted_functions_per_sample": divide(predicted_total, count),
        "avg_ground_truth_functions_per_sample": divide(true_total, count),
    }


function_call_kernel = x64_jit(_function_call_kernel)


def function_calls(
    predictions: Sequence[list[list[str]]],
    truths: Sequence[list[list[str]]],
    responses: Sequence[str],
    embedder: SentenceEmbedder | None,
) -> dict[str, Any]:
    """MultiNet's BFCL metrics; `responses[i]` is conversation i's newline-joined model output.

    `embedder` None computes everything but the similarity metrics (`score(..., skip_similarity=True)`).
    """
    comparisons = compare_turns(predictions, truths)
    similarity = None
    if embedder is not None:
        true_text = ["\n".join(call for turn in truth for call in turn) for truth in truths]
        similarity = embedder.similarity(list(responses), true_text).astype(np.float64)
    metrics = function_call_kernel(comparisons, similarity)
    turn_accuracy = np.asarray(metrics.pop("turn_accuracy")).tolist()
    turn_recall = np.asarray(metrics.pop("turn_recall_until_failure")).tolist()
    max_turns = int(comparisons.turn_present.sum(axis=1).max(initial=0))
    return {
        "turn_level_accuracy": {f"turn_{i + 1}_accuracy": turn_accuracy[i] for i in range(max_turns)},
        "turn_level_recalls_until_failure": {
            f"turn_{i + 1}_recall_until_failure": turn_recall[i] for i in range(max_turns)
        },
        **metrics,
    }
