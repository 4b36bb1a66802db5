"""Activations on disk (batched, resumable, checked for gaps) and the probing report built from them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import norm

from conftest import REPO_ROOT

from multinet_jax.probing import activation_store, layer_curves
from multinet_jax.probing.probes import fit_probes

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


def _noise(rng, tasks: int, items: int, layers: int, width: int) -> dict[str, np.ndarray]:
    """Activations of items in both layouts whose features are pure noise (nothing of the answer in them)."""
    answers = rng.integers(2, size=tasks * items)
    rows = [(task, item, layout) for task in range(tasks) for item in range(items) for layout in range(2)]
    activations = {
        "item_id": np.array([f"{task}-{item}" for task, item, _ in rows]),
        "category": np.array([f"task{task}" for task, _, _ in rows]),
        "layout": np.array([("original", "swapped")[layout] for _, _, layout in rows]),
        "label": np.array([answers[task * items + item] ^ layout for task, item, layout in rows], np.int64),
    }
    for stream in ("prefix_last", "action_mean"):
        activations[stream] = rng.standard_normal((len(rows), layers, width)).astype(np.float32)
    return activations


def test_peaks_of_noise_above_chance_are_not_counted_as_signal():
    """A peak is the best of several layers' noisy accuracies, so noise peaks above chance: the permutation test
    (each item's tiles exchanged at random) puts such a peak among the permuted ones, and no retention is made of it."""
    result = layer_curves.probe_tasks(_noise(np.random.default_rng(3), tasks=3, items=40, layers=8, width=16), num_folds=5)
    prefix = [entry["prefix_last"] for entry in result["tasks"].values()]
    assert all(entry["peak_accuracy"] > layer_curves.CHANCE for entry in prefix)  # what the old rule counted as signal
    assert all(entry["peak_p_value"] > layer_curves.ALPHA and len(entry["null_peak_accuracy"]) == layer_curves.PERMUTATIONS
               for entry in prefix)
    assert result["retention"] is None and set(result["retention_excluded"]) == set(result["tasks"])


def test_an_item_in_one_layout_is_refused():
    """An item in one layout only unbalances its task's labels: chance is no longer 0.5."""
    activations = _noise(np.random.default_rng(0), tasks=1, items=6, layers=2, width=4)
    kept = np.arange(len(activations["label"])) != 3  # item 1's swapped episode
    with pytest.raises(ValueError, match=r"activations row 2: field 'layout': item '0-1' has no swapped episode"):
        layer_curves.probe_tasks({key: value[kept] for key, value in activations.items()}, num_folds=2)


def test_items_of_one_content_share_a_fold():
    """Two ids of one item (`items.content_groups`) are folded together and counted once in `distinct_items`."""
    activations = _noise(np.random.default_rng(0), tasks=1, items=6, layers=2, width=4)
    content = {f"0-{item}": f"content {min(item, 4)}" for item in range(6)}  # items 4 and 5: one content
    entry = layer_curves.probe_tasks(activations, num_folds=2, content=content)["tasks"]["task0"]
    assert (entry["items"], entry["distinct_items"]) == (6, 5)
    folds = fit_probes(activations["prefix_last"], activations["label"],
                       np.array([content[item] for item in activations["item_id"]]), num_folds=2).folds
    assert len(set(folds[np.isin(activations["item_id"], ["0-4", "0-5"])])) == 1


def test_the_probe_command_never_prints_a_p_value_as_alpha_it_is_not():
    """A peak's p-value (1 + k) / (1 + permutations) just above alpha, 21 / 400 = 0.0525, fails p <= 0.05: printed
    to two digits it would read "0.05"; one just below, 0.0499, passes and is not rounded up to alpha either."""
    code = "from multinet_jax.cli import probe; print([probe._p_text(p) for p in (21 / 400, 0.0499, 0.05, 0.65, 1.0)])"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == str(["0.052", "0.0499", "0.05", "0.65", "1"])


def test_unconverged_real_fits_are_counted_apart_and_said(capsys):
    """A fit stopped at max_iter is counted per label set: one number over real, control and null fits (19 null sets
    to one real) hid whether the accuracies themselves were off, and nothing was said."""
    activations = _noise(np.random.default_rng(0), tasks=1, items=10, layers=2, width=16)
    result = layer_curves.probe_tasks(activations, num_folds=2, max_iter=1)
    entry = result["tasks"]["task0"]["prefix_last"]
    fits = 2 * 2  # layers x folds per label set
    assert entry["unconverged_fits"] == {"real": fits, "control": fits, "null": fits * layer_curves.PERMUTATIONS}
    assert result["unconverged_real_fits"] == 2 * fits  # both streams
    warning = capsys.readouterr().err
    assert "warning: 8 real-label probe fits stopped at max_iter=1 before converging: their accuracies may be off; " \
           "raise --max_iter (task0/prefix_last 4, task0/action_mean 4)" in warning
    assert "max_iter=1" in layer_curves.figure(result)._suptitle.get_text().replace("\n", " ")
    converged = layer_curves.probe_tasks(activations, num_folds=2, max_iter=1000)
    assert converged["unconverged_real_fits"] == 0 and "warning" not in capsys.readouterr().err
    assert "max_iter" not in layer_curves.figure(converged)._suptitle.get_text()


def _edit(path, change):
    with np.load(path) as batch:
        arrays = dict(batch)
    change(arrays)
    np.savez(path, **arrays)


@pytest.mark.parametrize("batch, change, message", [
    # one row short, then one row long: the totals agree, and every feature between them sat beside the next label
    ("batch_00000000.npz", lambda a: a.update(prefix_last=a["prefix_last"][1:]),
     r"batch_00000000.npz: array 'prefix_last' has shape \(5, 3, 8\), not one row per sample index \(6\)"),
    ("batch_00000006.npz", lambda a: a.update(label=a["label"][:-1]),
     r"batch_00000006.npz: array 'label' has shape \(5,\), not one row per sample index \(6\)"),
    ("batch_00000006.npz", lambda a: a.update(action_mean=a["action_mean"][:, :, :-1]),
     r"batch_00000006.npz: array 'action_mean' has rows of shape \(3, 7\), the first batch's have \(3, 8\)"),
    ("batch_00000006.npz", lambda a: a["action_mean"].__setitem__((2, 1, 3), np.nan),
     r"batch_00000006.npz: stream 'action_mean' holds NaN or inf values \(the first at index \[2, 1, 3\]\)"),
], ids=["short_then_long", "short_labels", "narrower", "nan"])
def test_a_batch_whose_arrays_disagree_is_refused_naming_it(tmp_path, batch, change, message):
    rng = np.random.default_rng(0)
    for start in (0, 6):
        activation_store.write_batch(tmp_path, _batch(start, 6, rng, np.eye(8)[0]))
    _edit(tmp_path / batch, change)
    if batch == "batch_00000000.npz":  # the long batch after the short one
        _edit(tmp_path / "batch_00000006.npz", lambda a: a.update(prefix_last=np.concatenate([a["prefix_last"], a["prefix_last"][:1]])))
    with pytest.raises(activation_store.ActivationError, match=message):
        activation_store.read(tmp_path)
