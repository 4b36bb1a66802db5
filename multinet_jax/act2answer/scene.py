"""The rendered composite of an Act2Answer first frame: a schematic tabletop, NOT the simulator's render.

The protocol runs in ManiSkill3 (SimplerEnv's Bridge scene, a WidowX holding a cube over two textured tiles). Without
the simulator, `render_scene` draws a stand-in with the same geometry (`geometry.HARNESS_TABLETOP`) through a pinhole
camera behind and above the robot: a plain table, the two tiles with their candidate images perspective-mapped onto
the top faces (the left tile appears on the image's left), and the cube between two gripper fingers. It carries
what the knowledge question needs (the two pictures, where each lies) but none of the scene's textures, lighting or
robot body, so numbers on composites are not comparable with numbers on simulator frames; feed the simulator's first
frames instead (`data.load("act2answer", ..., frames_dir=...)`) for those.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from multinet_jax.act2answer.geometry import HARNESS_TABLETOP, TILE_NAMES, Box, Tabletop

SCENE_SIZE = 224  # the models' input size: the composite needs no resize
_SUPERSAMPLE = 2
_CAMERA_POSITION = np.array([0.02, 0.0, 0.55])
_CAMERA_TARGET = np.array([-0.21, 0.0, 0.0])
_FOCAL = 1.15  # focal length in image widths (about 47 degrees horizontal field of view)
_TABLE = Box((-0.25, 0.0, -0.01), (0.6, 0.6, 0.01))
_TABLE_COLOUR = (168, 132, 96)
_WALL_COLOUR = (200, 204, 210)
_TILE_SIDE_COLOUR = (235, 235, 230)
_CUBE_COLOUR = (40, 150, 70)
_GRIPPER_COLOUR = (60, 60, 68)
_LIGHT = np.array([0.3, -0.2, 1.0]) / np.linalg.norm([0.3, -0.2, 1.0])


class _Camera:
    """Pinhole camera looking from `_CAMERA_POSITION` at `_CAMERA_TARGET`; image right is world +y."""

    def __init__(self, size: int):
        forward = _CAMERA_TARGET - _CAMERA_POSITION
        self.forward = forward / np.linalg.norm(forward)
        right = np.cross(self.forward, [0.0, 0.0, 1.0])
        self.right = right / np.linalg.norm(right)
        self.up = np.cross(self.right, self.forward)
        self.size = size

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points `[n, 3]` -> pixel coordinates `[n, 2]` (x right, y down)."""
        relative = np.asarray(points, np.float64) - _CAMERA_POSITION
        depth = relative @ self.forward
        scale = _FOCAL * self.size / depth
        return np.stack([self.size / 2 + scale * (relative @ self.right), self.size / 2 - scale * (relative @ self.up)], -1)

    def depth(self, point: np.ndarray) -> float:
        return float((np.asarray(point) - _CAMERA_POSITION) @ self.forward)


def _corners(box: Box) -> np.ndarray:
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)
    return np.asarray(box.center) + signs * np.asarray(box.half_size)


# Faces of `_corners` (index = 4 * (x > 0) + 2 * (y > 0) + (z > 0)), each with its outward normal.
_FACES = (
    ((0, 1, 3, 2), (-1, 0, 0)), ((4, 6, 7, 5), (1, 0, 0)),
    ((0, 4, 5, 1), (0, -1, 0)), ((2, 3, 7, 6), (0, 1, 0)),
    ((0, 2, 6, 4), (0, 0, -1)), ((1, 5, 7, 3), (0, 0, 1)),
)


def _shade(colour: tuple[int, int, int], normal: np.ndarray) -> tuple[int, int, int]:
    brightness = 0.55 + 0.45 * max(float(normal @ _LIGHT), 0.0)
    return tuple(int(round(channel * brightness)) for channel in colour)


def _draw_box(draw: ImageDraw.ImageDraw, camera: _Camera, box: Box, colour: tuple[int, int, int]) -> None:
    """The faces of `box` that face the camera, shaded by a fixed light."""
    corners = _corners(box)
    pixels = camera.project(corners)
    for indices, normal in _FACES:
        normal = np.asarray(normal, np.float64)
        face_centre = corners[list(indices)].mean(0)
        if normal @ (_CAMERA_POSITION - face_centre) > 0:
            draw.polygon([tuple(pixels[i]) for i in indices], fill=_shade(colour, normal))


def _perspective_coefficients(quad: np.ndarray, width: int, height: int) -> list[float]:
    """PIL PERSPECTIVE coefficients mapping output pixels inside `quad` to the source image's corners."""
    source = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    rows, rhs = [], []
    for (x, y), (u, v) in zip(quad, source):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return np.linalg.solve(np.array(rows), np.array(rhs)).tolist()


def _paste_on_top(canvas: Image.Image, camera: _Camera, tile: Box, picture: np.ndarray) -> None:
    """Maps `picture` onto the tile's top face: its top edge on the far side, its left edge on the left (-y)."""
    (x, y, z), (hx, hy, hz) = tile.center, tile.half_size
    top = z + hz
    far_left, far_right, near_right, near_left = [x - hx, y - hy, top], [x - hx, y + hy, top], [x + hx, y + hy, top], [x + hx, y - hy, top]
    quad = camera.project(np.array([far_left, far_right, near_right, near_left]))
    source = Image.fromarray(picture)
    coefficients = _perspective_coefficients(quad, *source.size)
    warped = source.transform(canvas.size, Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BILINEAR)
    mask = Image.new("L", canvas.size, 0)
    ImageDraw.Draw(mask).polygon([tuple(point) for point in quad], fill=255)
    canvas.paste(warped, (0, 0), mask)


def _gripper_parts(cube: Box) -> list[Box]:
    """Two fingers either side of the cube (along y) and the arm reaching back towards the robot (+x)."""
    (x, y, z), (half, _, _) = cube.center, cube.half_size
    finger = (0.012, 0.004, 0.03)
    fingers = [Box((x, y + side * (half + finger[1]), z + 0.01), finger) for side in (-1, 1)]
    arm = Box((x + half + 0.05, y, z), (0.05, 0.008, 0.008))
    return [*fingers, arm]


def render_scene(left: np.ndarray, right: np.ndarray, tabletop: Tabletop = HARNESS_TABLETOP, size: int = SCENE_SIZE) -> np.ndarray:
    """The composite first frame, uint8 `[size, size, 3]`, with `left` / `right` (uint8 `[h, w, 3]`) on the tiles."""
    camera = _Camera(size * _SUPERSAMPLE)
    canvas = Image.new("RGB", (camera.size, camera.size), _WALL_COLOUR)
    draw = ImageDraw.Draw(canvas)
    _draw_box(draw, camera, _TABLE, _TABLE_COLOUR)
    for name, picture in zip(TILE_NAMES, (left, right)):
        tile = tabletop.tile(name)
        _draw_box(draw, camera, tile, _TILE_SIDE_COLOUR)
        _paste_on_top(canvas, camera, tile, picture)
    draw = ImageDraw.Draw(canvas)
    parts = [(tabletop.cube, _CUBE_COLOUR)] + [(part, _GRIPPER_COLOUR) for part in _gripper_parts(tabletop.cube)]
    for box, colour in sorted(parts, key=lambda part: -camera.depth(part[0].center)):  # far to near
        _draw_box(draw, camera, box, colour)
    return np.asarray(canvas.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)
