"""`eval --model=openvla`: the demo's tiny OpenVLA checkpoint is a real HF layout, and the evaluator runs OpenVLA on
action and text domains through the model interface, with OpenVLA's own tokenizer and quantile unnormalization."""

from __future__ import annotations


import numpy as np
import pytest

import eval_helpers
from openvla_helpers import openvla_dir
from multinet_jax import domains, weights
from multinet_jax.cli import eval as eval_cli
from multinet_jax.eval import demo
from multinet_jax.models import load_model, openvla_checkpoint, registry

LIMIT = 4


def test_cli_model_choices_are_the_registrys():
    assert set(eval_cli.MODEL_KINDS) == set(registry.model_kinds())


def test_demo_builds_a_loadable_openvla_in_the_hugging_face_layout(tmp_path):
    directory = demo.build_openvla_checkpoint(tmp_path / "openvla_tiny", ["pick up the cup", "what is on the table?"])
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
    for record in actions:  # 7 binned dims, in [-1, 1] before the split's q01/q99 bounds rule
        raw = np.asarray(record["raw_output"])
        assert raw.shape == (7,) and np.all(np.abs(raw) < 1)
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
