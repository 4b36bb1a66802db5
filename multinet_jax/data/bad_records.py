"""Bad-record reporting shared by every source: what went wrong, where, and the skip/fail policy.

A record that cannot be turned into a sample (corrupt image, missing field, wrong dtype) is never
dropped silently: sources raise `BadRecordError` naming the dataset, the record and the field, and
the pipeline either re-raises it (`on_bad_record="fail"`) or logs it, counts it and yields a
placeholder that batches mark invalid (`on_bad_record="skip"`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

ON_BAD_RECORD_CHOICES = ("fail", "skip")


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """One record that could not be decoded."""

    dataset: str
    record: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.dataset}: record {self.record}: field {self.field!r}: {self.reason}"


class BadRecordError(ValueError):
    """A record of `dataset` is unusable; `record` locates it (file:line, shard/step, index)."""

    def __init__(self, dataset: str, record: str, field: str, reason: str):
        self.bad_record = BadRecord(dataset, str(record), field, reason)
        super().__init__(str(self.bad_record))


def check_on_bad_record(on_bad_record: str) -> str:
    if on_bad_record not in ON_BAD_RECORD_CHOICES:
        raise ValueError(f"on_bad_record must be one of {ON_BAD_RECORD_CHOICES}, got {on_bad_record!r}")
    return on_bad_record


def log_skipped(bad: BadRecord) -> None:
    logging.warning("skipping bad record: %s", bad)


def check_unique_ids(dataset: str, located_ids: Iterable[tuple[str, Any]]) -> None:
    """Every sample's id (given with its record's location) differs from the others': a duplicate would be scored
    twice, or refused by `score` only after the whole domain ran."""
    first: dict[str, str] = {}
    for record, sample_id in located_ids:
        if str(sample_id) in first:
            raise BadRecordError(dataset, record, "id", f"duplicate id {str(sample_id)!r}, first at {first[str(sample_id)]}")
        first[str(sample_id)] = record
