"""`eval --model=magma` and `probe` with Magma: the registry's family runs on action and text domains, Act2Answer's
probes and layer activations through the model interface, with the tiny Magma written by Magma's own code
(`../shared/magma_reference`)."""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest

import eval_helpers
from act2answer_helpers import item_set
from magma_helpers import magma_dir, magma_model, write_quadrupedal
from multinet_jax import data, domains
from multinet_jax.demo import datasets
from multinet_jax.eval import manifest
from multinet_jax.models import magma_protocol
from multinet_jax.probing import activation_store, runner

LIMIT = 4


def test_magma_runs_action_and_text_domains(tmp_path):
    eval_helpers.evaluate(tmp_path, ("openx_bimanual", "piqa"), model="magma",
                          checkpoint=magma_dir(), tokenizer=None, limit=LIMIT, max_decoding_steps=8)
    texts = eval_helpers.read_jsonl(tmp_path / "predictions" / "piqa.jsonl")
    assert [record["sample_index"] for record in texts] == list(range(LIMIT))
    assert all(isinstance(record["raw_output"], str) for record in texts)
    assert len(eval_helpers.read_jsonl(tmp_path / "predictions" / "openx_bimanual.jsonl")) == LIMIT
    manifest = json.loads((tmp_path / "run_manifest.json").read_text())
    assert manifest["settings"]["model"] == "magma" and manifest["tokenizers"] == {}  # its checkpoint bundles one


def test_magma_resumes_its_transformed_ground_truth_and_refuses_another(tmp_path):
    """MultiNet's Magma script scored openx_bimanual on the last 7 of 14 dims (`magma_protocol.GROUND_TRUTH_TRANSFORMS`):
    the manifest records the transform, a resume compares the written ground truth with the data's transformed (it was
    refused as changed data before), and a manifest recording another transform, or none, is refused."""
    settings = {"model": "magma", "checkpoint": magma_dir(), "tokenizer": None, "max_decoding_steps": 8, "batch_size": 2}
    eval_helpers.evaluate(tmp_path, ("openx_bimanual",), limit=2, **settings)
    path = tmp_path / manifest.FILENAME
    recorded = json.loads(path.read_text())
    transform, scored = magma_protocol.GROUND_TRUTH_TRANSFORMS["openx_bimanual"]
    assert recorded["domains"]["openx_bimanual"]["protocol"]["ground_truth"] == transform
    eval_helpers.evaluate(tmp_path, ("openx_bimanual",), limit=LIMIT, resume=True, **settings)
    source = data.make_source("openx_bimanual", pathlib.Path(eval_helpers.assets()["data_dir"]) / "openx_bimanual",
                              split="public", cache_dir=eval_helpers.assets()["cache_dir"])
    records = eval_helpers.read_jsonl(tmp_path / "predictions" / "openx_bimanual.jsonl")
    assert [record["ground_truth"] for record in records] == [
        scored(np.asarray(source[index]["ground_truth"], np.float64)).tolist() for index in range(LIMIT)]
    predictions = (tmp_path / "predictions" / "openx_bimanual.jsonl").read_bytes()
    for written in (domains.GROUND_TRUTH_AS_IS, None):  # another transform; a manifest from before it was recorded
        if written is None:
            del recorded["domains"]["openx_bimanual"]["protocol"]["ground_truth"]
        else:
            recorded["domains"]["openx_bimanual"]["protocol"]["ground_truth"] = written
        path.write_text(json.dumps(recorded))
        with pytest.raises(manifest.RunChangedError, match=re.escape(
                f"{path}: the results in this folder come from another run: protocol of openx_bimanual: ground_truth "
                f"(domains.openx_bimanual.protocol.ground_truth) ")):
            eval_helpers.evaluate(tmp_path, ("openx_bimanual",), limit=LIMIT, resume=True, **settings)
    assert (tmp_path / "predictions" / "openx_bimanual.jsonl").read_bytes() == predictions


def test_magma_runs_the_knowledge_probes(tmp_path):
    data_dir = eval_helpers.assets()["data_dir"]
    datasets.write_missing(pathlib.Path(data_dir), ["act2answer"])
    eval_helpers.evaluate(tmp_path, ("act2answer",), model="magma", checkpoint=magma_dir(), tokenizer=None, limit=LIMIT,
                          max_decoding_steps=None, unnorm_key="bridge_orig")  # the action probe unnormalizes with SimplerEnv's bridge statistics
    records = eval_helpers.read_jsonl(tmp_path / "predictions" / "act2answer.jsonl")
    assert len(records) == LIMIT
    for record in records:  # both options scored by Magma's log-likelihood; the action probe from its 7 action tokens
        assert len(record["raw_output"]) == 2 and all(score < 0 for score in record["raw_output"])
        assert record["prediction"] == int(np.argmax(record["raw_output"])) and len(record["action_displacement"]) == 3


