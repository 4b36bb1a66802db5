"""Act2Answer's action probe reads end-effector translation deltas: each family's checkpoints say (or the family
fixes) their action frame before any weight loads (`registry.Family.action_frame`), and a frame the probe cannot
read turns the probe off with a one-line reason naming the file and field (`preflight.action_probe_unavailable`)."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import types

import pytest

from multinet_jax.eval import preflight
from multinet_jax.metrics.act2answer_scoring import NO_ACTION_HEAD, score_probes
from multinet_jax.metrics.records import RecordError
from conftest import shared_path
from multinet_jax.models import openpi_checkpoint, registry

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
    assert preflight.action_probe_unavailable(_config("pi0"), shared_path("openpi_reference", "pi0", "ckpt", "0")) is None
    assert preflight.action_probe_unavailable(_config("openvla"), tmp_path) is None
    assert preflight.action_probe_unavailable(_config("paligemma"), tmp_path) == NO_ACTION_HEAD
    assert preflight.action_frame(_config("paligemma"), tmp_path) is None


def test_an_in_memory_model_is_frame_checked_as_its_family_tells():
    """`Evaluator(model=)` has no checkpoint files: a fixed frame is the family's, SmolVLA's is unnamed, saying why."""
    for name in registry.family_names():
        family = registry.family(name)
        if family.action_head and name != "smolvla":
            assert preflight.action_frame(_config(name), None) == family.action_frame(None, None), name
            assert preflight.action_probe_unavailable(_config(name), None) is None, name
    assert preflight.action_frame(_config("smolvla"), None).kind == "unnamed"
    assert re.fullmatch("not applicable: an in-memory SmolVLA model \\(Evaluator\\(model=\\)\\): no config.json, and "
                        "LeRobot's names no action frame \\(.*\\): its actions are unnamed, and the action probe reads "
                        "end-effector translation deltas; text probe only",
                        preflight.action_probe_unavailable(_config("smolvla"), None))


def _record(index: int, **changes) -> dict:
    return {"id": str(index // 2), "category": "color", "layout": ("original", "swapped")[index % 2], "ground_truth": index % 2,
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


PUBLISHED = pathlib.Path(__file__).resolve().parent / "fixtures" / "openpi_published_configs.json"


def _trained_frame(data: str) -> str | None:
    """The frame of the actions an openpi TrainConfig's `data=` (source text) trains on: DROID's policy transforms or
    its LeRobot config (joint velocities, "We assume joint *velocity* actions"), its RLDS config's action space, the
    ALOHA config, LIBERO's with or without its extra delta; none for FakeDataConfig (openpi's debug configs)."""
    if data.startswith("RLDSDroidDataConfig("):
        return "joint_position" if "DroidActionSpace.JOINT_POSITION" in data else "joint_velocity"
    if "droid_policy." in data or data.startswith("LeRobotDROIDDataConfig("):
        return "joint_velocity"
    if data.startswith("LeRobotAlohaDataConfig("):
        return "joint_position"
    if data.startswith("LeRobotLiberoDataConfig("):
        return "state_relative" if "extra_delta_transform=True" in data else "ee_delta"
    assert data == "FakeDataConfig()", data
    return None


def test_openpis_configs_act_in_the_frame_of_the_data_they_train_on():
    """Each TrainConfig's frame follows from its `data=` in openpi's training/config.py (the fixture holds it as
    source text): DROID's, ALOHA's or LIBERO's data config and transforms, LIBERO's extra delta."""
    configs = json.loads(PUBLISHED.read_text())["configs"]
    for name, config in configs.items():
        trained = _trained_frame(config["data"])
        if trained is None:  # openpi's debug configs, not recognized
            assert name not in openpi_checkpoint.OPENPI_CONFIGS, name
        else:
            assert openpi_checkpoint.OPENPI_CONFIGS[name].frame[0] == trained, name


def test_openpis_pretraining_statistics_are_of_joint_actions():
    """docs/norm_stats.md: every asset id of the base checkpoints' statistics, whose actions are joint angles, DROID's
    joint velocities."""
    fixture = json.loads(PUBLISHED.read_text())
    assert set(openpi_checkpoint.ASSET_FRAMES) == {row["asset_id"] for row in fixture["pretraining_statistics"]}
    definitions = fixture["action_space_definitions"]
    assert '"left arm joint angles"' in definitions and "For DROID, we use the original DROID action configuration, " \
                                                       "with joint velocity actions" in definitions
    kinds = {asset: kind for asset, (kind, _) in openpi_checkpoint.ASSET_FRAMES.items()}
    assert {asset: kind for asset, kind in kinds.items() if kind != "joint_position"} == {"droid": "joint_velocity"}


def _openpi(tmp_path: pathlib.Path, folder: str, asset: str | None = None) -> pathlib.Path:
    """openpi's tiny Pi0 fixture in `folder`, its statistics under `asset` (the fixture's own: tiny_robot)."""
    checkpoint = shutil.copytree(shared_path("openpi_reference", "pi0", "ckpt", "0"), tmp_path / folder)
    if asset is not None:
        (checkpoint / "assets" / "tiny_robot").rename(checkpoint / "assets" / asset)
    return checkpoint


def test_the_probe_is_off_for_openpi_checkpoints_of_joint_or_state_relative_actions(tmp_path):
    """Read as end-effector deltas, DROID's joint velocities or ALOHA's joint angles would answer Act2Answer's
    placement questions with meaningless displacements: the probe says why it does not apply, naming the config or
    the statistics file, and needs no statistics."""
    config = _config("pi0")
    droid = _openpi(tmp_path, "pi0_droid")
    assert preflight.action_probe_unavailable(config, droid) == (
        f"not applicable: {droid}: openpi's pi0_droid config acts in DROID's joint velocities and gripper (its "
        "training/config.py data): its actions are joint_velocity, and the action probe reads end-effector translation "
        "deltas; text probe only")
    assert preflight.checkpoint_stats_users(config, droid) == []
    libero = _openpi(tmp_path, "pi0_libero")
    assert "its actions are state_relative" in preflight.action_probe_unavailable(config, libero)
    trossen = _openpi(tmp_path / "own", "my_run", asset="trossen")
    assert preflight.action_probe_unavailable(config, trossen) == (
        f"not applicable: {trossen}/assets/trossen/norm_stats.json: openpi's trossen pre-training statistics are of "
        "joint angles and gripper positions (its docs/norm_stats.md): its actions are joint_position, and the action probe reads "
        "end-effector translation deltas; text probe only")
    for end_effector in (_openpi(tmp_path, "pi05_libero"), _openpi(tmp_path / "own", "bridge_run"), shared_path("openpi_reference", "pi0", "ckpt", "0")):
        assert preflight.action_probe_unavailable(config, end_effector) is None, end_effector


def test_the_asset_id_picked_decides_among_several(tmp_path):
    checkpoint = _openpi(tmp_path, "base", asset="droid")
    shutil.copytree(checkpoint / "assets" / "droid", checkpoint / "assets" / "bridge")
    picked = lambda asset_id: preflight.action_frame(types.SimpleNamespace(**vars(_config("pi0")), asset_id=asset_id), checkpoint)  # noqa: E731
    assert picked("droid") == registry.ActionFrame("joint_velocity", (
        f"{checkpoint}/assets/droid/norm_stats.json: openpi's droid pre-training statistics are of DROID's joint "
        "velocities and gripper (its docs/norm_stats.md)"))
    assert picked("bridge").kind == "ee_delta"
