"""Act2Answer episode scoring: the protocol's success rule and intent metrics as one jitted, vectorized kernel.

Input: one record per episode, from any simulator (a line of the `score --domain=act2answer` JSONL):

    id            the item id (with `layout`, unique per episode); `<item>/<layout>` is read as the item
    category      the item's knowledge category
    layout        "original" | "swapped"
    target        "left" | "right": the correct tile in this layout
    cube_position [x, y, z]: the cube's final position (metres, world frame)
    tiles         {"left"|"right": {"center": [x, y, z], "half_size": [hx, hy, hz]}}
    cube_half_size  optional, default 0.015
    trajectory    optional end-effector positions [[x, y, z], ...] with `control_hz` (required with it) and
                  optional `gripper` (per point, openness in [0, 1]: 0 closed, 1 open)

Rules (the protocol's): a tile holds the cube iff the cube's xy is within the tile's half size plus 0.08 m on both
axes and `z - tile_z >= half_z + cube_half - 0.01`; success iff the target tile holds it; answered iff either does.
Tiles whose regions meet are refused (a cube there would be on both). Every item is scored in both layouts, its
target exchanged between them, the tiles where they were (`check_layout_pairs`: an unpaired item, a repeated episode,
an unswapped target, moved tiles, or a trajectory / gripper log in one layout only is refused), as are an item named
by an integer and a text id (1 and "1": one item?) and a category name spelled two ways ("color", "Color "). Per
category, every rate is the mean of the two layouts' rates;
`success_ci95` is the Wilson score interval of that rate over the category's
episodes; the top-level `success_rate` / `answered_rate` are macro means over categories. All rates are fractions.

Intent metrics (episodes with a trajectory; per category and macro, same layout averaging; a rate one layout has no
episode for, such as velocity over one-point trajectories, is not reported):
- `first_tile_target_rate`: the first tile whose region (xy within half size + 0.08 m) the end effector enters is
  the target; `tile_entered_rate`: it entered either.
- `closer_to_target_rate`: at the last point the end effector's xy is closer to the target's centre than the other's.
- `velocity_aligned_rate`: summed over steps, the xy velocity `(p[t+1] - p[t]) * control_hz` points more towards the
  target than towards the other tile (projected on the unit directions from p[t]); `velocity_toward_target`: its
  mean component towards the target, m/s (needs 2+ points).
- `release_near_target_rate` (episodes with `gripper`): the gripper first opens (crosses 0.5 upwards) with the end
  effector's xy inside the target's region; `released_rate`: it opens at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from multinet_jax.act2answer.geometry import CUBE_HALF_SIZE, HEIGHT_TOLERANCE, LAYOUTS, TILE_NAMES, XY_MARGIN
from multinet_jax.act2answer.names import spelling_clash
from multinet_jax.metrics._numerics import x64_jit
from multinet_jax.metrics.records import RecordError, is_finite_number, require_field
from multinet_jax.metrics.json_values import to_python

WILSON_Z = 1.959963984540054  # the standard normal's 97.5% quantile
GRIPPER_OPEN = 0.5
# How far a tile's logged centre may move between an item's two layouts (metres): the swap exchanges the pictures, the
# tiles stay (a simulator's settling moves them by far less; the tiles are 31 cm apart).
TILE_CENTER_TOLERANCE = 0.005


# -- records -> arrays (host) ------------------------------------------------------------------------------------


def _vector(value: Any, index: int, field: str, length: int = 3) -> list[float]:
    if not isinstance(value, list) or len(value) != length or not all(map(is_finite_number, value)):
        raise RecordError(index, field, f"expected {length} finite numbers, got {value!r}")
    return [float(v) for v in value]


def _positive(value: Any, index: int, field: str) -> float:
    if not is_finite_number(value) or value <= 0:
        raise RecordError(index, field, f"expected a positive number, got {value!r}")
    return float(value)


def _choice(record: Mapping[str, Any], index: int, field: str, choices: Sequence[str]) -> int:
    value = require_field(record, index, field)
    if value not in choices:
        raise RecordError(index, field, f"expected one of {list(choices)}, got {value!r}")
    return list(choices).index(value)


def _tiles(record: Mapping[str, Any], index: int) -> tuple[list[list[float]], list[list[float]]]:
    tiles = require_field(record, index, "tiles")
    if not isinstance(tiles, Mapping) or set(tiles) != set(TILE_NAMES):
        raise RecordError(index, "tiles", f"expected an object with keys 'left' and 'right', got {tiles!r}")
    centers, halves = [], []
    for name in TILE_NAMES:
        tile = tiles[name]
        if not isinstance(tile, Mapping):
            raise RecordError(index, f"tiles.{name}", f"expected an object with center and half_size, got {tile!r}")
        centers.append(_vector(tile.get("center"), index, f"tiles.{name}.center"))
        halves.append(_vector(tile.get("half_size"), index, f"tiles.{name}.half_size"))
        if min(halves[-1]) < 0:
            raise RecordError(index, f"tiles.{name}.half_size", f"expected non-negative sizes, got {halves[-1]}")
    gap = np.abs(np.subtract(centers[0][:2], centers[1][:2])) - np.add(halves[0][:2], halves[1][:2]) - 2 * XY_MARGIN
    if np.all(gap <= 0):  # a cube in both regions would succeed whichever tile is the target
        raise RecordError(index, "tiles", f"the left and right tiles' regions (half size + {XY_MARGIN} m) overlap: "
                          f"centres {centers[0]} and {centers[1]}")
    return centers, halves


def _trajectory(record: Mapping[str, Any], index: int) -> tuple[list[list[float]], list[float] | None, float] | None:
    if record.get("trajectory") is None:
        for field in ("gripper", "control_hz"):
            if record.get(field) is not None:
                raise RecordError(index, field, "given without a trajectory")
        return None
    points = record["trajectory"]
    if not isinstance(points, list) or not points:
        raise RecordError(index, "trajectory", f"expected a non-empty list of [x, y, z] points, got {points!r}")
    trajectory = [_vector(point, index, f"trajectory[{step}]") for step, point in enumerate(points)]
    control_hz = _positive(require_field(record, index, "control_hz"), index, "control_hz")
    gripper = record.get("gripper")
    if gripper is not None:
        if not isinstance(gripper, list) or len(gripper) != len(points):
            raise RecordError(index, "gripper", f"expected {len(points)} values (one per trajectory point), got {gripper!r}")
        for step, value in enumerate(gripper):
            if not is_finite_number(value) or not 0 <= value <= 1:
                raise RecordError(index, f"gripper[{step}]", f"expected openness in [0, 1], got {value!r}")
        gripper = [float(value) for value in gripper]
    return trajectory, gripper, control_hz


def _bucket(size: int, minimum: int = 8) -> int:
    return max(minimum, 1 << (size - 1).bit_length())


def _item_and_category(record: Mapping[str, Any], index: int) -> tuple[str, str, int]:
    """(item id, category, layout index) of a record; its `id` names the item, or the episode as `<item>/<layout>`
    (eval's records)."""
    episode_id = require_field(record, index, "id")
    if isinstance(episode_id, bool) or not isinstance(episode_id, (str, int)):
        raise RecordError(index, "id", f"expected text or an integer, got {episode_id!r}")
    category = require_field(record, index, "category")
    if not isinstance(category, str) or not category:
        raise RecordError(index, "category", f"expected non-empty text, got {category!r}")
    layout = _choice(record, index, "layout", LAYOUTS)
    return str(episode_id).removesuffix(f"/{LAYOUTS[layout]}"), category, layout


def _items_and_categories(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, int]]:
    """`_item_and_category` of every record, each item named by ids of one type and each category name spelled one
    way: an integer 1 and a text "1" would pair as one item, and "color" / "Color " would be scored as two categories."""
    keys = [_item_and_category(record, index) for index, record in enumerate(records)]
    first: dict[str, int] = {}
    for index, (record, (item, _, _)) in enumerate(zip(records, keys)):
        earlier = first.setdefault(item, index)
        if type(record["id"]) is not type(records[earlier]["id"]):
            raise RecordError(index, "id", f"{record['id']!r}, but record {earlier} names item {item!r} "
                              f"{records[earlier]['id']!r}: an integer and a text id are not one item")
    clash = spelling_clash((index, category) for index, (_, category, _) in enumerate(keys))
    if clash is not None:
        index, earlier = clash
        raise RecordError(index, "category", f"{keys[index][1]!r}, but record {earlier} spells it {keys[earlier][1]!r}: "
                          "one category needs one spelling")
    return keys


