"""Act2Answer items as the protocol's harness keeps them: `pairs.json` plus one candidate image per tile asset.

An item set is a folder (see `../shared/act2answer_reference/README.md`):

    <set>/pairs.json                       a JSON list of items
    <set>/shapes/<asset>/textured.glb      the harness's tile mesh; the candidate image is its texture
    <set>/images/<asset>.png|.jpg          or the candidate image itself (the generated sets use this)

An item: `left`, `right` (tile asset names), `question` (the knowledge question a VLM is asked), `answer`
("Left" / "Right", for the original layout), `knowledge_category`, `knowledge_instruction` (the question phrased as
a placement command: the episode's instruction; an item without one is refused, not run on its question), and
optionally `index` (the item id, unique in the set; default its position) and `left_label` / `right_label` /
`semantic_answer` (what the tiles show). Every item runs in two layouts: `original`
and `swapped` (tiles exchanged, so the answer flips).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import numpy as np

from multinet_jax import fingerprints
from multinet_jax.act2answer import glb
from multinet_jax.act2answer.geometry import LAYOUTS, TILE_NAMES
from multinet_jax.data.bad_records import BadRecordError
from multinet_jax.data.transforms import decode_image

PAIRS_FILE = "pairs.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_REQUIRED_TEXT = ("left", "right", "question", "knowledge_instruction", "knowledge_category")


@dataclasses.dataclass(frozen=True)
class Item:
    """One binary knowledge question with its two candidate tiles (original layout)."""

    item_id: str
    category: str
    question: str
    instruction: str
    assets: tuple[str, str]  # (left, right) tile assets
    labels: tuple[str | None, str | None]  # what each tile shows, when the set says
    answer: int  # 0 = left, 1 = right


@dataclasses.dataclass(frozen=True)
class Episode:
    """One item in one layout: what is on each tile and which tile is correct."""

    item: Item
    layout: str

    @property
    def swapped(self) -> bool:
        return self.layout == "swapped"

    @property
    def assets(self) -> tuple[str, str]:
        return self.item.assets[::-1] if self.swapped else self.item.assets

    @property
    def labels(self) -> tuple[str | None, str | None]:
        return self.item.labels[::-1] if self.swapped else self.item.labels

    @property
    def target(self) -> int:
        """Index of the correct tile in this layout (0 = left, 1 = right)."""
        return 1 - self.item.answer if self.swapped else self.item.answer

    @property
    def episode_id(self) -> str:
        return f"{self.item.item_id}/{self.layout}"


def read_pairs(set_dir: pathlib.Path, dataset: str) -> list[dict[str, Any]]:
    """The raw item objects of `<set_dir>/pairs.json` (validated one by one in `parse_item`)."""
    path = set_dir / PAIRS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{set_dir}: no {PAIRS_FILE} (an Act2Answer item set)")
    try:
        pairs = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(pairs, list):
        raise ValueError(f"{path}: expected a JSON list of items, got {type(pairs).__name__}")
    first: dict[str, int] = {}
    for position, raw in enumerate(pairs):
        item_id = str(raw.get("index", position)) if isinstance(raw, dict) else str(position)
        if item_id in first:  # ids name the episodes, their records and their first frames (<id>_<layout>.png)
            raise BadRecordError(dataset, f"{PAIRS_FILE}[{position}]", "index",
                                 f"item id {item_id!r} is also {PAIRS_FILE}[{first[item_id]}]'s; each item needs its own")
        first[item_id] = position
    return pairs


def parse_item(raw: Any, position: int, dataset: str) -> Item:
    """One `pairs.json` entry -> Item; a malformed entry is a BadRecordError naming the item and field."""
    record = f"{PAIRS_FILE}[{position}]"
    if not isinstance(raw, dict):
        raise BadRecordError(dataset, record, "<item>", f"expected a JSON object, got {type(raw).__name__}")
    for name in _REQUIRED_TEXT:
        if not isinstance(raw.get(name), str) or not raw[name].strip():
            raise BadRecordError(dataset, record, name, f"expected non-empty text, got {raw.get(name)!r}")
    answer = raw.get("answer")
    if not isinstance(answer, str) or answer.strip().lower() not in TILE_NAMES:
        raise BadRecordError(dataset, record, "answer", f"expected 'Left' or 'Right', got {answer!r}")
    labels = tuple(raw.get(f"{name}_label") for name in TILE_NAMES)
    for name, label in zip(TILE_NAMES, labels):
        if label is not None and not isinstance(label, str):
            raise BadRecordError(dataset, record, f"{name}_label", f"expected text, got {label!r}")
    item_id = raw.get("index", position)
    if isinstance(item_id, bool) or not isinstance(item_id, (int, str)):
        raise BadRecordError(dataset, record, "index", f"expected an integer or text id, got {item_id!r}")
    return Item(
        item_id=str(item_id),
        category=raw["knowledge_category"].strip(),
        question=raw["question"].strip(),
        instruction=raw["knowledge_instruction"].strip(),
        assets=(raw["left"], raw["right"]),
        labels=labels,
        answer=TILE_NAMES.index(answer.strip().lower()),
    )


def episodes_of(item: Item) -> list[Episode]:
    """Both layouts of an item, original first."""
    return [Episode(item, layout) for layout in LAYOUTS]


def candidate_path(set_dir: pathlib.Path, asset: str) -> pathlib.Path | None:
    """Where an asset's candidate image lives: the harness's `textured.glb`, else `images/<asset>.<png|jpg>`."""
    mesh = set_dir / "shapes" / asset / "textured.glb"
    if mesh.is_file():
        return mesh
    return next((path for suffix in IMAGE_SUFFIXES if (path := set_dir / "images" / f"{asset}{suffix}").is_file()), None)


def content_groups(set_dir: pathlib.Path, pairs: list[Any], dataset: str) -> dict[str, str]:
    """Item id -> a key of its content: the instruction and the two tile pictures (by content, in either order, so one
    item's swapped layout is another's original). Items sharing a key are one item under two ids: a probe keeps them
    in one fold, or it would train on one copy and test on the other (a random model's probe read 0.74 with the copies
    split, 0.38 with them together). Items that do not parse are keyed by their id (they are refused when read)."""
    groups = {}
    for position, raw in enumerate(pairs):
        try:
            item = parse_item(raw, position, dataset)
        except BadRecordError:
            groups[str(raw.get("index", position)) if isinstance(raw, dict) else str(position)] = f"unparsed {position}"
            continue
        pictures = sorted(fingerprints.file_sha256(path) if (path := candidate_path(set_dir, asset)) else f"asset {asset}"
                          for asset in item.assets)
        groups[item.item_id] = json.dumps([item.instruction, pictures])
    return groups


def candidate_image(set_dir: pathlib.Path, asset: str, dataset: str, record: str, field: str) -> np.ndarray:
    """uint8 [h, w, 3] candidate image of a tile asset; missing or corrupt is a BadRecordError."""
    path = candidate_path(set_dir, asset)
    if path is None:
        raise BadRecordError(dataset, record, field, f"no image for asset {asset!r}: expected "
                             f"shapes/{asset}/textured.glb or images/{asset}.png|.jpg in {set_dir}")
    try:
        data = glb.texture_bytes(path) if path.suffix == ".glb" else path.read_bytes()
        return decode_image(data)
    except (OSError, ValueError) as error:
        raise BadRecordError(dataset, record, field, f"{path}: {error}") from None
