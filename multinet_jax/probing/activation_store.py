"""Activations on disk, per split: written batch by batch beside the run, resumable, read back as probe features.

Layout: `<directory>/batch_<first sample index, 8 digits>.npz`, one file per model batch, each holding the batch's
valid rows: `sample_index` int64 `[b]`, `id`, `item_id`, `layout`, `category` (text `[b]`), `label` int64 `[b]` and
one float array `[b, layers, width]` per captured stream (e.g. `prefix_last`, `prefix_mean`, `action_mean`). A file
is written to a temporary name, fsynced and renamed, so a killed run leaves whole batches only; `resume_index` says
where to continue, and `read` checks that the batches cover samples 0..n-1 exactly once, that every array of a batch
holds one row per sample index with the first batch's trailing shape, and that the streams are finite.
"""

from __future__ import annotations

import os
import pathlib
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

TEXT_FIELDS = ("id", "item_id", "layout", "category")
ROW_FIELDS = (*TEXT_FIELDS, "label", "sample_index")  # every other array is a captured stream
_PREFIX = "batch_"


class ActivationError(ValueError):
    """An activations folder that does not hold one contiguous run; the message names the file."""


def _batches(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(directory.glob(f"{_PREFIX}*.npz"))


def write_batch(directory: str | pathlib.Path, rows: Mapping[str, Any]) -> pathlib.Path:
    """One batch's valid rows: `sample_index`, the text fields, `label` and the activation arrays."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sample_index = np.asarray(rows["sample_index"], np.int64)
    arrays = {"sample_index": sample_index, "label": np.asarray(rows["label"], np.int64)}
    arrays.update({field: np.asarray([str(value) for value in rows[field]], dtype=str) for field in TEXT_FIELDS})
    arrays.update({name: np.asarray(value) for name, value in rows.items() if name not in arrays})
    path = directory / f"{_PREFIX}{int(sample_index[0]):08d}.npz"
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as file:
        np.savez(file, **arrays)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    return path


def resume_index(directory: str | pathlib.Path) -> int:
    """How many samples (0..n-1) the folder already holds, checked to be contiguous."""
    directory = pathlib.Path(directory)
    return len(read(directory)["label"]) if directory.is_dir() and _batches(directory) else 0


def _check_array(path: pathlib.Path, name: str, array: np.ndarray, rows: int, trailing: tuple[int, ...] | None) -> None:
    """One row per sample index, the first batch's trailing shape (`trailing`; None: this is the first batch) and,
    for a stream, finite values: concatenated, a batch one row short followed by one a row long would otherwise put
    every feature in between beside the next sample's label, and a NaN would surface later without its batch."""
    if array.ndim == 0 or array.shape[0] != rows:
        raise ActivationError(f"{path}: array {name!r} has shape {array.shape}, not one row per sample index ({rows})")
    if trailing is not None and array.shape[1:] != trailing:
        raise ActivationError(f"{path}: array {name!r} has rows of shape {array.shape[1:]}, the first batch's have "
                              f"{trailing}")
    if name in ROW_FIELDS:
        return
    if not np.issubdtype(array.dtype, np.number):
        raise ActivationError(f"{path}: stream {name!r} holds {array.dtype} values, not numbers")
    if not np.all(np.isfinite(array)):
        raise ActivationError(f"{path}: stream {name!r} holds NaN or inf values (the first at index "
                              f"{np.argwhere(~np.isfinite(array))[0].tolist()})")


def read(directory: str | pathlib.Path, streams: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Every batch concatenated in sample order; fails on a gap, an overlap, a batch missing a stream and an array
    whose rows disagree with its batch's sample indices or the first batch's shape, or a stream that is not finite."""
    directory = pathlib.Path(directory)
    files = _batches(directory)
    if not files:
        raise ActivationError(f"{directory}: no {_PREFIX}*.npz activation batches")
    keep = None if streams is None else {*ROW_FIELDS, *streams}
    names: list[str] | None = None
    parts: dict[str, list[np.ndarray]] = {}
    expected_next = 0
    for path in files:
        try:
            with np.load(path, allow_pickle=False) as batch:
                indices = batch["sample_index"]
                if indices.size == 0 or not np.array_equal(indices, np.arange(expected_next, expected_next + indices.size)):
                    raise ActivationError(f"{path}: holds samples {indices[:3].tolist()}..., expected to start at {expected_next}")
                if names is None:
                    names = [name for name in batch.files if keep is None or name in keep]
                missing = [name for name in names if name not in batch.files]
                if missing:
                    raise ActivationError(f"{path}: no array {missing[0]!r} (the first batch has it)")
                for name in names:
                    array = batch[name]
                    _check_array(path, name, array, indices.size, parts[name][0].shape[1:] if name in parts else None)
                    parts.setdefault(name, []).append(array)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:  # a truncated or foreign file
            if isinstance(error, ActivationError):
                raise
            raise ActivationError(f"{path}: not a readable activations batch ({type(error).__name__}: {error}); remove it "
                                  "and resume") from None
        expected_next += indices.size
    for name in streams or ():
        if name not in parts:
            raise ActivationError(f"{directory}: no stream {name!r} (has {sorted(set(parts) - set(ROW_FIELDS))})")
    return {name: np.concatenate(values) for name, values in parts.items()}
