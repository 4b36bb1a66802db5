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
    assert set(rows["act2answer"]) >= {"text_probe_accuracy", "text_invalid_rate"} and "action_probe_accuracy" not in rows["act2answer"]
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


def test_text_domain_images_reach_a_448_checkpoint_at_448(tmp_path, monkeypatch):
    """pt_448's Hugging Face processor resizes straight to 448: the pipeline must not shrink text-domain images to
    pt-224's size first (the model would then upsample a 224-pixel picture)."""
    import numpy as np

    from multinet_jax import data
    from multinet_jax.data import transforms
    from multinet_jax.models import decoding, paligemma

    checkpoint = tmp_path / "paligemma_tiny.npz"
    demo.build_checkpoint("paligemma", checkpoint)
    arrays = dict(np.load(checkpoint))
    patch = paligemma.read_config(checkpoint).siglip.patch_size
    tokens = (448 // patch) ** 2
    arrays["params/img/pos_embedding"] = np.resize(arrays["params/img/pos_embedding"], (1, tokens, arrays["params/img/pos_embedding"].shape[2]))
    large = tmp_path / "paligemma_tiny_448.npz"
    np.savez(large, **arrays)
    assert paligemma.read_config(large).siglip.image_size == 448
    seen = []
    original = decoding.sample_tokens

    def spy(model, observation, **options):
        seen.append(np.asarray(observation["image/base_0_rgb"]))
        return original(model, observation, **options)

    monkeypatch.setattr(decoding, "sample_tokens", spy)
    settings = eval_helpers.settings(tmp_path / "run", ["odinw"], model="paligemma", checkpoint=str(large), limit=2, batch_size=2)
    multinet_jax.eval.evaluate(EvalConfig(**settings))
    source = data.make_source("odinw", pathlib.Path(eval_helpers.assets()["data_dir"]) / "odinw", split="public")
    expected = [transforms.paligemma_processor_resize(source[index]["image"], 448) for index in range(2)]
    assert seen and seen[0].shape == (2, 448, 448, 3)
    np.testing.assert_array_equal(seen[0], np.stack(expected))
    # Recorded, so that a folder of predictions made at 224 (before the size was recorded) is not continued at 448.
    run = tmp_path / "run"
    assert json.loads((run / "odinw_metrics.json").read_text())["protocol_settings"]["image_size"] == 448
    written = json.loads((run / "run_manifest.json").read_text())
    del written["domains"]["odinw"]["protocol"]["image_size"]
    (run / "run_manifest.json").write_text(json.dumps(written))
    with pytest.raises(Exception, match=r"protocol of odinw: image_size .*not recorded \(written before it was: read as "
                                        r"224\), now 448"):
        multinet_jax.eval.evaluate(EvalConfig(**{**settings, "resume": True, "limit": 4}))
