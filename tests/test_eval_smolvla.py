"""`eval --model=smolvla` and `probe` on the demo's tiny SmolVLA (LeRobot's layout, written by the registry's
`write_random`): Open-X actions, Act2Answer (its text probe; the action probe off for want of a frame), per-layer activations of both stacks."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import numpy as np
import pytest

import eval_helpers
from act2answer_helpers import item_set
from multinet_jax import data, demo, weights
from multinet_jax.demo import datasets
from multinet_jax.eval import EvalConfig, Evaluator
from multinet_jax.models import load_model, registry, smolvla_checkpoint
from multinet_jax.models.interface import InferenceOptions
from multinet_jax.probing import activation_store, runner

LIMIT = 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> pathlib.Path:
    return demo.build_checkpoint("smolvla", tmp_path_factory.mktemp("smolvla") / "smolvla_demo")


def test_demo_checkpoint_is_lerobots_layout_and_loads_as_smolvla(checkpoint):
    config = smolvla_checkpoint.read_config(checkpoint)
    specs = weights.safetensors.read_tensor_specs(checkpoint)
    assert {name: spec.shape for name, spec in specs.items()} == smolvla_checkpoint.tensor_shapes(config)
    assert registry.family_of(checkpoint) == "smolvla"
    model = load_model(checkpoint)
    assert model.family == "smolvla" and model.multinet_actions is None
    stats = model.checkpoint_action_stats(None)
    assert stats["mean"].shape == stats["std"].shape == (config.action_dim,)


def test_openx_predictions_are_the_models_first_step_unnormalized_with_split_stats(checkpoint, tmp_path):
    """Each prediction is `predict_actions` on the same batch (task texts, the 12-dim state normalized with the
    checkpoint's statistics, base_0_rgb as its one camera), first step, unnormalized with the split's statistics by
    LeRobot's rule (`x * std + mean`, without openpi's epsilon), which the protocol records."""
    paths = eval_helpers.assets()
    eval_helpers.evaluate(tmp_path, ("openx_bimanual",), model="smolvla", checkpoint=str(checkpoint), tokenizer=None,
                          limit=LIMIT, batch_size=LIMIT, num_flow_steps=2, dtype="float32")
    records = eval_helpers.read_jsonl(tmp_path / "predictions" / "openx_bimanual.jsonl")
    assert [record["sample_index"] for record in records] == list(range(LIMIT))
    model = load_model(checkpoint)
    batch = next(iter(data.load("openx_bimanual", pathlib.Path(paths["data_dir"]) / "openx_bimanual", split="public",
                                tokenizer=None, batch_size=LIMIT, limit=LIMIT, cache_dir=paths["cache_dir"])))
    observation = {**data.model_inputs(batch), "prompt": list(batch["prompt"])}
    raw = model.predict_actions(observation, rng=jax.random.key(0), options=InferenceOptions(num_flow_steps=2))
    actions = datasets.openx_actions()
    mean, std = actions.astype(np.float64).mean(axis=0), actions.astype(np.float64).std(axis=0)
    np.testing.assert_allclose([r["prediction"] for r in records], raw[:, 0, :14] * std + mean, rtol=1e-4, atol=1e-5)
    written = json.loads((tmp_path / "openx_bimanual_metrics.json").read_text())
    assert written["metrics"]["invalid_percentage"] == 0
    assert written["protocol_settings"]["lerobot_unnormalize"] is True


def test_smolvla_act2answer_runs_the_text_probe_and_says_why_not_the_action_probe(checkpoint, tmp_path):
    """LeRobot's config names no action frame, so the action probe (which reads an end-effector displacement) is
    off with its reason in every record and in the metrics; the text probe scores both options."""
    data_dir = pathlib.Path(eval_helpers.assets()["data_dir"])
    datasets.write_missing(data_dir, ["act2answer"])
    rows = eval_helpers.evaluate(tmp_path, ("act2answer",), model="smolvla", checkpoint=str(checkpoint), tokenizer=None,
                                 limit=LIMIT, batch_size=4, num_flow_steps=2)
    records = eval_helpers.read_jsonl(tmp_path / "predictions" / "act2answer.jsonl")
    assert len(records) == LIMIT
    reason = records[0]["action_probe"]
    assert reason.startswith("not applicable: ") and f"{checkpoint}/config.json" in reason
    for record in records:
        assert record["prediction"] == int(np.argmax(record["raw_output"])) and len(record["raw_output"]) == 2
        assert record["action_probe"] == reason and record["action_prediction"] is None
    assert "text_probe_accuracy" in rows["act2answer"] and "action_probe_accuracy" not in rows["act2answer"]
    written = json.loads((tmp_path / "act2answer_metrics.json").read_text())
    assert written["metrics"]["action_probe"] == reason
    assert written["action_frame"] == dataclasses.asdict(smolvla_checkpoint.action_frame(str(checkpoint)))


def test_an_in_memory_smolvla_is_frame_checked_too(checkpoint, tmp_path):
    """`Evaluator(model=)` reads no checkpoint files; the action probe is still off for a SmolVLA (its frame unnamed),
    with the reason in the records and the metrics, and the text probe runs."""
    datasets.write_missing(pathlib.Path(eval_helpers.assets()["data_dir"]), ["act2answer"])
    config = EvalConfig(**eval_helpers.settings(tmp_path, ("act2answer",), model="smolvla", checkpoint=str(checkpoint),
                                                tokenizer=None, limit=LIMIT, batch_size=4, num_flow_steps=2))
    evaluator = Evaluator(config, model=load_model(checkpoint))
    reason = evaluator.action_probe_unavailable
    assert reason.startswith("not applicable: an in-memory SmolVLA model") and str(checkpoint) not in reason
    evaluator.evaluate_domain("act2answer")
    records = eval_helpers.read_jsonl(tmp_path / "predictions" / "act2answer.jsonl")
    assert len(records) == LIMIT and all(record["action_probe"] == reason for record in records)
    written = json.loads((tmp_path / "act2answer_metrics.json").read_text())
    assert written["metrics"]["action_probe"] == reason
    assert written["action_frame"] == dataclasses.asdict(smolvla_checkpoint.action_frame(None))


def test_probe_saves_both_stacks_per_layer(checkpoint, tmp_path):
    items = item_set(tmp_path / "items", items_per_category=2)
    config = runner.ProbeConfig(checkpoint=str(checkpoint), tokenizer=None, data_dir=str(items),
                                output_dir=str(tmp_path / "probe"), batch_size=6, num_flow_steps=2, num_folds=2)
    runner.run_probe(config)
    saved = activation_store.read(tmp_path / "probe" / "activations" / "all")
    vlm, expert = smolvla_checkpoint.read_config(checkpoint).vlm, smolvla_checkpoint.read_config(checkpoint).expert
    count = len(saved["id"])
    assert saved["prefix_last"].shape == saved["prefix_mean"].shape == (count, vlm.depth, vlm.width)
    assert saved["action_mean"].shape == (count, expert.depth, expert.width)
    assert np.isfinite(saved["action_mean"]).all()
