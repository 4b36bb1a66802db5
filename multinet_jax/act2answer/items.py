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

A set no model could answer, or one that contradicts itself, is refused naming the item and field: both tiles one
asset (or one picture), an `answer` naming the tile whose label is not the `semantic_answer`, two items of one
instruction over the same two pictures whose answers pick different pictures, and `knowledge_category` spellings that
differ only by case or blanks ("Color", "color ": one category scored as two).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from multinet_jax import fingerprints
from multinet_jax.act2answer import glb
from multinet_jax.act2answer.geometry import LAYOUTS, TILE_NAMES
from multinet_jax.act2answer.names import spelling_clash, text_key
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
    _check_categories(pairs, dataset)
    _check_contents(set_dir, pairs, dataset)
    return pairs


def _check_categories(pairs: list[Any], dataset: str) -> None:
    clash = spelling_clash((position, raw["knowledge_category"]) for position, raw in enumerate(pairs)
                           if isinstance(raw, dict) and isinstance(raw.get("knowledge_category"), str))
    if clash is not None:
        position, earlier = clash
        raise BadRecordError(dataset, f"{PAIRS_FILE}[{position}]", "knowledge_category",
                             f"{pairs[position]['knowledge_category']!r}, but {PAIRS_FILE}[{earlier}] spells it "
                             f"{pairs[earlier]['knowledge_category']!r}: one category needs one spelling")


def _parsed(pairs: list[Any], dataset: str) -> Iterable[tuple[int, Item]]:
    """(position, item) of every entry that parses; the others are refused when read (`parse_item`)."""
    for position, raw in enumerate(pairs):
        try:
            yield position, parse_item(raw, position, dataset)
        except BadRecordError:
            continue


def _pictures(set_dir: pathlib.Path, item: Item) -> tuple[str, str]:
    """(left, right) pictures of an item by content (sha256); an asset without an image by its name (refused when
    read)."""
    left, right = (fingerprints.file_sha256(path) if (path := candidate_path(set_dir, asset)) else f"asset {asset}"
                   for asset in item.assets)
    return left, right


def _content_key(item: Item, pictures: tuple[str, str]) -> str:
    """The instruction and the two pictures in either order: one item's swapped layout is another's original."""
    return json.dumps([item.instruction, sorted(pictures)])


def _check_contents(set_dir: pathlib.Path, pairs: list[Any], dataset: str) -> None:
    """Both tiles of an item show different pictures, and items sharing a content key agree on the answer picture."""
    answers: dict[str, tuple[int, str]] = {}
    for position, item in _parsed(pairs, dataset):
        pictures = _pictures(set_dir, item)
        record = f"{PAIRS_FILE}[{position}]"
        if pictures[0] == pictures[1]:
            raise BadRecordError(dataset, record, "right", f"{item.assets[1]!r} shows the same picture as left "
                                 f"({item.assets[0]!r}): the item cannot be answered")
        first, answer = answers.setdefault(_content_key(item, pictures), (position, pictures[item.answer]))
        if answer != pictures[item.answer]:
            raise BadRecordError(dataset, record, "answer", f"{TILE_NAMES[item.answer].title()!r} picks the other "
                                 f"picture than {PAIRS_FILE}[{first}], the same instruction over the same two pictures")


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
    if raw["left"] == raw["right"]:
        raise BadRecordError(dataset, record, "right", f"{raw['right']!r}, the left tile's asset too: the item cannot "
                             "be answered")
    labels = tuple(raw.get(f"{name}_label") for name in TILE_NAMES)
    for field, value in (*((f"{name}_label", label) for name, label in zip(TILE_NAMES, labels)),
                         ("semantic_answer", raw.get("semantic_answer"))):
        if value is not None and not isinstance(value, str):
            raise BadRecordError(dataset, record, field, f"expected text, got {value!r}")
    target = TILE_NAMES.index(answer.strip().lower())
    semantic = raw.get("semantic_answer")
    if semantic is not None and None not in labels:
        shown = [text_key(label) == text_key(semantic) for label in labels]
        if shown.count(True) == 1 and not shown[target]:
            raise BadRecordError(dataset, record, "answer", f"{answer!r}, but semantic_answer {semantic!r} is "
                                 f"{TILE_NAMES[1 - target]}_label's: the answer contradicts the labels")
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
        answer=target,
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
    groups = {str(raw.get("index", position)) if isinstance(raw, dict) else str(position): f"unparsed {position}"
              for position, raw in enumerate(pairs)}
    for _, item in _parsed(pairs, dataset):
        groups[item.item_id] = _content_key(item, _pictures(set_dir, item))
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
