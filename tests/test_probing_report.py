"""Activations on disk (batched, resumable, checked for gaps) and the probing report built from them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import norm

from multinet_jax.probing import activation_store, layer_curves

PREFIX_STRENGTH = np.array([0.1, 0.9, 0.4])  # per layer, sigma 1
ACTION_STRENGTH = np.array([0.1, 0.5, 0.3])


def _batch(start, size, rng, direction):
    index = np.arange(start, start + size)
    labels = (index + index // 2) % 2  # two layouts per item, opposite labels
    sign = (2 * labels - 1)[:, None, None]
    features = lambda strength: (rng.standard_normal((size, 3, 8)) + sign * strength[None, :, None] * direction).astype(np.float32)
    return {
        "sample_index": index, "id": [f"{i // 2}/{('original', 'swapped')[i % 2]}" for i in index],
        "item_id": [str(i // 2) for i in index], "layout": [("original", "swapped")[i % 2] for i in index],
        "category": [("color", "shape")[(i // 2) % 2] for i in index], "label": labels,
        "prefix_last": features(PREFIX_STRENGTH), "action_mean": features(ACTION_STRENGTH),
    }


def test_batches_round_trip_resume_and_gaps(tmp_path):
    rng = np.random.default_rng(0)
    direction = np.eye(8)[0]
    assert activation_store.resume_index(tmp_path / "split") == 0
    written = [_batch(0, 6, rng, direction), _batch(6, 6, rng, direction)]
    for batch in written:
        activation_store.write_batch(tmp_path / "split", batch)
    assert activation_store.resume_index(tmp_path / "split") == 12
    (tmp_path / "split" / "batch_00000012.tmp").write_bytes(b"torn")  # a killed write leaves no batch behind
    loaded = activation_store.read(tmp_path / "split")
    np.testing.assert_array_equal(loaded["prefix_last"], np.concatenate([b["prefix_last"] for b in written]))
    assert loaded["id"].tolist() == written[0]["id"] + written[1]["id"] and loaded["label"].dtype == np.int64
    assert set(activation_store.read(tmp_path / "split", streams=["action_mean"])) == {
        "sample_index", "id", "item_id", "layout", "category", "label", "action_mean"}
    with pytest.raises(activation_store.ActivationError, match="no stream 'prefix_mean'"):
        activation_store.read(tmp_path / "split", streams=["prefix_mean"])
    activation_store.write_batch(tmp_path / "split", _batch(18, 6, rng, direction))
    with pytest.raises(activation_store.ActivationError, match=r"batch_00000018.npz: holds samples \[18, 19, 20\]\.\.\., expected to start at 12"):
        activation_store.read(tmp_path / "split")
    with pytest.raises(activation_store.ActivationError, match="no batch_"):
        activation_store.read(tmp_path / "empty")


def test_report_curves_retention_and_plot(tmp_path):
    rng = np.random.default_rng(1)
    direction = rng.standard_normal(8)
    direction /= np.linalg.norm(direction)
    for start in range(0, 3200, 800):
        activation_store.write_batch(tmp_path / "split", _batch(start, 800, rng, direction))
    result = layer_curves.probe_tasks(activation_store.read(tmp_path / "split"), num_folds=5)
    assert result["streams"] == ["prefix_last", "action_mean"] and set(result["tasks"]) == {"color", "shape"}
    for task in ("color", "shape"):
        entry = result["tasks"][task]
        assert entry["episodes"] == 1600 and entry["items"] == 800
        np.testing.assert_allclose(entry["prefix_last"]["accuracy"], norm.cdf(PREFIX_STRENGTH), atol=0.04)
        np.testing.assert_allclose(entry["action_mean"]["accuracy"], norm.cdf(ACTION_STRENGTH), atol=0.04)
        assert entry["prefix_last"]["peak_layer"] == 1
        np.testing.assert_allclose(entry["prefix_last"]["control_accuracy"], 0.5, atol=0.06)
    bayes_retention = (norm.cdf(0.5) - 0.5) / (norm.cdf(0.9) - 0.5)
    assert result["retention"] == pytest.approx(bayes_retention, abs=0.1) and result["retention_excluded"] == {}
    json.dumps(result)  # plain JSON
    assert layer_curves.plot(result, tmp_path / "probing.png").stat().st_size > 10_000
