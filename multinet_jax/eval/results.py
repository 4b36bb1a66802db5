"""Append-only, resumable per-sample predictions: `predictions/<domain>.jsonl`.

One JSON object per line, in the domain's sample order, with `id`, `sample_index`, `raw_output`,
`prediction`, `ground_truth` (+ `num_options` for ODinW): exactly the `multinet-jax score` input.
Every batch is written, flushed and fsynced before the next one is computed, so a run killed at any
moment (kill -9, a preempted spot VM) loses at most the batch in flight and leaves at worst one torn
last line, which `read_completed` drops. Resuming then continues at the first missing sample.

Multi-host: every process computes records for its own data shard; `gather_records` moves them to
process 0 as JSON bytes (one `process_allgather` of lengths, one of fixed-size byte buffers), and only
process 0 owns a `PredictionWriter`. `OrderedRecords` restores the global sample order before writing.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

Record = dict[str, Any]


class ResultsError(ValueError):
    """A predictions file that cannot be resumed (corrupt line, ids out of the domain's order)."""


def _json_default(value: Any) -> Any:
    """Numpy scalars/arrays become plain JSON; anything else is a bug in the caller."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    raise TypeError(f"cannot write {type(value).__name__} to a predictions file: {value!r}")


def _finite_or_none(value: Any) -> Any:
    """NaN/inf are not JSON; a non-finite model output value (a FAST chunk that did not decode) is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite_or_none(item) for item in value]
    return value


