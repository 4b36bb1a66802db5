"""Helpers for the metrics tests: record building, tolerant recursive comparison, a NumPy MiniLM."""

from __future__ import annotations

import functools
import json
import math
import pathlib
from typing import Any, Sequence

import numpy as np
from safetensors.numpy import load_file
from scipy.special import erf


def records(predictions: Sequence[Any], ground_truth: Sequence[Any], **extra: Sequence[Any]) -> list[dict[str, Any]]:
    rows = [{"id": str(i), "prediction": p, "ground_truth": g} for i, (p, g) in enumerate(zip(predictions, ground_truth))]
    for key, values in extra.items():
        for row, value in zip(rows, values):
            row[key] = value
    return rows


def assert_metrics_match(actual: Any, expected: Any, *, rtol: float = 1e-9, path: str = "") -> None:
    """Same keys, same nesting; numbers equal to `rtol` (NaN == NaN, inf == inf); lists exactly equal."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected a dict, got {actual!r}"
        assert set(actual) == set(expected), f"{path}: keys differ: {set(actual) ^ set(expected)}"
        for key in expected:
            assert_metrics_match(actual[key], expected[key], rtol=rtol, path=f"{path}.{key}")
    elif isinstance(expected, list):
        assert actual == expected, f"{path}: lists differ"
    elif isinstance(expected, float) and math.isnan(expected):
        assert isinstance(actual, float) and math.isnan(actual), f"{path}: expected NaN, got {actual!r}"
    else:
        assert actual == expected or math.isclose(actual, expected, rel_tol=rtol, abs_tol=1e-12), (
            f"{path}: got {actual!r}, expected {expected!r}"
        )


def _layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * scale + bias


@functools.cache
def _minilm_weights(model_dir: pathlib.Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    config = json.loads((model_dir / "config.json").read_text())
    return config, {k: v.astype(np.float64) for k, v in load_file(str(model_dir / "model.safetensors")).items()}


def numpy_minilm_embedding(model_dir: pathlib.Path, token_ids: Sequence[int]) -> np.ndarray:
    """One sentence through BERT in float64 NumPy, straight from the safetensors names; mean-pooled, L2-normalized."""
    config, w = _minilm_weights(model_dir)
    eps, heads = config["layer_norm_eps"], config["num_attention_heads"]
    ids = np.asarray(token_ids)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: len(ids)]
    x = x + w["embeddings.token_type_embeddings.weight"][0]
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    linear = lambda h, name: h @ w[f"{name}.weight"].T + w[f"{name}.bias"]  # noqa: E731
    for layer in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{layer}"
        q, k, v = (linear(x, f"{p}.attention.self.{n}").reshape(len(ids), heads, -1) for n in ("query", "key", "value"))
        q, k, v = (t.transpose(1, 0, 2) for t in (q, k, v))  # [heads, tokens, head_dim]
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
        probabilities = np.exp(scores - scores.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
        context = (probabilities @ v).transpose(1, 0, 2).reshape(len(ids), -1)
        x = _layer_norm(x + linear(context, f"{p}.attention.output.dense"),
                        w[f"{p}.attention.output.LayerNorm.weight"], w[f"{p}.attention.output.LayerNorm.bias"], eps)
        hidden = linear(x, f"{p}.intermediate.dense")
        hidden = 0.5 * hidden * (1 + erf(hidden / np.sqrt(2)))
        x = _layer_norm(x + linear(hidden, f"{p}.output.dense"),
                        w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"], eps)
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def with_pipeline_names(expected: dict, kind: str) -> dict:
    """A harness result plus the names MultiNet's Pi0 pipelines stored the same values under (`score` gives both)."""
    from multinet_jax.metrics.scoring import PIPELINE_NAMES

    return {**expected, **{alias: expected[name] for alias, name in PIPELINE_NAMES.get(kind, {}).items()}}
