"""`eval` samples flow actions with the checkpoint's own step count unless --num_flow_steps says otherwise, and
records the steps used in each action domain's metrics file."""

from __future__ import annotations

import json
import pathlib

import eval_helpers
from multinet_jax import demo

LIMIT = 2


def _run(output_dir: pathlib.Path, **settings) -> tuple[list, dict]:
    eval_helpers.evaluate(output_dir, ("openx_bimanual",), limit=LIMIT, batch_size=LIMIT, dtype="float32", **settings)
    records = eval_helpers.read_jsonl(output_dir / "predictions" / "openx_bimanual.jsonl")
    metrics = json.loads((output_dir / "openx_bimanual_metrics.json").read_text())
    return [record["prediction"] for record in records], metrics


def test_smolvla_samples_with_its_config_num_steps_unless_told(tmp_path):
    """The demo SmolVLA with config.json num_steps 3: the default run is the explicit 3-step run, not 10 steps; an
    explicit --num_flow_steps=1 wins and is recorded."""
    checkpoint = demo.build_checkpoint("smolvla", tmp_path / "smolvla_demo")
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "num_steps": 3}))
    family = {"model": "smolvla", "checkpoint": str(checkpoint), "tokenizer": None}
    own, own_metrics = _run(tmp_path / "own", **family)
    three, _ = _run(tmp_path / "three", num_flow_steps=3, **family)
    ten, _ = _run(tmp_path / "ten", num_flow_steps=10, **family)
    one, one_metrics = _run(tmp_path / "one", num_flow_steps=1, **family)
    assert own == three and own != ten and own != one
    assert own_metrics["num_flow_steps"] == 3 and own_metrics["config"]["num_flow_steps"] is None
    assert one_metrics["num_flow_steps"] == 1


def test_pi0_samples_openpis_ten_steps_by_default(tmp_path):
    own, metrics = _run(tmp_path / "own")
    ten, _ = _run(tmp_path / "ten", num_flow_steps=10)
    assert own == ten and metrics["num_flow_steps"] == 10
