"""JSON and JSON Lines reading shared by the sources: a file that is not UTF-8 JSON is named, and every JSON Lines
line is located for error reports."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from multinet_jax.data.bad_records import BadRecordError


def read_json(path: pathlib.Path) -> Any:
    """The JSON value of a whole file; a file that is not UTF-8 JSON (truncated, empty, another encoding) is a
    ValueError naming it."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def read_json_lines(path: pathlib.Path, dataset: str) -> list[tuple[str, dict]]:
    """[("<file>:<line>", object)] for every non-blank line; a line that is not a UTF-8 JSON object is a BadRecordError."""
    rows = []
    for line_number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        record = f"{path.name}:{line_number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadRecordError(dataset, record, "<line>", f"not UTF-8 text ({error.reason} at byte {error.start})") from None
        if line.strip():
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise BadRecordError(dataset, record, "<line>", f"invalid JSON: {error}") from None
            if not isinstance(value, dict):
                raise BadRecordError(dataset, record, "<line>", f"expected a JSON object, got {type(value).__name__}")
            rows.append((record, value))
    return rows
