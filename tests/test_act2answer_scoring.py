"""Act2Answer episode scoring: the protocol's rules against a per-episode Python reference, layout averaging,
the Wilson interval, intent metrics on hand-made trajectories, and bad lines named by `score`."""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys

import numpy as np
import pytest

import multinet_jax
from conftest import REPO_ROOT

TILES = {
    "left": {"center": [-0.25, -0.155, 0.873], "half_size": [0.055, 0.055, 0.003]},
    "right": {"center": [-0.25, 0.155, 0.873], "half_size": [0.055, 0.055, 0.003]},
}


def _episode(episode_id, target="left", layout="original", category="color", cube=(-0.25, -0.155, 0.9), **extra):
    return {"id": episode_id, "category": category, "layout": layout, "target": target, "cube_position": list(cube),
            "tiles": TILES, **extra}


def _holds(record, tile_name):
    """The protocol's rule, one episode at a time, written out plainly."""
    tile = record["tiles"][tile_name]
    x, y, z = record["cube_position"]
    (cx, cy, cz), (hx, hy, hz) = tile["center"], tile["half_size"]
    cube_half = record.get("cube_half_size", 0.015)
    return abs(x - cx) <= hx + 0.08 and abs(y - cy) <= hy + 0.08 and z - cz >= hz + cube_half - 0.01


def _reference_rates(records):
    """{category: (success_rate, answered_rate, original, swapped)} with each rate the mean of the layouts' rates."""
    cells: dict = {}
    for record in records:
        success = _holds(record, record["target"])
        answered = _holds(record, "left") or _holds(record, "right")
        cells.setdefault(record["category"], {}).setdefault(record["layout"], []).append((success, answered))
    rates = {}
    for category, layouts in cells.items():
        per_layout = {layout: (np.mean([s for s, _ in rows]), np.mean([a for _, a in rows])) for layout, rows in layouts.items()}
        rates[category] = (np.mean([v[0] for v in per_layout.values()]), np.mean([v[1] for v in per_layout.values()]),
                           per_layout.get("original", (math.nan,))[0], per_layout.get("swapped", (math.nan,))[0])
    return rates


