"""Act2Answer ("Does VLA Even Know the Basics?", 2026): binary knowledge questions posed as tabletop episodes.

A WidowX holds a cube over two image tiles; the instruction is the question ("Place the cube on the sad face"); every
item runs in its original and its left/right-swapped layout. Modules: `items` (the harness's item format),
`geometry` (tile layout and success-rule constants), `names` (how labels and categories compare), `scene` (the
rendered composite first frame), `generated` (a small Pillow-drawn item set for the demo and tests), `glb` (candidate
images inside the harness's tile meshes).
The data domain is `multinet_jax.data.load("act2answer", ...)`; episode scoring is `multinet_jax.score("act2answer", ...)`.
Names are imported lazily, so the metrics (which need only `geometry` and `names`) never pull in the data pipeline.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "write_item_set": "generated", "render_scene": "scene", "Episode": "items", "Item": "items",
    "Box": "geometry", "HARNESS_TABLETOP": "geometry", "LAYOUTS": "geometry", "TILE_NAMES": "geometry", "Tabletop": "geometry",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"multinet_jax.act2answer.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'multinet_jax.act2answer' has no attribute {name!r}")
