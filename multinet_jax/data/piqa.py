"""PIQA: two-choice physical commonsense questions (`goal`, `sol1`, `sol2`, `label`).

Two publisher formats:
- JSON Lines (`*.jsonl`, MultiNet's `piqa.jsonl` and PIQA's own release): one object per line; the
  label is the line's `label` field or, as in PIQA's release, the matching line of a
  `*labels.lst` file beside it. MultiNet's public sample ships without labels: such an unlabeled
  split loads with `ground_truth=None`; in a labeled split a row without a label is a bad record.
- Hugging Face `datasets.save_to_disk` (`data-*.arrow` Arrow IPC streams + `state.json` + `dataset_info.json`): the
  files `state.json`'s `_data_files` lists, in its order, as `datasets.load_from_disk` reads them. A listed file
  missing (a partial copy) or an unlisted `data-*.arrow` beside them (a stray copy would duplicate every row) is
  refused, naming the file. (`dataset_info.json`'s row count is not compared: `select` keeps the parent's.)
Options are [sol1, sol2]; the ground truth is the label (0 or 1) with `num_options=2`.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from multinet_jax import fingerprints
from multinet_jax.data import prompts
from multinet_jax.data.bad_records import BadRecordError, check_unique_ids
from multinet_jax.data.jsonl import read_json, read_json_lines

FIELDS = ("goal", "sol1", "sol2")


def _attach_labels(rows: list[tuple[str, dict]], labels_path: pathlib.Path) -> None:
    """Each row's label from the matching line of `labels_path`; a row's own `label` must agree with it (two
    sources that disagree would leave the accuracy to whichever won)."""
    lines = enumerate(labels_path.read_bytes().decode("utf-8", errors="replace").splitlines(), start=1)
    labels = [(number, line.strip()) for number, line in lines if line.strip()]
    if len(labels) != len(rows):
        raise ValueError(f"{labels_path}: {len(labels)} labels for {len(rows)} questions")
    for (where, row), (number, label) in zip(rows, labels):
        if label not in ("0", "1"):
            raise ValueError(f"{labels_path}:{number}: expected a label 0 or 1, got {label!r}")
        if "label" in row and row["label"] != int(label):
            raise ValueError(f"{labels_path}:{number}: label {label}, but record {where} holds label {row['label']!r}")
        row.setdefault("label", int(label))


def _listed_arrow_files(directory: pathlib.Path) -> list[pathlib.Path]:
    """The Arrow files `state.json` lists (`datasets.save_to_disk`'s record of the split's files), each present, and
    no other `data-*.arrow` beside them."""
    state_path = directory / "state.json"
    if not state_path.exists():
        raise FileNotFoundError(f"{state_path}: missing (datasets.save_to_disk lists a split's data-*.arrow files there)")
    state = read_json(state_path)
    entries = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(entries, list) or not entries or not all(  # names of files beside it, which the fingerprint covers
            isinstance(entry, dict) and isinstance(entry.get("filename"), str)
            and entry["filename"] == pathlib.PurePath(entry["filename"]).name and not entry["filename"].startswith(".")
            for entry in entries):
        raise ValueError(f"{state_path}: _data_files: expected a non-empty list of {{filename}} objects naming files beside it, "
                         f"got {entries!r}"[:300])
    listed = [directory / entry["filename"] for entry in entries]
    for path in listed:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing, though {state_path.name} lists it (a partly copied split)")
    unlisted = sorted(set(fingerprints.glob(directory, "data-*.arrow")) - set(listed))
    if unlisted:
        raise ValueError(f"{unlisted[0]}: not listed in {state_path.name}'s _data_files; remove it (its rows would be read "
                         "twice, or are another split's)")
    return listed


def _read_arrow(directory: pathlib.Path) -> list[tuple[str, dict]]:
    import pyarrow as pa

    paths = _listed_arrow_files(directory)
    rows = []
    for path in paths:
        try:
            with pa.ipc.open_stream(str(path)) as reader:
                table = reader.read_all()
        except (pa.ArrowException, OSError) as error:  # truncated, empty or not an Arrow stream
            raise ValueError(f"{path}: not a readable Arrow IPC stream ({type(error).__name__}: {error})") from None
        rows += [(f"{path.name}:{index}", row) for index, row in enumerate(table.to_pylist())]
    return rows


class PiqaSource:
    def __init__(self, directory: pathlib.Path, dataset: str = "piqa"):
        directory = pathlib.Path(directory)
        self.dataset = dataset
        jsonl = fingerprints.only(directory, "*.jsonl")  # one split, as MultiNet's PIQADataset reads one file
        if jsonl is not None:
            self._rows = read_json_lines(jsonl, dataset)
            labels = fingerprints.only(directory, "*labels.lst")
            if labels is not None:
                _attach_labels(self._rows, labels)
        elif fingerprints.glob(directory, "data-*.arrow") or (directory / "state.json").exists():
            self._rows = _read_arrow(directory)
        else:
            raise FileNotFoundError(f"{directory}: no PIQA *.jsonl or Hugging Face data-*.arrow files")
        self.labeled = any("label" in row for _, row in self._rows)
        check_unique_ids(dataset, ((record, row.get("id", record)) for record, row in self._rows))

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record, row = self._rows[index]
        for name in FIELDS:
            if not isinstance(row.get(name), str):
                raise BadRecordError(self.dataset, record, name, f"expected text, got {row.get(name)!r}")
        label = row.get("label")
        if self.labeled and (isinstance(label, bool) or label not in (0, 1)):
            raise BadRecordError(self.dataset, record, "label", f"expected 0 or 1, got {label!r}")
        return {
            "id": str(row.get("id", record)),
            "image": None,
            "state": None,
            "prompt": prompts.piqa_prompt(row["goal"], row["sol1"], row["sol2"]),
            "ground_truth": int(label) if self.labeled else None,
            "options": [row["sol1"], row["sol2"]],
            "num_options": np.int32(2),
        }
