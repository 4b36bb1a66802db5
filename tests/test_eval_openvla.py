"""`eval --model=openvla`: the demo's tiny OpenVLA checkpoint is a real HF layout, and the evaluator runs OpenVLA on
action and text domains through the model interface, with OpenVLA's own tokenizer and quantile unnormalization."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import eval_helpers
from openvla_helpers import openvla_dir
from multinet_jax import demo, domains, weights
from multinet_jax.demo import datasets
from multinet_jax.models import load_model, openvla_actions, openvla_checkpoint

LIMIT = 4


def test_demo_builds_a_loadable_openvla_in_the_hugging_face_layout(tmp_path):
    directory = demo.build_checkpoint("openvla", tmp_path / "openvla_tiny")
    config = openvla_checkpoint.read_config(directory)
    specs = weights.safetensors.read_tensor_specs(directory)
    assert {name: spec.shape for name, spec in specs.items()} == openvla_checkpoint.tensor_shapes(config)
    model = load_model(directory)
    assert model.family == "openvla" and model.tokenizer.processor.vocab_size() == demo.DEMO_VOCAB_SIZE
    assert model.tokenizer.decode(model.tokenizer.encode("pick up the cup")[1:]) == "pick up the cup"


def test_openvla_runs_action_and_text_domains(tmp_path):
    output_dir = tmp_path / "run"
    settings = eval_helpers.settings(output_dir, ("openx_bimanual", "piqa"), model="openvla", checkpoint=openvla_dir(),
                                     tokenizer=None, limit=LIMIT, max_decoding_steps=4)
    from multinet_jax.eval import EvalConfig, evaluate

    evaluate(EvalConfig(**settings))
    actions = eval_helpers.read_jsonl(output_dir / "predictions" / "openx_bimanual.jsonl")
    assert [record["sample_index"] for record in actions] == list(range(LIMIT))
    for record in actions:  # binned dims in [-1, 1] before the split's q01/q99 bounds rule, one per ground-truth dim
        raw = np.asarray(record["raw_output"])
        assert raw.shape == (len(record["ground_truth"]),) and np.all(np.abs(raw) < 1)
    texts = eval_helpers.read_jsonl(output_dir / "predictions" / "piqa.jsonl")
    assert len(texts) == LIMIT and all(isinstance(record["raw_output"], str) for record in texts)


def test_openvla_takes_no_tokenizer_and_unnorm_key_needs_checkpoint_stats(tmp_path):
    from multinet_jax.eval import EvalConfig

    settings = eval_helpers.settings(tmp_path, ("piqa",), model="openvla", checkpoint=openvla_dir(), tokenizer=None)
    config = EvalConfig(**settings)
    assert config.tokenizer is None and set(config.asset_specs()) == {"checkpoint"}  # its checkpoint bundles one
    assert "tokenizer" in EvalConfig(**{**settings, "model": "pi0"}).asset_specs()
    with pytest.raises(ValueError, match="--unnorm_key picks the checkpoint's statistics"):
        EvalConfig(**{**settings, "unnorm_key": "bridge_orig"})
    with pytest.raises(ValueError, match=r"--asset_id picks the checkpoint's statistics of --model=pi0\|pi05\|pi0_fast; "
                                         "--model=openvla picks them with --unnorm_key"):
        EvalConfig(**{**settings, "asset_id": "droid"})


def test_openvla_decodes_the_splits_dims_and_says_how_in_the_metrics(tmp_path):
    """MultiNet's rules on openx_bimanual: 14 action tokens (its statistics' dims), the split's q01/q99 with the last
    dim left normalized, the center-cropped image, no conversion (MultiNet's is undefined for 14 dims)."""
    output_dir = tmp_path / "run"
    eval_helpers.evaluate(output_dir, ("openx_bimanual",), model="openvla", checkpoint=openvla_dir(), tokenizer=None,
                          limit=LIMIT)
    metrics = json.loads((output_dir / "openx_bimanual_metrics.json").read_text())
    note = metrics["openvla_actions"]
    assert note["decoded_action_dims"] == 14 and note["center_crop"] is True
    assert note["multinet_dataset"] == openvla_actions.BIMANUAL_DATASET and "undefined" in note["conversion"]
    assert metrics["metrics"]["invalid_percentage"] == 0  # 14-dim predictions for 14-dim ground truth
    for record in eval_helpers.read_jsonl(output_dir / "predictions" / "openx_bimanual.jsonl"):
        raw, prediction = np.asarray(record["raw_output"]), np.asarray(record["prediction"])
        assert raw.shape == prediction.shape == (14,) and np.all(np.abs(raw) < 1)
        assert prediction[-1] == raw[-1]  # MultiNet's mask: the last dim is not unnormalized


def test_openvla_runs_the_knowledge_probes(tmp_path):
    data_dir = pathlib.Path(eval_helpers.assets()["data_dir"])
    datasets.write_missing(data_dir, ["act2answer"])
    eval_helpers.evaluate(tmp_path, ("act2answer",), model="openvla", checkpoint=openvla_dir(), tokenizer=None, limit=4)
    records = eval_helpers.read_jsonl(tmp_path / "predictions" / "act2answer.jsonl")
    assert len(records) == 4
    for record in records:  # both options scored by OpenVLA's log-likelihood; the action probe from its 7 dims
        assert len(record["raw_output"]) == 2 and all(score < 0 for score in record["raw_output"])
        assert record["prediction"] == int(np.argmax(record["raw_output"])) and len(record["action_displacement"]) == 3


def test_the_manifest_records_openvlas_run_and_refuses_a_resume_with_another_unnorm_key(tmp_path):
    from multinet_jax import fingerprints
    from multinet_jax.eval import manifest

    # Act2Answer's action probe: the checkpoint's statistics of --unnorm_key (its 7 dims could not score openx_bimanual's 14)
    datasets.write_missing(pathlib.Path(eval_helpers.assets()["data_dir"]), ["act2answer"])
    settings = {"model": "openvla", "checkpoint": openvla_dir(), "tokenizer": None, "limit": 2}
    eval_helpers.evaluate(tmp_path, ("act2answer",), **settings)
    recorded = json.loads((tmp_path / manifest.FILENAME).read_text())
    assert recorded["settings"]["model"] == "openvla" and recorded["settings"]["unnorm_key"] is None
    assert recorded["checkpoint"]["sha256"] == fingerprints.fingerprint(openvla_dir())["sha256"]  # the safetensors folder
    assert recorded["tokenizers"] == {}  # its tokenizer is part of the checkpoint's fingerprint
    with pytest.raises(manifest.RunChangedError, match="--unnorm_key: recorded None, now 'bridge_orig'"):
        eval_helpers.evaluate(tmp_path, ("act2answer",), **settings, unnorm_key="bridge_orig", resume=True)


def test_predictions_narrower_than_the_ground_truth_fail_the_domain_instead_of_scoring_all_invalid(tmp_path):
    """The checkpoint's 7-dim statistics decode 7 dims; openx_bimanual's ground truth has 14. Scored, every prediction
    would be invalid and the run exit 0: the domain fails at its first batch, naming both widths, nothing scored."""
    from multinet_jax.eval import EvaluationFailed

    with pytest.raises(EvaluationFailed, match=r"openx_bimanual: ValueError"):
        eval_helpers.evaluate(tmp_path, ("openx_bimanual",), model="openvla", checkpoint=openvla_dir(), tokenizer=None,
                              limit=2, unnormalize="checkpoint")
    row = json.loads((tmp_path / "summary.json").read_text())
    assert "the model's action has 7 dims, its ground truth (as scored) 14" in json.dumps(row)
    assert not (tmp_path / "openx_bimanual_metrics.json").exists()