def check_layout_pairs(episodes: Sequence[tuple[str, str, int, int]], target_field: str,
                       check_pair: Callable[[int, int, str], None] | None = None) -> None:
    """Every item of `episodes` ((item, category, layout, target tile) per record; the records name the target
    `target_field`) once in each layout, in one category, its target exchanged between them (the swap exchanges the
    tiles and the answer); `check_pair(index, other, item)`, where given, checks what else the two layouts' records
    must share (raising RecordError on the later record, `index`).

    A rate is the mean of the two layouts' rates, which is the protocol's (a policy always choosing one tile scores
    0.5) only over complete pairs: an unpaired item (an odd `--limit`, a lost simulator episode), a repeated episode
    or a target left unswapped would move it silently, so each is refused naming its record.
    """
    first: dict[tuple[str, int], int] = {}
    for index, (item, _, layout, _) in enumerate(episodes):
        if (item, layout) in first:
            raise RecordError(index, "id", f"episode {item!r} ({LAYOUTS[layout]}) already given by record {first[item, layout]}")
        first[item, layout] = index
    for index, (item, category, layout, target) in enumerate(episodes):
        other = first.get((item, 1 - layout))
        if other is None:
            raise RecordError(index, "layout", f"item {item!r} has no {LAYOUTS[1 - layout]} episode: every item is "
                              "scored in both layouts (an odd --limit or a lost episode leaves one out)")
        if index < other:
            continue  # the pair is checked at its later record
        if episodes[other][1] != category:
            raise RecordError(index, "category", f"{category!r}, but item {item!r}'s {LAYOUTS[1 - layout]} episode "
                              f"(record {other}) is in {episodes[other][1]!r}")
        if episodes[other][3] == target:
            raise RecordError(index, target_field, f"{TILE_NAMES[target]}, as in item {item!r}'s {LAYOUTS[1 - layout]} "
                              f"episode (record {other}): the swapped layout exchanges the tiles and the answer")
        if check_pair is not None:
            check_pair(index, other, item)


