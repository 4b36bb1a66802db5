"""How Act2Answer compares names (labels, answers, category names), shared by the item reader and episode scoring:
a module of its own, so the metrics need not import the data pipeline (`items` does)."""

from __future__ import annotations

from collections.abc import Iterable


def text_key(text: str) -> str:
    """Text as compared for sameness: case and surrounding blanks ignored (labels, answers, category names)."""
    return text.strip().casefold()


def spelling_clash(names: Iterable[tuple[int, str]]) -> tuple[int, int] | None:
    """(position, earlier position) of the first two of `names` ((position, name) pairs) that are one name spelled two
    ways (`text_key` equal, text not): one category under two spellings is scored and macro-averaged as two."""
    first: dict[str, tuple[int, str]] = {}
    for position, name in names:
        earlier = first.setdefault(text_key(name), (position, name))
        if earlier[1] != name:
            return position, earlier[0]
    return None