def test_probe_runs_magma_without_a_paligemma_tokenizer(tmp_path):
    config = runner.ProbeConfig(checkpoint=magma_dir(), tokenizer=None, data_dir=str(item_set(tmp_path / "items", 2)),
                               output_dir=str(tmp_path / "run"), batch_size=4, num_folds=2)
    runner.run_probe(config, model=magma_model())
    saved = activation_store.read(tmp_path / "run" / "activations" / "all")
    depth, width = magma_model().config.llm.depth, magma_model().config.llm.width
    assert saved["prefix_last"].shape == saved["prefix_mean"].shape == (12, depth, width) and "action_mean" not in saved
    assert np.all(np.isfinite(saved["prefix_mean"]))


def test_magma_runs_overcooked_as_its_script(tmp_path):
    """MultiNet's Magma Overcooked script (`magma_protocol` module docstring): Magma answers in text, read by the
    script's rule into 36 probabilities or invalid, scored with the Overcooked metrics under that rule."""
    eval_helpers.evaluate(tmp_path, ("overcooked",), model="magma", checkpoint=magma_dir(), tokenizer=None, limit=2,
                          max_decoding_steps=4)
    records = eval_helpers.read_jsonl(tmp_path / "predictions" / "overcooked_ai.jsonl")
    assert len(records) == 2
    for record in records:
        assert isinstance(record["raw_output"], str) and record["answer_rule"] == "magma_scripts"
        assert record["prediction"] == domains.parse_joint_probabilities(record["raw_output"])
    written = json.loads((tmp_path / "overcooked_ai_metrics.json").read_text())
    assert written["protocol"] == magma_protocol.PROTOCOL_NAME and written["metric_kind"] == "discrete"
    assert written["protocol_settings"]["answers_in_text"] and written["protocol_settings"]["max_new_tokens"] == 4
    assert written["protocol_settings"]["chat"]["question_field"] == "instruction_prompt"
    invalid = sum(record["prediction"] is None for record in records)
    assert written["metrics"]["total_invalid_preds"] == invalid and written["metrics"]["num_timesteps"] == 2


def test_magma_runs_openx_quadrupedal_as_its_script(tmp_path):
    """MultiNet's Magma quadrupedal script: Magma answers MultiNet's VLM instruction (holding the split's statistics)
    in text, read by the script's rule into 12 values or invalid, scored with the Open-X metrics against the split's
    MultiNet statistics (an invalid row: their max - min)."""
    data_dir = write_quadrupedal(tmp_path / "data")
    eval_helpers.evaluate(tmp_path / "run", ("openx_quadrupedal",), model="magma", checkpoint=magma_dir(), tokenizer=None,
                          limit=3, max_decoding_steps=4, data_dir=str(data_dir), split="test")
    records = eval_helpers.read_jsonl(tmp_path / "run" / "predictions" / "openx_quadrupedal.jsonl")
    assert len(records) == 3
    for record in records:
        assert isinstance(record["raw_output"], str) and "answer_rule" not in record
        assert record["prediction"] == domains.parse_action_values(record["raw_output"], 12) and len(record["ground_truth"]) == 12
    written = json.loads((tmp_path / "run" / "openx_quadrupedal_metrics.json").read_text())
    assert written["protocol"] == magma_protocol.PROTOCOL_NAME and written["metric_kind"] == "continuous"
    assert written["protocol_settings"]["answers_in_text"] and written["protocol_settings"]["ground_truth"] == domains.GROUND_TRUTH_AS_IS
    invalid = sum(record["prediction"] is None for record in records)
    assert written["metrics"]["total_invalid_preds"] == invalid
    if invalid == len(records):  # every row scored with the split's MultiNet statistics' max - min
        stats = data.action_stats("openx_quadrupedal", data_dir / "openx_quadrupedal", split="test",
                                  cache_dir=eval_helpers.assets()["cache_dir"], kind="multinet")
        span = np.asarray(stats["max"]) - np.asarray(stats["min"])
        assert written["metrics"]["avg_dataset_amse"] == pytest.approx(np.mean(span**2), rel=1e-12)
    assert written["action_horizon"] is None and "magma_actions" not in written  # no actions decoded