def _check_episode_pair(rows: Sequence[Mapping[str, Any]]) -> Callable[[int, int, str], None]:
    """`check_layout_pairs`' check of two episode rows of one item: the tiles where they were (the swap exchanges the
    pictures; a moved tile lets one position succeed in both layouts), and a trajectory (gripper) logged in both or
    neither (each intent rate is the mean of the layouts that have one: an always-left policy logged in its original
    layouts only would read 1.0)."""

    def check(index: int, other: int, item: str) -> None:
        where = f"item {item!r}'s {LAYOUTS[rows[other]['layout']]} episode (record {other})"
        centers, other_centers = rows[index]["tiles"][0], rows[other]["tiles"][0]
        for name, center, other_center in zip(TILE_NAMES, centers, other_centers):
            if not np.allclose(center, other_center, rtol=0, atol=TILE_CENTER_TOLERANCE):
                raise RecordError(index, f"tiles.{name}.center", f"{center}, but {other_center} in {where}: the swapped "
                                  "layout exchanges the pictures, the tiles stay where they are")
        for field, logged in (("trajectory", lambda row: row["trajectory"] is not None),
                              ("gripper", lambda row: row["trajectory"] is not None and row["trajectory"][1] is not None)):
            if logged(rows[index]) != logged(rows[other]):
                raise RecordError(index, field, f"{'given' if logged(rows[index]) else 'missing'}, but "
                                  f"{'given' if logged(rows[other]) else 'missing'} in {where}: intent rates average "
                                  "the two layouts, so both or neither log it")

    return check


