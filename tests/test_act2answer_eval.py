"""`eval --domains=act2answer`: text and action probes per episode on the generated items, scored side by side;
the probes' scoring against hand counts; the action probe's direction rule."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil

import numpy as np
import pytest

import eval_helpers
import multinet_jax
from multinet_jax.act2answer import geometry
from multinet_jax.demo import datasets
from multinet_jax.eval import act2answer_probes, manifest
from multinet_jax.models import registry


def test_eval_writes_both_probes_per_episode(tmp_path):
    data_dir = pathlib.Path(eval_helpers.assets()["data_dir"])
    datasets.write_missing(data_dir, ["act2answer"])
    rows = eval_helpers.evaluate(tmp_path, ["act2answer"], limit=12, batch_size=4, num_flow_steps=2)
    records = [json.loads(line) for line in (tmp_path / "predictions" / "act2answer.jsonl").read_text().splitlines()]
    pairs = json.loads((data_dir / "act2answer" / "public" / "pairs.json").read_text())
    assert [r["id"] for r in records] == [f"{p['index']}/{layout}" for p in pairs[:6] for layout in ("original", "swapped")]
    for record in records:
        assert record["prediction"] == int(np.argmax(record["raw_output"])) and len(record["raw_output"]) == 2
        assert record["action_prediction"] == act2answer_probes.action_choice(np.array(record["action_displacement"], float))
    metrics = json.loads((tmp_path / "act2answer_metrics.json").read_text())
    assert metrics["metric_kind"] == "act2answer_probes"
    frame = registry.family("pi0").action_frame(eval_helpers.assets()["checkpoint"], None)  # what the displacement was read as
    assert frame.kind == "ee_delta" and metrics["action_frame"] == dataclasses.asdict(frame)
    assert metrics["metrics"] == json.loads(json.dumps(multinet_jax.score("act2answer_probes", records)))
    assert rows["act2answer"]["text_probe_accuracy"] == metrics["metrics"]["text_probe_accuracy"]
    assert (tmp_path / "plots" / "act2answer.png").exists()


def _record(index, category, layout, truth, text, action):
    return {"id": str(index), "category": category, "layout": layout, "ground_truth": truth, "prediction": text,
            "action_prediction": action}


def test_probe_scores_average_layouts_then_categories():
    records = [
        _record(0, "color", "original", 0, 0, 0), _record(0, "color", "swapped", 1, 1, None),
        _record(1, "color", "original", 1, 0, 1), _record(1, "color", "swapped", 0, 0, 1),
        _record(2, "shape", "original", 0, 1, 0), _record(2, "shape", "swapped", 1, 1, 1),
    ]
    result = multinet_jax.score("act2answer_probes", records)
    color, shape = result["categories"]["color"], result["categories"]["shape"]
    assert color["text_probe_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert color["action_probe_accuracy"] == pytest.approx((1.0 + 0.0) / 2)
    assert color["action_invalid_rate"] == pytest.approx((0.0 + 0.5) / 2)
    assert (shape["text_probe_accuracy"], shape["action_probe_accuracy"]) == (0.5, 1.0)
    assert result["text_probe_accuracy"] == pytest.approx((0.75 + 0.5) / 2) and result["episodes"] == 6
    with pytest.raises(multinet_jax.metrics.RecordError, match="field 'action_prediction': expected 0, 1 or null"):
        multinet_jax.score("act2answer_probes", [_record(0, "color", "original", 0, 0, "left")])
    with pytest.raises(multinet_jax.metrics.RecordError, match="field 'ground_truth': expected 0 \\(left\\) or 1"):
        multinet_jax.score("act2answer_probes", [_record(0, "color", "original", 2, 0, 0)])
    # Each item in both layouts, once each, its target exchanged (an always-left model scores 0.5 only then); eval's
    # ids name the episode, `<item>/<layout>`.
    with pytest.raises(multinet_jax.metrics.RecordError, match="record 2: field 'layout': item '1' has no swapped episode"):
        multinet_jax.score("act2answer_probes", records[:2] + [_record(1, "color", "original", 0, 0, 0)])
    with pytest.raises(multinet_jax.metrics.RecordError, match="record 6: field 'id': episode '2' \\(swapped\\) already given by record 5"):
        multinet_jax.score("act2answer_probes", records + [records[-1]])
    with pytest.raises(multinet_jax.metrics.RecordError, match="record 1: field 'ground_truth': left, as in item '0''s original"):
        multinet_jax.score("act2answer_probes", [{**_record(0, "color", "original", 0, 0, 0), "id": "0/original"},
                                                 {**_record(0, "color", "swapped", 0, 0, 0), "id": "0/swapped"}])


def test_action_direction_rule():
    """Actions are the WidowX's base-frame deltas; it faces the tiles from +x (SimplerEnv's Bridge pose, half a turn
    about z): forward is the world's -x, its left (+y) the world's -y, where the "left" tile is."""
    assert act2answer_probes.action_choice(np.array([0.1, 0.15, 0.0])) == 0  # forward and to its left: the left tile
    assert act2answer_probes.action_choice(np.array([0.1, -0.15, -0.05])) == 1
    assert act2answer_probes.action_choice(np.array([0.0, 0.0, 0.3])) is None  # no horizontal motion
    assert act2answer_probes.action_choice(np.array([0.1, 0.0, 0.0])) is None  # straight between the tiles
    assert act2answer_probes.action_choice(np.array([np.nan, 0.1, 0.0])) is None
    cube = np.asarray(geometry.HARNESS_TABLETOP.cube.center[:2])
    for index, name in enumerate(geometry.TILE_NAMES):  # the base-frame move from the cube straight onto each tile
        world = np.asarray(geometry.HARNESS_TABLETOP.tile(name).center[:2]) - cube
        assert act2answer_probes.action_choice(np.append(-world, 0.0)) == index
        np.testing.assert_allclose(geometry.base_to_world_xy(-world), world, atol=1e-15)


def test_resume_refuses_a_changed_item_set(tmp_path):
    """The run manifest fingerprints the item set (pairs.json, candidate images, first frames): a changed item set
    cannot be resumed into the same act2answer predictions."""
    source = pathlib.Path(eval_helpers.assets()["data_dir"])
    datasets.write_missing(source, ["act2answer"])
    shutil.copytree(source / "act2answer", tmp_path / "data" / "act2answer")
    settings = {"data_dir": str(tmp_path / "data"), "limit": 4, "batch_size": 4, "num_flow_steps": 1}
    eval_helpers.evaluate(tmp_path / "run", ["act2answer"], **settings)
    pairs = tmp_path / "data" / "act2answer" / "public" / "pairs.json"
    pairs.write_text(pairs.read_text().replace("Left", "Right", 1))
    with pytest.raises(manifest.RunChangedError, match="data of act2answer: content differs"):
        eval_helpers.evaluate(tmp_path / "run", ["act2answer"], resume=True, **settings)


def test_a_droid_fine_tune_answers_by_text_only(tmp_path):
    """The demo Pi0 in a folder named openpi's pi0_droid acts in DROID's joint velocities: its records and metrics say
    why the action probe did not run, the text probe scores, and no action displacement is recorded."""
    data_dir = pathlib.Path(eval_helpers.assets()["data_dir"])
    datasets.write_missing(data_dir, ["act2answer"])
    droid = shutil.copytree(eval_helpers.assets()["checkpoint"], tmp_path / "pi0_droid")
    eval_helpers.evaluate(tmp_path / "run", ["act2answer"], limit=4, batch_size=4, num_flow_steps=2, checkpoint=str(droid))
    metrics = json.loads((tmp_path / "run" / "act2answer_metrics.json").read_text())
    reason = (f"not applicable: {droid}: openpi's pi0_droid config acts in DROID's joint velocities and gripper (its "
              "training/config.py data): its actions are joint_velocity, and the action probe reads end-effector "
              "translation deltas; text probe only")
    assert metrics["metrics"]["action_probe"] == reason and metrics["action_frame"]["kind"] == "joint_velocity"
    assert "text_probe_accuracy" in metrics["metrics"] and "action_probe_accuracy" not in metrics["metrics"]
    records = [json.loads(line) for line in (tmp_path / "run" / "predictions" / "act2answer.jsonl").read_text().splitlines()]
    assert all(record["action_probe"] == reason and record["action_prediction"] is None for record in records)
