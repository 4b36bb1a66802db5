"""`eval --model=paligemma`: the source VLM from a big_vision npz on text domains and Act2Answer's text probe, its
action probe reported as not applicable; domains that need actions are refused before anything loads."""

from __future__ import annotations

import json
import pathlib

import pytest

import eval_helpers
import multinet_jax
from multinet_jax import demo
from multinet_jax.demo import datasets
from multinet_jax.eval import EvalConfig
from multinet_jax.metrics import RecordError
from multinet_jax.metrics.act2answer_scoring import NO_ACTION_HEAD


def paligemma_settings(tmp_path: pathlib.Path, domains, **overrides) -> dict:
    checkpoint = tmp_path / "paligemma_tiny.npz"
    if not checkpoint.exists():
        demo.build_checkpoint("paligemma", checkpoint)
    return eval_helpers.settings(tmp_path / "run", domains, model="paligemma", checkpoint=str(checkpoint), **overrides)


def test_text_domain_and_text_probe_without_action_head(tmp_path):
    datasets.write_missing(pathlib.Path(eval_helpers.assets()["data_dir"]), ["act2answer"])
    rows = multinet_jax.eval.evaluate(EvalConfig(**paligemma_settings(tmp_path, ["piqa", "act2answer"], limit=8)))
    run = tmp_path / "run"
    records = eval_helpers.read_jsonl(run / "predictions" / "act2answer.jsonl")
    assert len(records) == 8
    for record in records:
        assert record["action_head"] is False and record["action_prediction"] is None
        assert record["action_displacement"] is None and record["prediction"] in (0, 1)
    metrics = json.loads((run / "act2answer_metrics.json").read_text())
    assert metrics["action_horizon"] is None and metrics["config"]["model"] == "paligemma"
    assert metrics["metrics"]["action_probe"] == NO_ACTION_HEAD and metrics["action_frame"] is None
    assert "action_probe_accuracy" not in metrics["metrics"] and "text_probe_accuracy" in metrics["metrics"]
    assert set(rows["act2answer"]) >= {"text_probe_accuracy"} and "action_probe_accuracy" not in rows["act2answer"]
    assert len(eval_helpers.read_jsonl(run / "predictions" / "piqa.jsonl")) == 8
    mixed = records[:1] + [{**records[1], "action_head": True}]
    with pytest.raises(RecordError, match="field 'action_head': expected False like record 0"):
        multinet_jax.score("act2answer_probes", mixed)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"domains": ("piqa", "openx_bimanual")}, "--model=paligemma has no action head: --domains \\['openx_bimanual'\\] need actions"),
    ({"domains": ("overcooked_ai",)}, "--model=paligemma has no action head: --domains \\['overcooked_ai'\\]"),
    ({"action_horizon": 4}, "--action_horizon is for --model=pi0\\|pi05\\|pi0_fast, not --model=paligemma \\(it has no action head\\)"),
])
def test_action_settings_are_refused(tmp_path, overrides, message):
    settings = {**eval_helpers.settings(tmp_path, ["piqa"], model="paligemma", checkpoint="paligemma_pt_224"), **overrides}
    with pytest.raises(ValueError, match=message):
        EvalConfig(**settings)


def test_cli_error_is_one_line(tmp_path):
    result = eval_helpers.run_eval(eval_helpers.flags(tmp_path, ["openx_bimanual"], model="paligemma", checkpoint="x.npz"))
    assert result.returncode != 0
    assert result.stdout.strip().splitlines()[-1].startswith("error: --model=paligemma has no action head")