def pack_episodes(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Validated records -> the kernel's (padded) arrays and the sorted category names; bad fields raise RecordError."""
    if not records:
        raise ValueError("no episodes to score")
    rows = []
    for index, (record, (item, category, layout)) in enumerate(zip(records, _items_and_categories(records))):
        cube_half = record.get("cube_half_size")
        rows.append({
            "item": item,
            "category": category,
            "layout": layout,
            "target": _choice(record, index, "target", TILE_NAMES),
            "cube": _vector(require_field(record, index, "cube_position"), index, "cube_position"),
            "tiles": _tiles(record, index),
            "cube_half": CUBE_HALF_SIZE if cube_half is None else _positive(cube_half, index, "cube_half_size"),
            "trajectory": _trajectory(record, index),
        })
    check_layout_pairs([(row["item"], row["category"], row["layout"], row["target"]) for row in rows], "target",
                       _check_episode_pair(rows))
    categories = sorted({row["category"] for row in rows})
    # Shapes are padded to powers of two so a new file rarely means a new compile; padding rows carry the
    # category index len(categories), whose segments the kernel drops.
    count = _bucket(len(rows))
    steps = _bucket(max([len(row["trajectory"][0]) for row in rows if row["trajectory"]] or [2]))
    arrays = {
        "category": np.full(count, len(categories), np.int32),
        "layout": np.zeros(count, np.int32),
        "target": np.zeros(count, np.int32),
        "cube": np.zeros((count, 3), np.float64),
        "cube_half": np.full(count, CUBE_HALF_SIZE, np.float64),
        "tile_center": np.zeros((count, 2, 3), np.float64),
        "tile_half": np.zeros((count, 2, 3), np.float64),
        "trajectory": np.zeros((count, steps, 3), np.float64),
        "trajectory_length": np.zeros(count, np.int32),
        "gripper": np.zeros((count, steps), np.float64),
        "has_gripper": np.zeros(count, bool),
        "control_hz": np.ones(count, np.float64),
    }
    for row_index, row in enumerate(rows):
        arrays["category"][row_index] = categories.index(row["category"])
        arrays["layout"][row_index], arrays["target"][row_index] = row["layout"], row["target"]
        arrays["cube"][row_index], arrays["cube_half"][row_index] = row["cube"], row["cube_half"]
        arrays["tile_center"][row_index], arrays["tile_half"][row_index] = row["tiles"]
        if row["trajectory"] is None:
            continue
        points, gripper, control_hz = row["trajectory"]
        arrays["trajectory"][row_index, : len(points)] = points
        arrays["trajectory_length"][row_index] = len(points)
        arrays["control_hz"][row_index] = control_hz
        if gripper is not None:
            arrays["gripper"][row_index, : len(gripper)] = gripper
            arrays["has_gripper"][row_index] = True
    return arrays, categories


# -- the kernel ----------------------------------------------------------------------------------------------------


def _in_region(xy: jax.Array, center: jax.Array, half: jax.Array) -> jax.Array:
    """xy `[..., 2]` within a tile's half size plus the margin, on both axes."""
    return jnp.all(jnp.abs(xy - center[..., :2]) <= half[..., :2] + XY_MARGIN, axis=-1)


def _per_episode(episodes: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Outcome flags per episode (bool `[n]` each) and which episodes each intent metric covers."""
    center, half, cube = episodes["tile_center"], episodes["tile_half"], episodes["cube"]
    high_enough = cube[:, None, 2] - center[..., 2] >= half[..., 2] + episodes["cube_half"][:, None] - HEIGHT_TOLERANCE
    holds = _in_region(cube[:, None, :2], center, half) & high_enough  # [n, 2]
    target = episodes["target"]
    rows = jnp.arange(target.shape[0])
    target_center, other_center = center[rows, target], center[rows, 1 - target]
    target_half = half[rows, target]

    trajectory, length = episodes["trajectory"][..., :2], episodes["trajectory_length"]
    steps = trajectory.shape[1]
    valid = jnp.arange(steps)[None, :] < length[:, None]  # [n, T]
    inside = _in_region(trajectory[:, :, None, :], center[:, None], half[:, None]) & valid[..., None]  # [n, T, 2]
    first_step = jnp.where(inside, jnp.arange(steps)[None, :, None], steps).min(axis=1)  # [n, 2]
    entered = jnp.any(first_step < steps, axis=-1)
    first_target = entered & (first_step[rows, target] <= first_step[rows, 1 - target])
    last = trajectory[rows, jnp.maximum(length - 1, 0)]
    closer = jnp.linalg.norm(last - target_center[:, :2], axis=-1) < jnp.linalg.norm(last - other_center[:, :2], axis=-1)

    velocity = (trajectory[:, 1:] - trajectory[:, :-1]) * episodes["control_hz"][:, None, None]  # [n, T-1, 2]
    moving = valid[:, 1:]

    def towards(tile_center: jax.Array) -> jax.Array:
        offset = tile_center[:, None, :2] - trajectory[:, :-1]
        unit = offset / jnp.maximum(jnp.linalg.norm(offset, axis=-1, keepdims=True), 1e-12)
        return jnp.where(moving, jnp.sum(velocity * unit, axis=-1), 0.0)

    toward_target, toward_other = towards(target_center), towards(other_center)
    num_moves = jnp.sum(moving, axis=1)
    aligned = jnp.sum(toward_target - toward_other, axis=1) > 0
    speed_toward = jnp.sum(toward_target, axis=1) / jnp.maximum(num_moves, 1)

    gripper = episodes["gripper"]
    opens = (gripper[:, 1:] >= GRIPPER_OPEN) & (gripper[:, :-1] < GRIPPER_OPEN) & moving
    released = jnp.any(opens, axis=1)
    release_step = jnp.argmax(opens, axis=1) + 1
    release_xy = trajectory[rows, release_step]
    near = released & _in_region(release_xy, target_center, target_half)

    has_trajectory = length > 0
    has_motion = num_moves > 0
    has_gripper = episodes["has_gripper"]
    return {
        "success": holds[rows, target], "answered": jnp.any(holds, axis=-1),
        "first_tile_target_rate": (first_target, has_trajectory), "tile_entered_rate": (entered, has_trajectory),
        "closer_to_target_rate": (closer, has_trajectory), "velocity_aligned_rate": (aligned, has_motion),
        "velocity_toward_target": (speed_toward, has_motion),
        "release_near_target_rate": (near, has_gripper), "released_rate": (released, has_gripper),
    }


def _layout_rates(values: jax.Array, counted: jax.Array, category: jax.Array, layout: jax.Array, num_categories: int):
    """Per category: (layout-mean rate [C], per-layout rates [C, 2], per-layout counts [C, 2]). The mean is NaN (not
    reported) where a layout counts no episode: one layout's rate alone is not the protocol's (an always-left policy
    reads 1.0 on the original layouts of left-answer items)."""
    cell = category * len(LAYOUTS) + layout
    size = num_categories * len(LAYOUTS)
    totals = jax.ops.segment_sum(jnp.where(counted, values.astype(jnp.float64), 0.0), cell, size).reshape(-1, 2)
    counts = jax.ops.segment_sum(counted.astype(jnp.int32), cell, size).reshape(-1, 2)
    rates = jnp.where(counts > 0, totals / jnp.maximum(counts, 1), jnp.nan)
    mean = jnp.where(jnp.all(counts > 0, -1), jnp.mean(rates, -1), jnp.nan)
    return mean, rates, counts


def _wilson(rate: jax.Array, count: jax.Array) -> jax.Array:
    """The 95% Wilson score interval `[C, 2]` of a rate observed over `count` episodes."""
    n = jnp.maximum(count, 1).astype(jnp.float64)
    z2 = WILSON_Z**2
    centre = (rate + z2 / (2 * n)) / (1 + z2 / n)
    half = WILSON_Z / (1 + z2 / n) * jnp.sqrt(rate * (1 - rate) / n + z2 / (4 * n * n))
    return jnp.stack([jnp.clip(centre - half, 0.0, 1.0), jnp.clip(centre + half, 0.0, 1.0)], -1)


def _macro(values: jax.Array) -> jax.Array:
    """Mean over categories that have a value (NaN when none does)."""
    present = ~jnp.isnan(values)
    return jnp.where(jnp.any(present), jnp.sum(jnp.where(present, values, 0.0)) / jnp.maximum(jnp.sum(present), 1), jnp.nan)


def _episodes_kernel(episodes: Mapping[str, jax.Array], num_categories: int) -> dict[str, Any]:
    outcome = _per_episode(episodes)
    category, layout = episodes["category"], episodes["layout"]
    everyone = jnp.ones(category.shape, bool)
    success, success_layouts, counts = _layout_rates(outcome["success"], everyone, category, layout, num_categories)
    answered, _, _ = _layout_rates(outcome["answered"], everyone, category, layout, num_categories)
    result = {
        "success_rate": _macro(success), "answered_rate": _macro(answered),
        "category_success_rate": success, "category_answered_rate": answered,
        "category_success_rate_layouts": success_layouts, "category_layout_episodes": counts,
        "category_success_ci95": _wilson(success, jnp.sum(counts, -1)),
        "intent": {}, "category_intent": {}, "intent_episodes": {},
    }
    for name, (values, counted) in ((key, value) for key, value in outcome.items() if isinstance(value, tuple)):
        per_category, _, intent_counts = _layout_rates(values, counted, category, layout, num_categories)
        result["category_intent"][name] = per_category
        result["intent"][name] = _macro(per_category)
        result["intent_episodes"][name] = jnp.sum(intent_counts)
    return result


_episodes = x64_jit(_episodes_kernel, static_argnames="num_categories")


def score_episodes(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The Act2Answer metrics of episode records (see the module docstring) as plain Python."""
    arrays, categories = pack_episodes(records)
    raw = to_python(_episodes(arrays, num_categories=len(categories)))
    with_trajectory = int(np.sum(arrays["trajectory_length"] > 0))
    result: dict[str, Any] = {"success_rate": raw["success_rate"], "answered_rate": raw["answered_rate"],
                              "episodes": len(records), "categories": {}}
    for index, name in enumerate(categories):
        original, swapped = raw["category_success_rate_layouts"][index]
        layout_counts = raw["category_layout_episodes"][index]
        entry = {
            "success_rate": raw["category_success_rate"][index],
            "answered_rate": raw["category_answered_rate"][index],
            "success_rate_original": original,
            "success_rate_swapped": swapped,
            "episodes": int(sum(layout_counts)),
            "success_ci95": raw["category_success_ci95"][index],
        }
        if with_trajectory:
            entry["intent"] = {key: values[index] for key, values in raw["category_intent"].items()
                               if raw["intent_episodes"][key] and not math.isnan(values[index])}
        result["categories"][name] = entry
    if with_trajectory:
        result["intent"] = {key: value for key, value in raw["intent"].items() if raw["intent_episodes"][key]}
        result["intent"]["episodes_with_trajectory"] = with_trajectory
        result["intent"]["episodes_with_gripper"] = raw["intent_episodes"]["released_rate"]
    return result


# -- eval's text and action probes -----------------------------------------------------------------------------------

NO_ACTION_HEAD = "not applicable: the model has no action head (a VLM such as PaliGemma); text probe only"


def text_choice(scores: Sequence[float | None]) -> int | None:
    """The text probe's answer from its option scores (left, right): the likelier option; None (invalid) where a score
    is not finite (null as written: a NaN or an overflow) or the two tie, as neither is then an answer."""
    values = np.array([np.nan if score is None else score for score in scores], np.float64)
    if not np.all(np.isfinite(values)) or values[0] == values[1]:
        return None
    return int(np.argmax(values))


def _checked_text_prediction(record: Mapping[str, Any], index: int, prediction: int | None) -> None:
    """A record's `prediction` is what its `raw_output` scores (where given) say (`text_choice`): an argmax of
    non-finite scores read as "left" would score a broken model at chance."""
    scores = record.get("raw_output")
    if scores is None:
        return
    if not isinstance(scores, list) or len(scores) != len(TILE_NAMES) or \
            not all(score is None or is_finite_number(score) for score in scores):
        raise RecordError(index, "raw_output", f"expected the 2 option scores (numbers, null where not finite), got {scores!r}")
    if prediction != (expected := text_choice(scores)):
        raise RecordError(index, "prediction", f"{prediction!r}, but raw_output {scores} gives {expected!r} (the likelier "
                          "option; null where a score is not finite or the two tie)")


def _probes_kernel(correct: Mapping[str, jax.Array], valid: Mapping[str, jax.Array], category: jax.Array,
                   layout: jax.Array, num_categories: int) -> dict[str, Any]:
    everyone = category < num_categories
    result = {}
    for name, values in correct.items():
        per_category, _, _ = _layout_rates(values, everyone, category, layout, num_categories)
        result[f"category_{name}"], result[name] = per_category, _macro(per_category)
    for name, answered in valid.items():
        invalid, _, _ = _layout_rates(~answered, everyone, category, layout, num_categories)
        result[f"category_{name}_invalid_rate"], result[f"{name}_invalid_rate"] = invalid, _macro(invalid)
    return result


_probes = x64_jit(_probes_kernel, static_argnames="num_categories")


def score_probes(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-category accuracy of `eval --domains=act2answer`'s text and action probes, side by side.

    A record: `id`, `category`, `layout`, `ground_truth` (the target tile, 0 = left, 1 = right), `prediction` (the
    text probe's choice, null when invalid: counted wrong and in `text_invalid_rate`; it must be what the record's
    `raw_output` scores give, `text_choice`, where those are given) and `action_prediction` (the action probe's, null
    when invalid: counted wrong and in `action_invalid_rate`). Each rate is the mean of the two layouts' rates, then
    macro-averaged over categories, like the episode rates. Records whose action probe did not apply (`action_probe`:
    why, "not applicable: ..."; a record of a model without an action head, `"action_head": false`, written before
    that field: NO_ACTION_HEAD) get the text probe's metrics and that `action_probe` note in place of the action
    probe's (an `action_prediction` there is refused).
    """
    if not records:
        raise ValueError("no records to score")
    action_heads = [record.get("action_head", True) for record in records]
    for index, value in enumerate(action_heads):
        if not isinstance(value, bool) or value != action_heads[0]:
            raise RecordError(index, "action_head", f"expected {action_heads[0]!r} like record 0 (one model per file), got {value!r}")
    notes = [record.get("action_probe", None if action_heads[0] else NO_ACTION_HEAD) for record in records]
    for index, value in enumerate(notes):
        if value != notes[0] or not (value is None or isinstance(value, str) and value.startswith("not applicable: ")):
            raise RecordError(index, "action_probe", f"expected {notes[0]!r} like record 0 (one model per file; null or "
                              f"'not applicable: ...'), got {value!r}")
    if not action_heads[0] and notes[0] is None:
        raise RecordError(0, "action_probe", "null (the action probe ran) for a model without an action head")
    rows, episodes = [], []
    for index, (record, (item, category, layout)) in enumerate(zip(records, _items_and_categories(records))):
        truth = require_field(record, index, "ground_truth")
        if truth not in (0, 1) or isinstance(truth, bool):
            raise RecordError(index, "ground_truth", f"expected 0 (left) or 1 (right), got {truth!r}")
        text = require_field(record, index, "prediction")
        action = require_field(record, index, "action_prediction")
        for field, value in (("prediction", text), ("action_prediction", action)):
            if value not in (0, 1, None) or isinstance(value, bool):
                raise RecordError(index, field, f"expected 0, 1 or null, got {value!r}")
        if notes[0] is not None and action is not None:
            raise RecordError(index, "action_prediction", f"{action!r}, but the action probe did not run ({notes[0]!r}): "
                              "expected null")
        _checked_text_prediction(record, index, text)
        rows.append((category, layout, truth, text, action))
        episodes.append((item, category, layout, truth))
    check_layout_pairs(episodes, "ground_truth")
    categories = sorted({row[0] for row in rows})
    count = _bucket(len(rows))
    category = np.full(count, len(categories), np.int32)
    layout = np.zeros(count, np.int32)
    text_correct, action_correct, text_valid, action_valid = (np.zeros(count, bool) for _ in range(4))
    for index, (name, layout_index, truth, text, action) in enumerate(rows):
        category[index], layout[index] = categories.index(name), layout_index
        text_correct[index], action_correct[index] = text == truth, action == truth
        text_valid[index], action_valid[index] = text is not None, action is not None
    raw = to_python(_probes({"text_probe_accuracy": text_correct, "action_probe_accuracy": action_correct},
                            {"text": text_valid, "action": action_valid}, category, layout, num_categories=len(categories)))
    keys = ("text_probe_accuracy", "text_invalid_rate")
    if notes[0] is None:
        keys += ("action_probe_accuracy", "action_invalid_rate")
    result: dict[str, Any] = {key: raw[key] for key in keys}
    if notes[0] is not None:
        result["action_probe"] = notes[0]
    result["episodes"] = len(rows)
    result["categories"] = {
        name: {key: raw[f"category_{key}"][index] for key in keys} | {"episodes": sum(row[0] == name for row in rows)}
        for index, name in enumerate(categories)
    }
    return result
