"""A small procedurally generated Act2Answer item set (color, shape, counting), drawn with Pillow.

Written in the protocol's item format (`items.py`): `pairs.json` and `images/<asset>.png`, so everything that reads
a real item set reads this one. Deterministic for a seed. The questions are easy for a person and carry no
published numbers: the set exists for the demo and the tests, not as a benchmark.

    write_item_set("data/act2answer/public", items_per_category=4)   # 12 items, 24 episodes
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from multinet_jax.act2answer.items import PAIRS_FILE

CANDIDATE_SIZE = 128
_BACKGROUND = (250, 250, 245)
_COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220),
    "yellow": (240, 210, 30), "orange": (245, 140, 20), "purple": (140, 50, 180),
}
_SHAPES = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6, "circle": 0}
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (CANDIDATE_SIZE, CANDIDATE_SIZE), _BACKGROUND)
    return image, ImageDraw.Draw(image)


def _polygon(draw: ImageDraw.ImageDraw, corners: int, colour: tuple[int, int, int], radius: float = 50) -> None:
    centre = CANDIDATE_SIZE / 2
    if corners == 0:
        draw.ellipse([centre - radius, centre - radius, centre + radius, centre + radius], fill=colour)
        return
    start = -math.pi / 2 + (math.pi / corners if corners % 2 == 0 else 0)
    points = [(centre + radius * math.cos(start + 2 * math.pi * k / corners),
               centre + radius * math.sin(start + 2 * math.pi * k / corners)) for k in range(corners)]
    draw.polygon(points, fill=colour)


def _colour_picture(name: str) -> np.ndarray:
    image, draw = _canvas()
    _polygon(draw, 0, _COLOURS[name])
    return np.asarray(image)


def _shape_picture(name: str) -> np.ndarray:
    image, draw = _canvas()
    _polygon(draw, _SHAPES[name], (60, 60, 60))
    return np.asarray(image)


def _dots_picture(count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` black dots at random non-overlapping places."""
    image, draw = _canvas()
    cells = rng.permutation(9)[:count]  # a 3 x 3 grid of cells, one dot per chosen cell
    for cell in cells:
        x, y = 22 + 42 * (cell % 3) + rng.integers(-4, 5), 22 + 42 * (cell // 3) + rng.integers(-4, 5)
        draw.ellipse([x - 11, y - 11, x + 11, y + 11], fill=(20, 20, 20))
    return np.asarray(image)


def _colour_item(target: str, other: str, rng: np.random.Generator) -> dict:
    del rng
    return {"question": f"Which tile shows the color {target}?",
            "knowledge_instruction": f"Place the cube on the {target} tile.",
            "labels": (target, other), "pictures": (_colour_picture(target), _colour_picture(other))}


def _shape_item(target: str, other: str, rng: np.random.Generator) -> dict:
    del rng
    corners = _SHAPES[target]
    description = f"a shape with {_NUMBER_WORDS[corners]} corners" if corners else "a shape with no corners"
    return {"question": f"Which tile shows {description}?",
            "knowledge_instruction": f"Place the cube on the {description.removeprefix('a ')}.",
            "labels": (target, other), "pictures": (_shape_picture(target), _shape_picture(other))}


def _counting_item(target: int, other: int, rng: np.random.Generator) -> dict:
    word = _NUMBER_WORDS[target]
    return {"question": f"Which tile shows {word} dot{'s' * (target > 1)}?",
            "knowledge_instruction": f"Place the cube on the tile with {word} dot{'s' * (target > 1)}.",
            "labels": (str(target), str(other)), "pictures": (_dots_picture(target, rng), _dots_picture(other, rng))}


# Per category: the values a tile can show, and the item asking for `target` against `other`. Each (target, other)
# pair makes at most one item: a second would be the same episodes again (the items' swapped layouts included), one
# item counted twice (a probe folds them together, `items.content_groups`).
CATEGORIES: dict[str, tuple[tuple, Callable[..., dict]]] = {
    "color": (tuple(_COLOURS), _colour_item), "shape": (tuple(_SHAPES), _shape_item),
    "counting": (tuple(range(1, 7)), _counting_item),
}


def write_item_set(directory: str | pathlib.Path, *, items_per_category: int = 4, seed: int = 0) -> pathlib.Path:
    """Writes `pairs.json` and `images/<asset>.png` for `items_per_category` distinct items of each category (at most
    20, the shape category's distinct items)."""
    directory = pathlib.Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pairs = []
    for category, (values, make) in CATEGORIES.items():
        choices = [(target, other) for target in values for other in values if target != other]
        if items_per_category > len(choices):
            raise ValueError(f"items_per_category={items_per_category}: the {category} category has {len(choices)} "
                             "distinct items")
        for number, choice in enumerate(rng.permutation(len(choices))[:items_per_category]):
            item = make(*choices[choice], rng)
            answer = int(rng.integers(2))  # where the correct picture goes in the original layout
            order = (0, 1) if answer == 0 else (1, 0)  # tile -> item["pictures"] index (0 = the correct one)
            assets = [f"{category}_{number}_{side}" for side in ("a", "b")]
            for asset, picture_index in zip(assets, order):
                Image.fromarray(item["pictures"][picture_index]).save(directory / "images" / f"{asset}.png")
            pairs.append({
                "index": len(pairs), "left": assets[0], "right": assets[1],
                "question": item["question"], "knowledge_instruction": item["knowledge_instruction"],
                "answer": ("Left", "Right")[answer], "semantic_answer": item["labels"][0],
                "left_label": item["labels"][order[0]], "right_label": item["labels"][order[1]],
                "knowledge_category": category,
            })
    (directory / PAIRS_FILE).write_text(json.dumps(pairs, indent=1) + "\n")
    return directory
