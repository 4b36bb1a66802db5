"""Host-side checks of raw records: what is bad input (an error) versus an invalid prediction (scored).

Ground truth is the benchmark's own data, so anything malformed there is an error naming the
record and field. Predictions come from a model, so malformed ones are *invalid predictions* that
MultiNet scores with its worst-case rules; deciding validity happens here, once, on the host.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping
from typing import Any, Sequence

import jax
import numpy as np


class RecordError(ValueError):
    """A record that cannot be scored: names the record (0-based index) and the field."""

    def __init__(self, index: int, field: str, problem: str):
        self.index = index
        self.field = field
        self.problem = problem
        super().__init__(f"record {index}: {self.describe(lambda other: f'record {other}')}")

    def describe(self, locate: Callable[[int], str]) -> str:
        """What is wrong, with other records named by `locate(index)` (a file's reader names lines)."""
        return f"field {self.field!r}: {self.problem}"


class DuplicateIdError(RecordError):
    """Two records with one id: scoring both would count that sample twice."""

    def __init__(self, index: int, first_index: int, sample_id: Any):
        self.first_index = first_index
        self.sample_id = sample_id
        super().__init__(index, "id", f"duplicate id {sample_id!r}")

    def describe(self, locate: Callable[[int], str]) -> str:
        return f"field 'id': duplicate id {self.sample_id!r}, first at {locate(self.first_index)}"


PADDING_ID_PROBLEM = ("null: the id of a padding row of `data.load(..., batch_size=...)` (its `_mask` is False), "
                      "which is no sample: drop the rows whose `_mask` is False")


def check_unique_ids(records: Sequence[Mapping[str, Any]]) -> None:
    """Every record's id is given and differs from the others' (ids compared as JSON values). A null id is refused:
    `data.load`'s batch padding has one, and a padding row scored would count a sample that does not exist."""
    first_seen: dict[str, int] = {}
    for index, record in enumerate(records):
        if require_field(record, index, "id") is None:
            raise RecordError(index, "id", PADDING_ID_PROBLEM)
        key = json.dumps(record["id"], sort_keys=True)
        if key in first_seen:
            raise DuplicateIdError(index, first_seen[key], record["id"])
        first_seen[key] = index


def is_integer(value: Any) -> bool:
    """What MultiNet's `isinstance(x, (int, np.integer))` accepts, but a bool: MultiNet's parsers never produced one,
    and JSON `true` in a predictions file is not the answer 1."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """What MultiNet's action validator accepts as one action value (no strings, no None), but a bool (`is_integer`)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A number (`is_number`) float64 holds finitely: a JSON integer past its range (10**400) is not, as 1e400 is not."""
    if isinstance(value, int) and is_number(value):
        return abs(value) <= _LARGEST_FLOAT_INTEGER  # math.isfinite would raise on it
    return is_number(value) and math.isfinite(value)


_LARGEST_FLOAT_INTEGER = int(sys.float_info.max)


_ARRAYS = (np.ndarray, np.generic, jax.Array)
_JSON_SCALARS = frozenset({int, float, str, bool, type(None)})


def _holds_array(value: Any) -> bool:
    """Whether `value` holds something its JSON line would hold otherwise: an array, a numpy or jax scalar, a tuple."""
    if isinstance(value, list):  # a list of JSON scalars (every action row) is told by its element types, in C
        return not _JSON_SCALARS.issuperset(map(type, value)) and any(map(_holds_array, value))
    if isinstance(value, dict):
        return any(map(_holds_array, value.values()))
    return isinstance(value, (*_ARRAYS, tuple))


def _as_json(value: Any) -> Any:
    if isinstance(value, _ARRAYS):
        return np.asarray(value).tolist()
    if isinstance(value, dict):
        return {key: _as_json(item) for key, item in value.items()}
    return [_as_json(item) for item in value] if isinstance(value, (list, tuple)) else value


def as_written(records: Sequence[Any]) -> list[Any]:
    """`records` as their JSON lines read back: numpy and jax arrays and scalars (a model's outputs as they come, e.g.
    a `jnp.argmax`) as lists and Python numbers, tuples as lists. MultiNet's validity rules were written for what JSON holds, and a
    jax scalar is no `int` to them: without this an in-memory record would score otherwise than its line in a
    predictions file (every jax prediction invalid). Records holding no array are returned as they are."""
    return [{key: _as_json(value) for key, value in record.items()}
            if isinstance(record, Mapping) and any(map(_holds_array, record.values())) else record
            for record in records]


def as_numpy(values: Any) -> Any:
    """`values` as the `pack_*` functions read them: a jax array as a numpy one, and the jax items of a list or tuple
    (a model's rows or `jnp.argmax`es) as numpy arrays and scalars. Their validity rules go by type (MultiNet's
    `isinstance` checks), and to them a jax array is no ndarray and a jax scalar no number: without this every jax
    prediction would count invalid. Anything else is returned as it is."""
    if isinstance(values, jax.Array):
        return np.asarray(values)
    if isinstance(values, (list, tuple)) and any(issubclass(kind, jax.Array) for kind in set(map(type, values))):
        return [np.asarray(value)[()] if isinstance(value, jax.Array) else value for value in values]
    return values


def require_field(record: Any, index: int, field: str) -> Any:
    if not isinstance(record, Mapping):
        raise RecordError(index, field, f"record is a {type(record).__name__}, expected a JSON object")
    if field not in record:
        raise RecordError(index, field, "missing")
    return record[field]


def fields(records: Sequence[Mapping[str, Any]], field: str) -> list[Any]:
    """`record[field]` for every record, failing on the first one that lacks it."""
    try:
        return [record[field] for record in records]
    except (KeyError, TypeError, IndexError):
        return [require_field(record, index, field) for index, record in enumerate(records)]


# The keys of a MultiNet eval-harness adapter's output (`scripts/eval_harness/evaluate.py`), which its calculators
# score by `extracted_outputs`: a record holding one as its prediction was not unwrapped.
HARNESS_OUTPUT_KEYS = ("raw_output", "extracted_outputs")


def check_no_harness_outputs(predictions: Sequence[Any]) -> None:
    """A prediction that is a MultiNet harness output (`{"raw_output", "extracted_outputs"}`) is refused: scored as it
    is, every one would count as an invalid prediction, where MultiNet scores its `extracted_outputs`."""
    # A generator over the list: ~0.1 s per million predictions (a JSON object reads as a dict).
    index = next((index for index, prediction in enumerate(predictions)
                  if isinstance(prediction, dict) and HARNESS_OUTPUT_KEYS[1] in prediction), None)
    if index is not None:
        raise RecordError(index, "prediction", f"a MultiNet harness output (keys {sorted(predictions[index])}); put its "
                                               f"{HARNESS_OUTPUT_KEYS[1]!r} in 'prediction' (what MultiNet's "
                                               f"calculators score) and its {HARNESS_OUTPUT_KEYS[0]!r} in 'raw_output'")


def integer_ground_truth(values: Sequence[Any], num_classes: int | Sequence[int], field: str = "ground_truth") -> np.ndarray:
    """Class indices (the records' `field`) as int64, each checked to lie in [0, num_classes)."""
    limits = [num_classes] * len(values) if isinstance(num_classes, int) else num_classes
    for index, (value, limit) in enumerate(zip(values, limits)):
        if not is_integer(value) or not 0 <= value < limit:
            raise RecordError(index, field, f"expected an integer in [0, {limit}), got {value!r}")
    return np.asarray(values, dtype=np.int64).reshape(len(values))
