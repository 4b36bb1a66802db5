"""VQA text metrics (SQA3D, RoboVQA; MultiNet's `VQAMetricsCalculator`).

String work (normalization, exact match, validity) is host-side; the aggregates are one jitted
kernel. Similarity is the cosine of all-MiniLM-L6-v2 embeddings of the raw prediction and answer.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from multinet_jax.metrics._numerics import divide, x64_jit
from multinet_jax.metrics.embedder import SentenceEmbedder

HIGH_SIMILARITY_THRESHOLD = 0.8
_PUNCTUATION = re.compile(r"[^\w\s]")


def normalize_text(text: str) -> str:
    """Lowercase, drop punctuation (`[^\\w\\s]`), collapse whitespace: MultiNet's `_normalize_text`."""
    return " ".join(_PUNCTUATION.sub("", text.lower()).split())


def is_valid_text(prediction: Any) -> bool:
    """MultiNet's `_validate_text_output`: a string with something besides whitespace."""
    return isinstance(prediction, str) and len(prediction.strip()) > 0


def similarity_aggregates(similarity: jax.Array) -> dict[str, jax.Array]:
    """Mean/max/min/std of per-sample similarity and the share at or above 0.8 (traced)."""
    count = similarity.shape[0]
    return {
        "avg_similarity_score": divide(jnp.sum(similarity), count),
        "max_similarity_score": jnp.max(similarity),
        "min_similarity_score": jnp.min(similarity),
        "similarity_std": jnp.std(similarity),
        "high_similarity_percentage": divide(jnp.sum(similarity >= HIGH_SIMILARITY_THRESHOLD), count) * 100,
        "high_similarity_threshold": HIGH_SIMILARITY_THRESHOLD,
    }


def _vqa_kernel(exact_match, similarity, valid):
    """`similarity` None (no embedder): the similarity aggregates are left out (a static choice under jit)."""
    count = exact_match.shape[0]
    invalid = count - jnp.sum(valid)
    return {
        "exact_match_accuracy": divide(jnp.sum(exact_match), count),
        **({} if similarity is None else similarity_aggregates(jnp.where(valid, similarity, 0.0))),
        "total_samples": count,
        "total_invalid_preds": invalid,
        "invalid_percentage": divide(invalid, count) * 100,
    }


vqa_kernel = x64_jit(_vqa_kernel)


def vqa(predictions: Sequence[Any], answers: Sequence[str], embedder: SentenceEmbedder | None, *,
        script_rule: bool = False) -> dict[str, Any]:
    """Exact match on normalized text, embedding similarity on raw text; invalid predictions score 0 (MultiNet's Pi0
    scripts).

    `script_rule`: as MultiNet's Magma scripts scored (`_calculate_final_metrics`): a prediction is already the
    script's normalized answer (`domains.parse_text_magma`), valid when it is a string (one normalized to nothing
    too), right when it equals the label as written, and compared with that label for similarity.
    `embedder` None computes everything but the similarity metrics (`score(..., skip_similarity=True)`).
    """
    if script_rule:
        valid = np.array([isinstance(prediction, str) for prediction in predictions], bool).reshape(len(predictions))
        same = [ok and p == a for p, a, ok in zip(predictions, answers, valid)]
    else:
        valid = np.array([is_valid_text(prediction) for prediction in predictions], bool).reshape(len(predictions))
        same = [ok and normalize_text(p) == normalize_text(a) for p, a, ok in zip(predictions, answers, valid)]
    exact = np.array(same, np.float64).reshape(len(predictions))
    if embedder is None:
        return vqa_kernel(exact, None, valid)
    similarity = np.zeros(len(predictions), np.float64)
    indices = np.flatnonzero(valid)
    if indices.size:
        similarity[indices] = embedder.similarity([predictions[i] for i in indices], [answers[i] for i in indices])
    return vqa_kernel(exact, similarity, valid)
