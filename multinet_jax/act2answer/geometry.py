"""The Act2Answer tabletop: tile placement, the pre-grasped cube and the protocol's success rule constants.

Values are the protocol harness's (`../shared/act2answer_reference/README.md`): two tiles 11 x 11 x 0.6 cm on the
Bridge table at x = -0.25 m, y = -0.155 m (left) and +0.155 m (right), a 3 cm cube held by a WidowX. World frame:
metres, z up, the table surface at z = 0 here (the harness's table height cancels out of every rule, which compares
the cube with the tiles' own logged heights).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

TILE_NAMES = ("left", "right")
LAYOUTS = ("original", "swapped")

# The protocol's success rule: the cube's xy within the target tile's half size plus this margin (both axes) ...
XY_MARGIN = 0.08
# ... and its centre no lower than the tile top plus the cube's half size, less this tolerance.
HEIGHT_TOLERANCE = 0.01
CUBE_HALF_SIZE = 0.015


@dataclasses.dataclass(frozen=True)
class Box:
    """An axis-aligned box: centre and half extents, metres."""

    center: tuple[float, float, float]
    half_size: tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class Tabletop:
    """Where the tiles and the pre-grasped cube are at the first frame."""

    tiles: dict[str, Box]
    cube: Box

    def tile(self, name: str) -> Box:
        return self.tiles[name]


_TILE_HALF = (0.055, 0.055, 0.003)
HARNESS_TABLETOP = Tabletop(
    tiles={
        "left": Box((-0.25, -0.155, _TILE_HALF[2]), _TILE_HALF),
        "right": Box((-0.25, 0.155, _TILE_HALF[2]), _TILE_HALF),
    },
    cube=Box((-0.13, 0.0, 0.11), (CUBE_HALF_SIZE,) * 3),
)
# The WidowX base's orientation in the world frame, as SimplerEnv's Bridge scene sets it: quaternion (w, x, y, z) =
# (0, 0, 0, 1), half a turn about z. It stands at +x facing the tiles at -x, so its left (+y) is the world's -y (the
# "left" tile). Its controller applies end-effector deltas in this base frame (ManiSkill's PDEEPoseController,
# `root_translation`).
ROBOT_BASE_QUATERNION = (0.0, 0.0, 0.0, 1.0)


def base_to_world_xy(xy: Sequence[float]) -> np.ndarray:
    """An xy displacement in the robot's base frame (what a Bridge / WidowX action holds), in the world frame: the
    top-left 2x2 block of the base quaternion's rotation matrix (exact for half a turn: no 1e-17 sideways drift)."""
    w, x, y, z = ROBOT_BASE_QUATERNION
    rotation = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w)], [2 * (x * y + z * w), 1 - 2 * (x * x + z * z)]])
    return rotation @ np.asarray(xy, np.float64)
