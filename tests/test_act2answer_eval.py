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
from multinet_jax.eval import EvalConfig, act2answer_probes, loop, manifest, results
from multinet_jax.metrics.act2answer_scoring import NO_ACTION_HEAD
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
    # backwards, away from both tiles (both cosines < 0), leaning a millimetre to either side: no answer either
    assert act2answer_probes.action_choice(np.array([-1.0, 0.001, 0.0])) is None
    assert act2answer_probes.action_choice(np.array([-1.0, -0.001, 0.0])) is None
    cube = np.asarray(geometry.HARNESS_TABLETOP.cube.center[:2])
    for index, name in enumerate(geometry.TILE_NAMES):  # the base-frame move from the cube straight onto each tile
        world = np.asarray(geometry.HARNESS_TABLETOP.tile(name).center[:2]) - cube
        assert act2answer_probes.action_choice(np.append(-world, 0.0)) == index
        np.testing.assert_allclose(geometry.base_to_world_xy(-world), world, atol=1e-15)


def _probe_batch(scores):
    """`act2answer_probes.records` of item 0 in both layouts (truth: left, then right) with these text scores."""
    batch = {"id": np.array(["0/original", "0/swapped"]), "sample_index": np.array([0, 1]), "ground_truth": np.array([0, 1]),
             "category": np.array(["color", "color"]), "layout": np.array(["original", "swapped"])}
    raw = {"text_scores": np.array(scores, np.float32), "actions": np.zeros((2, 4, 7), np.float32)}
    return act2answer_probes.records(batch, [0, 1], raw, lambda actions: actions, lambda value: value.item())


def test_text_scores_that_are_not_finite_or_tie_are_no_answer():
    """Option scores a bfloat16 overflow made NaN read as "left" (argmax) and scored a broken model at chance: the
    prediction is null, counted in `text_invalid_rate`, as are tied scores."""
    records = _probe_batch([[np.nan, np.nan], [np.nan, -3.0]])
    assert [record["prediction"] for record in records] == [None, None]
    assert _probe_batch([[-2.0, -2.0], [-1.0, -5.0]])[0]["prediction"] is None
    written = [json.loads(results.encode_record(record)) for record in records]  # as the predictions file holds them
    assert [record["raw_output"] for record in written] == [[None, None], [None, -3.0]]
    scored = multinet_jax.score("act2answer_probes", written)
    assert scored["text_probe_accuracy"] == 0.0 and scored["text_invalid_rate"] == 1.0
    assert scored["categories"]["color"]["text_invalid_rate"] == 1.0 and scored["action_invalid_rate"] == 1.0
    fine = [json.loads(results.encode_record(record)) for record in _probe_batch([[-1.0, -5.0], [-1.0, -5.0]])]
    assert [record["prediction"] for record in fine] == [0, 0]
    assert multinet_jax.score("act2answer_probes", fine)["text_invalid_rate"] == 0.0


@pytest.mark.parametrize("change, field, problem", [
    # a prediction that is not its scores' argmax (a hand edit, another writer's rule)
    ({"prediction": 1}, "prediction", "1, but raw_output [-1.0, -5.0] gives 0"),
    # null where the scores are finite and untied: an answer dropped
    ({"prediction": None}, "prediction", "None, but raw_output [-1.0, -5.0] gives 0"),
    # left read from scores that are no answer
    ({"raw_output": [None, -5.0]}, "prediction", "0, but raw_output [None, -5.0] gives None"),
    ({"raw_output": [-1.0]}, "raw_output", "expected the 2 option scores"),
])
def test_a_text_prediction_is_what_its_scores_give(change, field, problem):
    records = [json.loads(results.encode_record(record)) for record in _probe_batch([[-1.0, -5.0], [-1.0, -5.0]])]
    records[1].update(change)
    with pytest.raises(multinet_jax.metrics.RecordError) as raised:
        multinet_jax.score("act2answer_probes", records)
    assert (raised.value.index, raised.value.field) == (1, field) and problem in raised.value.problem


def test_probe_records_are_refused_where_they_contradict_the_file():
    """An action prediction where the action probe did not run, and one category under two spellings."""
    no_head = [{**_record(0, "color", layout, truth, 0, None), "action_head": False, "action_probe": NO_ACTION_HEAD}
               for layout, truth in (("original", 0), ("swapped", 1))]
    no_head[0]["action_prediction"] = 1
    with pytest.raises(multinet_jax.metrics.RecordError, match="record 0: field 'action_prediction': 1, but the action "
                       "probe did not run"):
        multinet_jax.score("act2answer_probes", no_head)
    spelled = [_record(0, "color", "original", 0, 0, 0), _record(0, "color", "swapped", 1, 0, 0),
               _record(1, "Color", "original", 0, 0, 0), _record(1, "Color", "swapped", 1, 0, 0)]
    with pytest.raises(multinet_jax.metrics.RecordError, match="record 2: field 'category': 'Color', but record 0 "
                       "spells it 'color'"):
        multinet_jax.score("act2answer_probes", spelled)


def test_a_model_that_decodes_nothing_records_no_decoding_on_act2answer(tmp_path):
    """PaliGemma's text probe scores options and it has no action head: like Pi0's (flow), its Act2Answer protocol
    records no decoding budget or mode (a report read the one it recorded as a protocol difference); Pi0-FAST's
    action probe decodes tokens and records them."""
    def settings(model: str, checkpoint: str) -> dict:
        config = EvalConfig(model=model, checkpoint=checkpoint, tokenizer="tokenizer.model", domains=("act2answer",),
                            output_dir=str(tmp_path), data_dir=str(tmp_path), split="public")
        return loop.protocol_settings(config, "act2answer", None)

    paligemma, pi0, fast = settings("paligemma", "paligemma_pt_224"), settings("pi0", "pi0"), settings("pi0_fast", "pi0_fast")
    assert paligemma == pi0
    assert (paligemma["max_new_tokens"], paligemma["decoding"], paligemma["logits_vocab_size"]) == (None, None, None)
    assert fast["max_new_tokens"] is not None and fast["decoding"] is not None


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
