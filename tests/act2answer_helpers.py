"""Act2Answer test inputs: a small generated item set, a glTF binary tile with an embedded texture."""

from __future__ import annotations

import io
import json
import pathlib
import struct

import numpy as np
from PIL import Image

from multinet_jax.act2answer import write_item_set


def item_set(directory: pathlib.Path, items_per_category: int = 2) -> pathlib.Path:
    return write_item_set(directory, items_per_category=items_per_category, seed=0)


def png_bytes(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, payload: bytes, pad: bytes) -> bytes:
    payload += pad * (-len(payload) % 4)
    return struct.pack("<I", len(payload)) + kind + payload


def write_glb(path: pathlib.Path, picture: np.ndarray, *, embedded: bool = True) -> pathlib.Path:
    """A textured quad as glTF 2.0 binary (spec layout): the picture in the BIN chunk, or as a file beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    positions = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32).tobytes()
    image = png_bytes(picture)
    binary = positions + (image if embedded else b"")
    document = {
        "asset": {"version": "2.0"},
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(positions)}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": 4, "type": "VEC3"}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "material": 0}]}],
        "materials": [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}],
        "textures": [{"source": 1}],
        # image 0 is a decoy: the material's texture points at image 1
        "images": [{"uri": "decoy.png"}],
    }
    if embedded:
        document["bufferViews"].append({"buffer": 0, "byteOffset": len(positions), "byteLength": len(image)})
        document["images"].append({"bufferView": 1, "mimeType": "image/png"})
    else:
        (path.parent / "texture.png").write_bytes(image)
        document["images"].append({"uri": "texture.png"})
    chunks = _chunk(b"JSON", json.dumps(document).encode(), b" ") + _chunk(b"BIN\x00", binary, b"\x00")
    path.write_bytes(b"glTF" + struct.pack("<II", 2, 12 + len(chunks)) + chunks)
    return path
