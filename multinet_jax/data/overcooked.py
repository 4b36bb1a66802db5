"""Overcooked-AI human-human trials in MultiNet's format: a CSV or a pickle (list of row dicts), read safely.

Columns as in overcooked_ai's `2020_hh_trials_*`: `state` is a base64 PNG of the game screen,
`joint_action` a Python literal like `[[0, -1], "interact"]`, plus `layout_name`, `trial_id`,
`time_left`, `time_elapsed`, ... (all strings in MultiNet's files). Rows are grouped by `trial_id`
(trials in order of first appearance, rows in file order within a trial), as MultiNet does.

Each player's action maps to NORTH (0,-1)=0, SOUTH (0,1)=1, EAST (1,0)=2, WEST (-1,0)=3,
STAY (0,0)=4, "interact"=5; the joint action is 6 * p0 + p1 (36 options, MultiNet's
`definitions/overcooked.py` order). A joint action that cannot be parsed or holds an unknown move
maps to 28 (STAY, STAY), as MultiNet's v1.0 pipeline does, and the sample says so
(`joint_action_known=False`) so it is counted, not hidden.
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import pathlib
from collections import OrderedDict
from typing import Any

import numpy as np

from multinet_jax.data import prompts, safe_pickle
from multinet_jax.data.errors import BadRecordError
from multinet_jax.data.transforms import decode_image

MOVES = {(0, -1): 0, (0, 1): 1, (1, 0): 2, (-1, 0): 3, (0, 0): 4, "interact": 5}
UNKNOWN_JOINT_ACTION = 28
NUM_JOINT_ACTIONS = 36
MAX_JOINT_ACTION_CHARS = 64


def player_action_index(action: Any) -> int | None:
    key = action if isinstance(action, str) else tuple(action) if isinstance(action, (list, tuple)) else None
    return MOVES.get(key) if key is not None else None


def parse_joint_action(text: str) -> tuple[int, tuple[int, int], bool]:
    """(joint index, (p0, p1) indices, known); unknown -> (28, (4, 4), False).

    The longest real joint action, `["interact", "interact"]`, has 22 characters: a longer text is unknown without
    being parsed (`literal_eval` of a huge or deeply nested literal costs unbounded memory and recursion).
    """
    try:
        actions = ast.literal_eval(text) if len(text) <= MAX_JOINT_ACTION_CHARS else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        actions = None
    if isinstance(actions, (list, tuple)) and len(actions) == 2:
        p0, p1 = (player_action_index(action) for action in actions)
        if p0 is not None and p1 is not None:
            return 6 * p0 + p1, (p0, p1), True
    return UNKNOWN_JOINT_ACTION, (4, 4), False


def _read_rows(path: pathlib.Path) -> list[dict[str, Any]]:
    if path.suffix == ".pickle":
        rows = safe_pickle.load(path)  # data, not code: only lists, dicts, strings and numbers
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ValueError(f"{path}: expected a pickled list of row dicts, got {type(rows).__name__}")
        return rows
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def data_file(directory: pathlib.Path) -> pathlib.Path:
    """The trials file: the CSV when there is one (plain text; MultiNet publishes the same rows as a pickle too),
    else the pickle. Exactly one of a kind is expected."""
    for pattern in ("*.csv", "*.pickle"):
        found = sorted(directory.glob(pattern))
        if len(found) == 1:
            return found[0]
        if found:
            raise ValueError(f"{directory}: several {pattern} files {[p.name for p in found]}; point data_dir at one split")
    raise FileNotFoundError(f"{directory}: no Overcooked-AI *.pickle or *.csv")


class OvercookedSource:
    """Random access to Overcooked timesteps in trial-grouped order."""

    def __init__(self, directory: pathlib.Path, dataset: str = "overcooked_ai"):
        self.dataset = dataset
        self.path = data_file(pathlib.Path(directory))
        rows = _read_rows(self.path)
        trials: OrderedDict[str, list[int]] = OrderedDict()
        for row_index, row in enumerate(rows):
            trials.setdefault(str(row.get("trial_id")), []).append(row_index)
        self._rows = rows
        self._order = [(trial, step, row_index) for trial, indices in trials.items() for step, row_index in enumerate(indices)]

    def __len__(self) -> int:
        return len(self._order)

    def _field(self, row: dict, row_index: int, name: str) -> Any:
        if name not in row:
            raise BadRecordError(self.dataset, f"{self.path.name}:{row_index}", name, "missing")
        return row[name]

    def _float(self, row: dict, row_index: int, name: str) -> float:
        try:
            return float(self._field(row, row_index, name))
        except (TypeError, ValueError):
            raise BadRecordError(self.dataset, f"{self.path.name}:{row_index}", name, f"not a number: {row[name]!r}") from None

    def joint_actions(self) -> np.ndarray:
        """Joint action index of every sample, in sample order (no image decoding)."""
        return np.array([parse_joint_action(str(self._rows[row].get("joint_action")))[0] for _, _, row in self._order])

    def __getitem__(self, index: int) -> dict[str, Any]:
        trial, step, row_index = self._order[index]
        row, record = self._rows[row_index], f"{self.path.name}:{row_index}"
        try:
            image = decode_image(base64.b64decode(self._field(row, row_index, "state"), validate=True))
        except (binascii.Error, ValueError, OSError) as error:
            raise BadRecordError(self.dataset, record, "state", f"not a base64 image: {error}") from None
        joint, (p0, p1), known = parse_joint_action(str(self._field(row, row_index, "joint_action")))
        layout = str(self._field(row, row_index, "layout_name"))
        time_left, time_elapsed = self._float(row, row_index, "time_left"), self._float(row, row_index, "time_elapsed")
        return {
            "id": f"{trial}/{step}",
            "image": image,
            "state": None,
            "prompt": prompts.overcooked_prompt(layout, time_left, time_elapsed),
            "ground_truth": joint,
            "player_actions": np.array([p0, p1], np.int32),
            "joint_action_known": np.asarray(known),
            "joint_action_text": str(row["joint_action"]),
            "layout_name": layout,
            "time_left": np.float32(time_left),
            "time_elapsed": np.float32(time_elapsed),
            "trial_id": trial,
            "num_options": np.int32(NUM_JOINT_ACTIONS),
        }