def encode_record(record: Record) -> bytes:
    """One JSONL line (with its newline) for a record; strict JSON, keys in a fixed order."""
    plain = json.loads(json.dumps(record, default=_json_default))
    for field in ("raw_output", "prediction"):
        plain[field] = _finite_or_none(plain.get(field))
    return (json.dumps(plain, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def read_completed(path: pathlib.Path) -> list[Record]:
    """Records already in `path`, truncating a torn last line (a write cut by kill -9).

    Only the final line may be incomplete (no newline, or not JSON); a bad line before it means the
    file was edited or corrupted, and resuming on top of it would hide that, so it is an error.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    complete_length = data.rfind(b"\n") + 1
    records = []
    for line_number, line in enumerate(data[:complete_length].splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ResultsError(f"{path}: line {line_number} is not JSON ({error}); remove the file or fix the line") from None
        for field in ("id", "sample_index", "prediction", "ground_truth"):
            if field not in record:
                raise ResultsError(f"{path}: line {line_number} has no {field!r} field; not a predictions file")
        if record["sample_index"] != line_number - 1:
            raise ResultsError(
                f"{path}: line {line_number} has sample_index {record['sample_index']}, expected {line_number - 1}; "
                "the file is not in sample order (was it written by another tool or merged by hand?)"
            )
        records.append(record)
    if complete_length < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(complete_length)
    return records


# Fields a record copies from its sample that scoring reads besides the ground truth (ODinW's options and subset,
# Act2Answer's category and layout): a resume compares them with the data as it does the ground truth.
DATA_FIELDS = ("num_options", "subset", "category", "layout")
_REDO = "use a new --output_dir, or remove the file to redo the domain"


def check_resumed_sample(path: pathlib.Path, completed: Sequence[Record], sample_index: int, sample_id: str,
                         ground_truth: Any, data_fields: Mapping[str, Any]) -> None:
    """A resumed sample must have the id, ground truth and `data_fields` (its values of `DATA_FIELDS`, those its record
    holds: Overcooked's samples have a layout its records do not) the file holds at its index, or the data (or the
    file) changed."""
    written = completed[sample_index]
    if written["id"] != sample_id:
        raise ResultsError(
            f"{path}: line {sample_index + 1} has id {written['id']!r} but the dataset's sample {sample_index} is "
            f"{sample_id!r}; the data, --limit order or domain changed since this file was written ({_REDO})"
        )
    expected = {"ground_truth": ground_truth, **{field: value for field, value in data_fields.items() if field in written}}
    for field, value in expected.items():
        if written.get(field) != json.loads(json.dumps(value, default=_json_default)):
            raise ResultsError(
                f"{path}: line {sample_index + 1} (id {sample_id!r}) holds another {field} than the dataset's sample "
                f"({written.get(field)!r}, the data's {value!r}); the data or the file changed since it was written, or this "
                f"version reads the {field} otherwise (e.g. openx_wheeled_robot's float64 actions, once rounded to "
                f"float32) ({_REDO})"
            )


class PredictionWriter:
    """Appends records in order; each `write` is flushed and fsynced before it returns.

    The file is opened on the first non-empty write, so a run that fails before producing a
    prediction leaves no (empty, misleading) predictions file behind.
    """

    def __init__(self, path: pathlib.Path, *, next_index: int):
        self.path = path
        self.next_index = next_index
        self._handle: Any = None

    def write(self, records: Iterable[Record]) -> None:
        lines = []
        for record in records:
            if record["sample_index"] != self.next_index:
                raise ResultsError(
                    f"{self.path}: record {record['id']!r} has sample_index {record['sample_index']}, "
                    f"expected {self.next_index} (records must arrive in sample order)"
                )
            lines.append(encode_record(record))
            self.next_index += 1
        if lines:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = open(self.path, "ab")
            self._handle.write(b"".join(lines))
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class OrderedRecords:
    """Holds records that arrive out of order (other hosts' shards) until their turn comes."""

    def __init__(self, next_index: int):
        self.next_index = next_index
        self._pending: list[tuple[int, Record]] = []

    def add(self, records: Iterable[Record]) -> list[Record]:
        """Adds records; returns the ones that now extend the in-order prefix."""
        for record in records:
            heapq.heappush(self._pending, (record["sample_index"], record))
        ready = []
        while self._pending and self._pending[0][0] == self.next_index:
            ready.append(heapq.heappop(self._pending)[1])
            self.next_index += 1
        return ready

    def leftover(self) -> list[int]:
        """Sample indices still waiting for a predecessor (non-empty only when samples are missing)."""
        return sorted(index for index, _ in self._pending)


def gather_records(records: list[Record], *, has_more: bool, failure: Exception | None = None) -> tuple[list[Record], bool]:
    """All processes' records of this step on every process, and whether any process has more batches.

    Collective: every process must call it the same number of times, which is why a process whose
    shard is exhausted keeps calling it with no records until every process reports `has_more=False`.
    Records travel as UTF-8 JSON in a byte buffer padded to the longest one (fixed shapes per call).
    `failure`: this process's error at this step (a broken record of its shard, ...): then every process raises here,
    the failing one its own error and the others a ResultsError naming it, so that all leave the domain at the same
    step and none is left waiting in a gather the failing one never joins.
    """
    import jax
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        if failure is not None:
            raise failure
        return records, has_more
    content = records if failure is None else f"{type(failure).__name__}: {failure}"
    payload = np.frombuffer(json.dumps(content, default=_json_default).encode("utf-8"), dtype=np.uint8)
    header = np.array([payload.size, int(has_more), int(failure is not None)], dtype=np.int64)
    headers = np.asarray(multihost_utils.process_allgather(header))
    padded = np.zeros(int(headers[:, 0].max()), dtype=np.uint8)
    padded[: payload.size] = payload
    buffers = np.asarray(multihost_utils.process_allgather(padded))
    contents = [json.loads(buffer[: int(length)].tobytes().decode("utf-8")) for length, buffer in zip(headers[:, 0], buffers)]
    if failure is not None:
        raise failure
    if headers[:, 2].any():
        process = int(np.flatnonzero(headers[:, 2])[0])
        raise ResultsError(f"process {process} failed this domain: {contents[process]}")
    return [record for content in contents for record in content], bool(headers[:, 1].any())
