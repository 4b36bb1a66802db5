"""Act2Answer's action probe reads end-effector translation deltas: each family's checkpoints say (or the family
fixes) their action frame before any weight loads (`registry.Family.action_frame`), and a frame the probe cannot
read turns the probe off with a one-line reason naming the file and field (`preflight.action_probe_unavailable`)."""

from __future__ import annotations

import pathlib
import re
import types

import pytest

from multinet_jax.eval import preflight
from multinet_jax.metrics.act2answer_scoring import NO_ACTION_HEAD, score_probes
from multinet_jax.metrics.records import RecordError
from multinet_jax.models import registry

SMOLVLA_POLICY = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "smolvla_reference" / "policy"


def _config(model: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(model=model, domains=("act2answer",), unnormalize="split")


def test_every_family_with_an_action_head_has_a_frame():
    for name in registry.family_names():
        family = registry.family(name)
        assert (family.action_frame is not None) == family.action_head, name


def test_lerobot_smolvla_checkpoint_turns_the_action_probe_off_naming_its_config_field():
    """LeRobot's own save_pretrained output (../shared/smolvla_reference/policy): config.json gives the action a
    shape and no frame, so the probe is not applicable, the text probe still runs, and no statistics are needed."""
    if not SMOLVLA_POLICY.is_dir():
        pytest.skip("../shared/smolvla_reference is absent (a fresh clone); CI has it")
    reason = preflight.action_probe_unavailable(_config("smolvla"), SMOLVLA_POLICY)
    assert re.fullmatch(f"not applicable: {re.escape(str(SMOLVLA_POLICY / 'config.json'))}: output_features.action is 6 "
                        "dims with no frame named \\(.*\\): its actions are unnamed, and the action probe reads "
                        "end-effector translation deltas; text probe only", reason)
    assert preflight.checkpoint_stats_users(_config("smolvla"), SMOLVLA_POLICY) == []


def test_the_probe_runs_for_end_effector_frames_and_not_without_an_action_head(tmp_path):
    assert preflight.action_probe_unavailable(_config("pi0"), tmp_path) is None
    assert preflight.action_probe_unavailable(_config("openvla"), tmp_path) is None
    assert preflight.action_probe_unavailable(_config("paligemma"), tmp_path) == NO_ACTION_HEAD
    assert preflight.action_frame(_config("paligemma"), tmp_path) is None


def test_an_in_memory_model_is_frame_checked_as_its_family_tells():
    """`Evaluator(model=)` has no checkpoint files: a fixed frame is the family's, SmolVLA's is unnamed, saying why."""
    for name in registry.family_names():
        family = registry.family(name)
        if family.action_head and name != "smolvla":
            assert preflight.action_frame(_config(name), None) == family.action_frame("unused"), name
            assert preflight.action_probe_unavailable(_config(name), None) is None, name
    assert preflight.action_frame(_config("smolvla"), None).kind == "unnamed"
    assert re.fullmatch("not applicable: an in-memory SmolVLA model \\(Evaluator\\(model=\\)\\): no config.json, and "
                        "LeRobot's names no action frame \\(.*\\): its actions are unnamed, and the action probe reads "
                        "end-effector translation deltas; text probe only",
                        preflight.action_probe_unavailable(_config("smolvla"), None))


def _record(index: int, **changes) -> dict:
    return {"id": str(index), "category": "color", "layout": ("original", "swapped")[index % 2], "ground_truth": index % 2,
            "prediction": 0, "action_prediction": None, "action_head": True, **changes}


def test_scoring_reports_why_the_action_probe_did_not_apply_and_refuses_mixed_files():
    reason = "not applicable: policy/config.json: output_features.action is 6 dims with no frame named"
    scored = score_probes([_record(0, action_probe=reason), _record(1, action_probe=reason)])
    assert scored["action_probe"] == reason and "action_probe_accuracy" not in scored
    assert scored["text_probe_accuracy"] == 0.5
    with pytest.raises(RecordError, match="record 1: field 'action_probe': expected 'not applicable: .*' like record 0"):
        score_probes([_record(0, action_probe=reason), _record(1, action_probe=None)])
    with pytest.raises(RecordError, match="field 'action_probe': null \\(the action probe ran\\) for a model without"):
        score_probes([_record(0, action_head=False, action_probe=None)])
