"""Act2Answer ("Does VLA Even Know the Basics?", 2026): binary knowledge questions posed as tabletop episodes.

A WidowX holds a cube over two image tiles; the instruction is the question ("Place the cube on the sad face"); every
item runs in its original and its left/right-swapped layout. Modules: `items` (the harness's item format),
`geometry` (tile layout and success-rule constants), `scene` (the rendered composite first frame), `generated`
(a small Pillow-drawn item set for the demo and tests), `glb` (candidate images inside the harness's tile meshes).
The data domain is `multinet_jax.data.load("act2answer", ...)`; episode scoring is `multinet_jax.score("act2answer", ...)`.
"""

from multinet_jax.act2answer.generated import write_item_set
from multinet_jax.act2answer.geometry import HARNESS_TABLETOP, LAYOUTS, TILE_NAMES, Box, Tabletop
from multinet_jax.act2answer.items import Episode, Item
from multinet_jax.act2answer.scene import render_scene

__all__ = ["Box", "Episode", "HARNESS_TABLETOP", "Item", "LAYOUTS", "TILE_NAMES", "Tabletop", "render_scene", "write_item_set"]