def test_rules_match_a_per_episode_reference_including_the_boundaries():
    rng = np.random.default_rng(0)
    records = []
    for index in range(400):  # item index // 2 in both layouts, its target exchanged between them
        if index % 2 == 0:
            target = ["left", "right"][rng.integers(2)]
        tile = TILES[["left", "right"][rng.integers(2)]]
        cube = np.array(tile["center"]) + rng.uniform(-0.16, 0.16, 3) * [1, 1, 0] + [0, 0, rng.uniform(-0.02, 0.04)]
        records.append(_episode(index // 2, target if index % 2 == 0 else {"left": "right", "right": "left"}[target],
                                ["original", "swapped"][index % 2], ["color", "shape", "time"][index // 2 % 3],
                                cube.tolist(), cube_half_size=float(rng.uniform(0.01, 0.02))))
    # exactly on the xy margin and exactly at the height threshold (a tile at the origin, so the float sums are
    # the rule's own; the right tile 31 cm away, its region apart): both count as held; a hair beyond the margin does not
    at_origin = {"left": {"center": [0.0, 0.0, 0.0], "half_size": [0.055, 0.055, 0.003]},
                 "right": {"center": [0.0, 0.31, 0.0], "half_size": [0.055, 0.055, 0.003]}}
    edge = 0.055 + 0.08
    records.append({**_episode("edge", cube=(edge, -edge, 0.003 + 0.015 - 0.01)), "tiles": at_origin})
    records.append({**_episode("edge", "right", "swapped", cube=(0.0, -np.nextafter(edge, 1), 0.5)), "tiles": at_origin})
    result = multinet_jax.score("act2answer", records)
    expected = _reference_rates(records)
    assert set(result["categories"]) == set(expected)
    for category, (success, answered, original, swapped) in expected.items():
        entry = result["categories"][category]
        assert entry["success_rate"] == pytest.approx(success, abs=1e-12)
        assert entry["answered_rate"] == pytest.approx(answered, abs=1e-12)
        assert entry["success_rate_original"] == pytest.approx(original, abs=1e-12)
        assert entry["success_rate_swapped"] == pytest.approx(swapped, abs=1e-12)
    assert result["success_rate"] == pytest.approx(np.mean([v[0] for v in expected.values()]), abs=1e-12)
    assert result["answered_rate"] == pytest.approx(np.mean([v[1] for v in expected.values()]), abs=1e-12)
    assert result["episodes"] == len(records) and "intent" not in result
    edge = multinet_jax.score("act2answer", records[-2:])["categories"]["color"]
    assert (edge["success_rate_original"], edge["success_rate_swapped"]) == (1.0, 0.0)


def test_rates_average_the_layouts_and_report_a_wilson_interval():
    off = (-0.25, 0.0, 0.9)  # between the tiles: neither holds the cube
    records = [_episode(0), _episode(0, "right", "swapped", cube=off), _episode(1), _episode(1, "right", "swapped"),
               _episode(2, cube=off), _episode(2, "right", "swapped", cube=off)]
    entry = multinet_jax.score("act2answer", records)["categories"]["color"]
    assert entry["success_rate_original"] == pytest.approx(2 / 3) and entry["success_rate_swapped"] == 0.0
    assert entry["success_rate"] == pytest.approx(1 / 3) and entry["episodes"] == 6
    assert entry["answered_rate"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    # Wilson's 95% interval for 1 of 2: (0.0945, 0.9055)
    half = multinet_jax.score("act2answer", [_episode(0), _episode(0, "right", "swapped", cube=off)])
    assert half["categories"]["color"]["success_ci95"] == pytest.approx([0.09453120573, 0.90546879427], abs=1e-9)


@pytest.mark.parametrize("records, field, problem", [
    # an unpaired item: an always-left policy would score 0.25 here, not the protocol's 0.5
    ([_episode(0), _episode(0, "right", "swapped"), _episode(1, "right", cube=(-0.25, 0.155, 0.9))],
     "layout", "item '1' has no swapped episode"),
    ([_episode(0), _episode(0, "right", "swapped"), _episode(0)], "id", "episode '0' (original) already given by record 0"),
    # the original's target copied into the swapped layout: an always-left policy would score 1.0
    ([_episode(0), _episode(0, "left", "swapped")], "target", "left, as in item '0''s original episode (record 0)"),
    ([_episode(0), _episode(0, "right", "swapped", category="shape")], "category", "'shape', but item '0''s original"),
])
def test_episodes_come_in_swapped_pairs(records, field, problem):
    with pytest.raises(multinet_jax.metrics.RecordError) as raised:
        multinet_jax.score("act2answer", records)
    assert (raised.value.index, raised.value.field) == (len(records) - 1 if field != "layout" else 2, field)
    assert problem in raised.value.problem


def test_intent_metrics_on_hand_made_trajectories():
    start = [-0.13, 0.0, 0.95]
    to_left = [start, [-0.2, -0.1, 0.93], [-0.25, -0.155, 0.92], [-0.25, -0.155, 0.9]]
    detour = [start, [-0.2, 0.1, 0.93], [-0.25, 0.155, 0.92], [-0.25, 0.0, 0.92], [-0.25, -0.155, 0.9]]
    to_right = [[x, -y, z] for x, y, z in to_left]
    records = [
        # straight to the target (left), released over it
        _episode(0, trajectory=to_left, gripper=[0, 0, 0, 1], control_hz=5),
        # the swapped layout's target is right, but the arm goes left and releases there
        _episode(0, "right", "swapped", trajectory=to_left, gripper=[0, 0, 1, 1], control_hz=5),
        # enters the other tile first, then ends on the target; never opens
        _episode(1, trajectory=detour, gripper=[0] * 5, control_hz=5),
        # straight to the target (right), released over it
        _episode(1, "right", "swapped", trajectory=to_right, gripper=[0, 0, 0, 1], control_hz=5),
    ]
    result = multinet_jax.score("act2answer", records)
    intent = result["categories"]["color"]["intent"]
    # each rate: (original layout's over episodes 0 and 1 + swapped layout's over episodes 0 and 1) / 2
    assert intent["first_tile_target_rate"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert intent["tile_entered_rate"] == 1.0
    assert intent["closer_to_target_rate"] == pytest.approx((1 + 1 / 2) / 2)
    assert intent["released_rate"] == pytest.approx((1 / 2 + 1) / 2)
    assert intent["release_near_target_rate"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    # straight to the left: aligned in the original layout, against the target when it is on the right; the
    # detour's net motion (two steps away, two longer steps back to the target) is towards the target
    assert intent["velocity_aligned_rate"] == pytest.approx((1 + 1 / 2) / 2)
    step = np.linalg.norm(np.subtract(to_left[1][:2], start[:2])) * 5
    assert step > 0 and result["intent"]["episodes_with_trajectory"] == 4 and result["intent"]["episodes_with_gripper"] == 4
    assert result["intent"]["first_tile_target_rate"] == intent["first_tile_target_rate"]  # one category: macro = it


def _always_left(layouts_logged=("original", "swapped"), gripper=True):
    """An always-left policy on 4 left-answer items: the cube on the left tile in both layouts (success 0.5), with a
    trajectory straight there logged in `layouts_logged` (the audit's case: a logger that lost the swapped ones)."""
    trajectory = [[-0.13, 0.0, 0.98], [-0.2, -0.08, 0.95], [-0.25, -0.155, 0.91]]
    records = []
    for item in range(4):
        for layout, target in (("original", "left"), ("swapped", "right")):
            logs = {"trajectory": trajectory, "control_hz": 5, **({"gripper": [0.0, 0.0, 1.0]} if gripper else {})}
            records.append(_episode(f"i{item}", target, layout, cube=(-0.25, -0.155, 0.891),
                                    **(logs if layout in layouts_logged else {})))
    return records


def test_intent_is_refused_over_one_layout_of_an_item():
    """Intent rates average the layouts that have a trajectory: logged in the original layouts only, an always-left
    policy read first_tile_target / closer / velocity / release 1.0. A trajectory or gripper log in one layout of an
    item is refused, and a rate one layout has no episode for (velocity over one-point trajectories) is left out."""
    full = multinet_jax.score("act2answer", _always_left())
    assert full["success_rate"] == 0.5 and full["intent"]["first_tile_target_rate"] == 0.5
    assert full["intent"]["velocity_aligned_rate"] == 0.5 and full["intent"]["release_near_target_rate"] == 0.5
    with pytest.raises(multinet_jax.metrics.RecordError) as raised:
        multinet_jax.score("act2answer", _always_left(("original",)))
    assert (raised.value.index, raised.value.field) == (1, "trajectory")
    assert "missing, but given in item 'i0''s original episode (record 0)" in raised.value.problem
    records = _always_left()
    del records[2]["gripper"]
    with pytest.raises(multinet_jax.metrics.RecordError) as raised:
        multinet_jax.score("act2answer", records)
    assert (raised.value.index, raised.value.field) == (3, "gripper") and "given, but missing in item 'i1'" in raised.value.problem
    records = _always_left(gripper=False)
    for record in records[1::2]:
        record["trajectory"] = record["trajectory"][-1:]  # a swapped layout that never moved: no velocity there
    intent = multinet_jax.score("act2answer", records)["categories"]["color"]["intent"]
    assert "velocity_aligned_rate" not in intent and intent["first_tile_target_rate"] == 0.5


def _two_layouts(left_y=-0.155, right_y=0.155, swapped_left_y=None, swapped_right_y=None, cube=(-0.25, 0.0, 0.891)):
    """Item 'a' in both layouts, its tiles' y as given (the swapped layout's as the original's unless given)."""
    def tiles(ly, ry):
        return {"left": {**TILES["left"], "center": [-0.25, ly, 0.873]}, "right": {**TILES["right"], "center": [-0.25, ry, 0.873]}}
    swapped = tiles(left_y if swapped_left_y is None else swapped_left_y, right_y if swapped_right_y is None else swapped_right_y)
    return [{**_episode("a", cube=cube), "tiles": tiles(left_y, right_y)},
            {**_episode("a", "right", "swapped", cube=cube), "tiles": swapped}]


@pytest.mark.parametrize("records, index, field, problem", [
    # both tiles at one place: a cube there held by both, success 1.0 whatever the target
    (_two_layouts(0.0, 0.0), 0, "tiles", "the left and right tiles' regions (half size + 0.08 m) overlap"),
    # 5 cm apart: a cube between them on both
    (_two_layouts(-0.025, 0.025), 0, "tiles", "overlap: centres [-0.25, -0.025, 0.873] and [-0.25, 0.025, 0.873]"),
    # the swapped layout's tiles moved (left and right exchanged): a cube always at y = -0.155 succeeded in both
    (_two_layouts(swapped_left_y=0.155, swapped_right_y=-0.155, cube=(-0.25, -0.155, 0.891)), 1, "tiles.left.center",
     "[-0.25, 0.155, 0.873], but [-0.25, -0.155, 0.873] in item 'a''s original episode (record 0)"),
])
def test_tile_geometry_is_checked(records, index, field, problem):
    with pytest.raises(multinet_jax.metrics.RecordError) as raised:
        multinet_jax.score("act2answer", records)
    assert (raised.value.index, raised.value.field) == (index, field) and problem in raised.value.problem


def test_tiles_apart_and_in_place_are_scored():
    """Regions a hair apart, and tiles logged a millimetre off between layouts (a simulator's settling), score."""
    assert multinet_jax.score("act2answer", _two_layouts(-0.1351, 0.1351))["success_rate"] == 0.0
    moved = _two_layouts(swapped_left_y=-0.154, cube=(-0.25, -0.155, 0.891))
    assert multinet_jax.score("act2answer", moved)["success_rate"] == 0.5


@pytest.mark.parametrize("records, index, field, problem", [
    # an integer 1 and a text "1" paired as one item
    ([_episode(1), _episode("1", "right", "swapped")], 1, "id", "'1', but record 0 names item '1' 1"),
    ([{**_episode("1/original"), "id": 1}, _episode("1/swapped", "right", "swapped")], 1, "id", "an integer and a text id"),
    # one category under two spellings, scored and macro-averaged as two
    ([_episode("a"), _episode("a", "right", "swapped"), _episode("b", category="color "),
      _episode("b", "right", "swapped", category="color ")], 2, "category", "'color ', but record 0 spells it 'color'"),
    ([_episode("a"), _episode("a", "right", "swapped"), _episode("b", category="Color"),
      _episode("b", "right", "swapped", category="Color")], 2, "category", "one category needs one spelling"),
])
def test_ids_and_categories_of_one_spelling(records, index, field, problem):
    with pytest.raises(multinet_jax.metrics.RecordError) as raised:
        multinet_jax.score("act2answer", records)
    assert (raised.value.index, raised.value.field) == (index, field) and problem in raised.value.problem


def _run_score(path, output):
    command = [sys.executable, "-c", "import sys; from multinet_jax.cli import main; main(sys.argv)", "score",
               "--domain=act2answer", f"--predictions={path}", f"--output={output}"]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)


def test_score_command_writes_the_metrics(tmp_path):
    path = tmp_path / "episodes.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [_episode(0), _episode(0, "right", "swapped")]) + "\n")
    completed = _run_score(path, tmp_path / "m.json")
    assert completed.returncode == 0, completed.stderr
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["categories"]["color"]["success_rate_swapped"] == 0.0 and result["success_rate"] == 0.5


@pytest.mark.parametrize("change, field, problem", [
    ({"target": "up"}, "target", "expected one of ['left', 'right'], got 'up'"),
    ({"layout": "mirrored"}, "layout", "expected one of ['original', 'swapped']"),
    ({"category": ""}, "category", "expected non-empty text"),
    ({"cube_position": [0.1, 0.2]}, "cube_position", "expected 3 finite numbers"),
    ({"cube_position": [0.1, 0.2, "NaN"]}, "cube_position", "expected 3 finite numbers"),
    ({"tiles": {"left": TILES["left"]}}, "tiles", "expected an object with keys 'left' and 'right'"),
    ({"tiles": {"left": TILES["left"], "right": {"center": [0, 0, 0]}}}, "tiles.right.half_size", "expected 3 finite numbers"),
    ({"cube_half_size": -0.01}, "cube_half_size", "expected a positive number"),
    ({"trajectory": [[0, 0, 0]]}, "control_hz", "missing"),
    ({"trajectory": [[0, 0, 0], [0, 0]], "control_hz": 5}, "trajectory[1]", "expected 3 finite numbers"),
    ({"trajectory": [[0, 0, 0]], "control_hz": 5, "gripper": [0, 1]}, "gripper", "expected 1 values"),
    ({"trajectory": [[0, 0, 0]], "control_hz": 5, "gripper": [2]}, "gripper[0]", "expected openness in [0, 1]"),
    ({"gripper": [0]}, "gripper", "given without a trajectory"),
    ({"id": 0, "layout": "original"}, "id", "episode '0' (original) already given by record 0"),
])
def test_bad_episodes_name_the_record_and_field(change, field, problem):
    records = [_episode(0), {**_episode(0, "right", "swapped"), **change}]
    with pytest.raises(multinet_jax.metrics.RecordError) as raised:
        multinet_jax.score("act2answer", records)
    assert (raised.value.index, raised.value.field) == (1, field) and problem in raised.value.problem


def test_score_command_names_the_bad_line(tmp_path):
    path = tmp_path / "episodes.jsonl"
    path.write_text(json.dumps(_episode(0)) + "\n\n" + json.dumps(_episode(0, target="up", layout="swapped")) + "\n")
    completed = _run_score(path, tmp_path / "m.json")
    assert completed.returncode == 2 and not (tmp_path / "m.json").exists()
    assert f"{path}:3: field 'target': expected one of ['left', 'right'], got 'up'" in completed.stderr


def test_the_documented_command_scores_the_bundled_episodes(tmp_path):
    """docs/knowledge_retention.md's `score --domain=act2answer` line, run as written (its --output moved to
    tmp_path): the bundled episodes score as the per-episode reference says and as examples/act2answer/README.md
    states."""
    (line,) = [line for line in (REPO_ROOT / "docs" / "knowledge_retention.md").read_text().splitlines()
               if line.startswith("multinet-jax score --domain=act2answer ")]
    arguments = [argument for argument in shlex.split(line)[1:] if not argument.startswith("--output=")]
    command = [sys.executable, "-c", "from multinet_jax.cli import main; main()", *arguments, f"--output={tmp_path / 'm.json'}"]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert completed.returncode == 0, completed.stderr
    result = json.loads((tmp_path / "m.json").read_text())
    records = [json.loads(line) for line in (REPO_ROOT / "examples" / "act2answer" / "episodes.jsonl").read_text().splitlines()]
    for category, (success, answered, original, swapped) in _reference_rates(records).items():
        entry = result["categories"][category]
        assert (entry["success_rate"], entry["answered_rate"]) == pytest.approx((success, answered))
        assert (entry["success_rate_original"], entry["success_rate_swapped"]) == pytest.approx((original, swapped))
    stated = (REPO_ROOT / "examples" / "act2answer" / "README.md").read_text()
    assert f"success rate {result['success_rate']:.3f} and answered rate {result['answered_rate']:.3f}" in stated
    assert result["intent"]["episodes_with_trajectory"] == 6
