"""Overcooked-AI human-human trials in MultiNet's format: a pickle (list of row dicts), read safely, or a CSV.

Columns as in overcooked_ai's `2020_hh_trials_*`: `state` is a base64 PNG of the game screen,
`joint_action` a Python literal like `[[0, -1], "interact"]`, plus `layout_name`, `trial_id`,
`time_left`, `time_elapsed`, ... (all strings in MultiNet's files). Rows are grouped by `trial_id`
(trials in order of first appearance, rows in file order within a trial), as MultiNet does.

Each player's action maps to NORTH (0,-1)=0, SOUTH (0,1)=1, EAST (1,0)=2, WEST (-1,0)=3,
STAY (0,0)=4, "interact"=5; the joint action is 6 * p0 + p1 (36 options, MultiNet's
`definitions/overcooked.py` order). MultiNet's `_convert_joint_action_to_discrete`
(`src/data_utils/overcooked_dataloader.py`, d6fe80e, lines 76-109) maps "interact" and [1, 1] to INTERACT, and
falls back to STAY for a player's move that is not a list or tuple and to (STAY, STAY) = 28 for a joint action
that is not a two-item list or holds a move outside the six (`parse_joint_action` reproduces it, `known=False`).
Here a row that needs a fallback is a bad record, as one that is not a Python literal is (MultiNet raised there):
scoring a model against a guessed ground truth is silently wrong, and every joint action of MultiNet's published
trials maps without one. `time_left` and `time_elapsed` must be seconds in [0, 86400], and `trial_id` present (MultiNet
raised KeyError without it). These fields are checked for every row when the file opens, so bad data is refused
before any sample is read.
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

from multinet_jax import fingerprints
from multinet_jax.data import prompts, safe_pickle
from multinet_jax.data.bad_records import BadRecordError
from multinet_jax.data.transforms import decode_image

MOVES = {(0, -1): 0, (0, 1): 1, (1, 0): 2, (-1, 0): 3, (0, 0): 4, (1, 1): 5}
STAY, INTERACT = (0, 0), (1, 1)
UNKNOWN_JOINT_ACTION = 6 * MOVES[STAY] + MOVES[STAY]
NUM_JOINT_ACTIONS = 36
MAX_JOINT_ACTION_CHARS = 64
MAX_SECONDS = 24 * 3600  # `time_left` / `time_elapsed`: a trial lasts minutes


def _player_move(action: Any) -> tuple[Any, bool]:
    """(the move as MultiNet keyed it, whether it was a move): "interact" -> (1, 1); not a list or tuple -> STAY."""
    if action == "interact":
        return INTERACT, True
    if not isinstance(action, (list, tuple)):
        return STAY, False
    return tuple(action), True


def parse_joint_action(text: str) -> tuple[int, tuple[int, int], bool]:
    """(joint index, (p0, p1) indices, known: no fallback applied) by MultiNet's rules (module docstring).

    Raises ValueError when `text` is not a Python literal. The longest real joint action, `["interact", "interact"]`,
    has 22 characters: a text longer than 64 is refused unparsed (`literal_eval` of a huge or deeply nested
    literal costs unbounded memory and recursion).
    """
    try:
        if len(text) > MAX_JOINT_ACTION_CHARS:
            raise ValueError(f"longer than {MAX_JOINT_ACTION_CHARS} characters")
        actions = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
        raise ValueError(f"not a joint action literal {text[:80]!r} ({type(error).__name__})") from None
    if not isinstance(actions, list) or len(actions) != 2:
        return UNKNOWN_JOINT_ACTION, (MOVES[STAY], MOVES[STAY]), False
    (p0, p0_known), (p1, p1_known) = (_player_move(action) for action in actions)
    try:
        indices = MOVES[p0], MOVES[p1]
    except (KeyError, TypeError):  # a move outside the six (an unhashable one too)
        return UNKNOWN_JOINT_ACTION, (MOVES[STAY], MOVES[STAY]), False
    return 6 * indices[0] + indices[1], indices, p0_known and p1_known


def _read_rows(path: pathlib.Path) -> list[dict[str, Any]]:
    if path.suffix == ".pickle":
        rows = safe_pickle.load(path)  # data, not code: only lists, dicts, strings and numbers
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ValueError(f"{path}: expected a pickled list of row dicts, got {type(rows).__name__}")
        return rows
    try:  # utf-8-sig: a byte order mark (Excel's UTF-8 CSVs) would otherwise be part of the first column's name
        with path.open(newline="", encoding="utf-8-sig") as file:
            return list(csv.DictReader(file))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def read_trials(directory: pathlib.Path) -> tuple[pathlib.Path, list[dict[str, Any]]]:
    """(the trials file, its rows): the pickle when there is one (the file MultiNet's
    `data_finder._find_overcooked_pickles` reads), else the CSV. A CSV beside the pickle must hold the same rows
    (compared as text, as the CSV stores them): one that differs is refused rather than ignored, since which of the
    two was meant would be a guess."""
    pickle_path, csv_path = fingerprints.only(directory, "*.pickle"), fingerprints.only(directory, "*.csv")
    if pickle_path is None and csv_path is None:
        raise FileNotFoundError(f"{directory}: no Overcooked-AI *.pickle or *.csv")
    path = pickle_path or csv_path
    rows = _read_rows(path)
    if pickle_path is not None and csv_path is not None:
        as_text = [{name: str(value) for name, value in row.items()} for row in rows]
        if as_text != _read_rows(csv_path):
            raise ValueError(f"{csv_path}: holds other rows than {pickle_path.name} beside it (MultiNet reads the "
                             "pickle); remove the one not meant")
    return path, rows


# `overcooked_inference.py --batch_size`'s default, the batches MultiNet's statistics were accumulated over.
MULTINET_BATCH_SIZE = 5


class OvercookedSource:
    """Random access to Overcooked timesteps in trial-grouped order."""

    def __init__(self, directory: pathlib.Path, dataset: str = "overcooked_ai"):
        self.dataset = dataset
        self.path, rows = read_trials(pathlib.Path(directory))
        trials: OrderedDict[str, list[int]] = OrderedDict()
        for row_index, row in enumerate(rows):  # no trial_id: MultiNet's grouping raised KeyError
            trials.setdefault(str(self._field(row, row_index, "trial_id")), []).append(row_index)
        self._rows = rows
        self._order = [(trial, step, row_index) for trial, indices in trials.items() for step, row_index in enumerate(indices)]
        for row_index, row in enumerate(rows):  # every field but the image, before any sample is read: cheap, and a
            self._joint_action(row_index)  # bad one refuses the data at once (`data` and `eval` alike)
            self._seconds(row, row_index, "time_left")
            self._seconds(row, row_index, "time_elapsed")

    def __len__(self) -> int:
        return len(self._order)

    def _field(self, row: dict, row_index: int, name: str) -> Any:
        if name not in row:
            raise BadRecordError(self.dataset, f"{self.path.name}:{row_index}", name, "missing")
        return row[name]

    def _seconds(self, row: dict, row_index: int, name: str) -> float:
        try:
            value = float(self._field(row, row_index, name))
        except (TypeError, ValueError):
            raise BadRecordError(self.dataset, f"{self.path.name}:{row_index}", name, f"not a number: {row[name]!r}") from None
        if not 0 <= value <= MAX_SECONDS:
            raise BadRecordError(self.dataset, f"{self.path.name}:{row_index}", name,
                                 f"{row[name]!r} is not a number of seconds in [0, {MAX_SECONDS}]")
        return value

    def _joint_action(self, row_index: int) -> tuple[int, tuple[int, int]]:
        """(joint index, player indices) of a row; a joint action MultiNet would have mapped by a fallback, or could
        not parse, is a bad record (module docstring)."""
        row, record = self._rows[row_index], f"{self.path.name}:{row_index}"
        text = str(self._field(row, row_index, "joint_action"))
        try:
            joint, players, known = parse_joint_action(text)
        except ValueError as error:
            raise BadRecordError(self.dataset, record, "joint_action", str(error)) from None
        if not known:
            raise BadRecordError(self.dataset, record, "joint_action", f"{text[:80]!r} is not two moves of {list(MOVES)} "
                                 f"or 'interact' (MultiNet would have scored it as {joint})")
        return joint, players

    def joint_actions(self) -> np.ndarray:
        """Joint action index of every sample, in sample order (no image decoding)."""
        return np.array([self._joint_action(row)[0] for _, _, row in self._order])

    def multinet_batches(self) -> list[np.ndarray]:
        """The joint action indices `[n, 1]` of the batches MultiNet's Pi0 script accumulated its statistics over: its
        `StreamingLayoutBatchSampler` (`overcooked_dataloader.py`) cuts each run of one layout, in sample order, into
        batches of `MULTINET_BATCH_SIZE`, the tail of a run its own batch."""
        actions = self.joint_actions()
        layouts = [str(self._field(self._rows[row], row, "layout_name")) for _, _, row in self._order]
        batches, start = [], 0
        for end in range(1, len(layouts) + 1):
            if end == len(layouts) or layouts[end] != layouts[start]:
                batches += [actions[first:min(first + MULTINET_BATCH_SIZE, end), None]
                            for first in range(start, end, MULTINET_BATCH_SIZE)]
                start = end
        return batches

    def __getitem__(self, index: int) -> dict[str, Any]:
        trial, step, row_index = self._order[index]
        row, record = self._rows[row_index], f"{self.path.name}:{row_index}"
        state = self._field(row, row_index, "state")  # outside the try: its own error is not a decoding one
        try:
            image = decode_image(base64.b64decode(state, validate=True))
        except (binascii.Error, ValueError, OSError) as error:
            raise BadRecordError(self.dataset, record, "state", f"not a base64 image: {error}") from None
        joint, (p0, p1) = self._joint_action(row_index)
        layout = str(self._field(row, row_index, "layout_name"))
        time_left, time_elapsed = self._seconds(row, row_index, "time_left"), self._seconds(row, row_index, "time_elapsed")
        return {
            "id": f"{trial}/{step}",
            "image": image,
            "state": None,
            "prompt": prompts.overcooked_prompt(layout, time_left, time_elapsed),
            # MultiNet's VLM instruction (what its Magma script asked, from the stripped layout name and the seconds
            # as read): the question of a protocol whose chat reads this field (`domains.Chat.question_field`)
            prompts.INSTRUCTION_PROMPT: prompts.overcooked_instruction_prompt(layout.strip(), time_left, time_elapsed),
            "ground_truth": joint,
            "player_actions": np.array([p0, p1], np.int32),
            "joint_action_text": str(row["joint_action"]),
            "layout_name": layout,
            "time_left": np.float32(time_left),
            "time_elapsed": np.float32(time_elapsed),
            "trial_id": trial,
            "num_options": np.int32(NUM_JOINT_ACTIONS),
        }
