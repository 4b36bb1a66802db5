"""The texture image inside a glTF binary (`.glb`): how the Act2Answer harness stores a tile's candidate image.

Its tile assets are `shapes/<asset>/textured.glb` meshes whose top face carries the candidate picture as the mesh's
base-colour texture. A GLB is a 12-byte header, a JSON chunk and a BIN chunk (glTF 2.0, section "Binary glTF
Layout"); an image is either a `bufferView` into the BIN chunk or a `uri` (a file beside the .glb or a base64
`data:` URI).
"""

from __future__ import annotations

import base64
import json
import pathlib
import struct

_MAGIC = b"glTF"
_JSON_CHUNK = 0x4E4F534A
_BIN_CHUNK = 0x004E4942


class GlbError(ValueError):
    """A .glb that is not a glTF binary with an image; the message names the file."""


def _chunks(path: pathlib.Path, data: bytes) -> tuple[dict, bytes]:
    if len(data) < 20 or data[:4] != _MAGIC:
        raise GlbError(f"{path}: not a glTF binary (no 'glTF' magic)")
    version, length = struct.unpack_from("<II", data, 4)
    if version != 2 or length > len(data):
        raise GlbError(f"{path}: glTF binary version {version}, length {length} of {len(data)} bytes: expected version 2")
    offset, document, binary = 12, None, b""
    while offset + 8 <= length:
        chunk_length, chunk_type = struct.unpack_from("<II", data, offset)
        chunk = data[offset + 8 : offset + 8 + chunk_length]
        if chunk_type == _JSON_CHUNK:
            document = json.loads(chunk.decode("utf-8"))
        elif chunk_type == _BIN_CHUNK:
            binary = chunk
        offset += 8 + chunk_length
    if document is None:
        raise GlbError(f"{path}: no JSON chunk")
    return document, binary


def texture_bytes(path: str | pathlib.Path) -> bytes:
    """The encoded bytes (PNG/JPEG) of the .glb's base-colour texture, else its first image."""
    path = pathlib.Path(path)
    document, binary = _chunks(path, path.read_bytes())
    images = document.get("images") or []
    if not images:
        raise GlbError(f"{path}: the glTF holds no image (the tile's candidate picture is its texture)")
    image = images[_base_colour_image(document)]
    if "bufferView" in image:
        view = document["bufferViews"][image["bufferView"]]
        start = view.get("byteOffset", 0)
        return binary[start : start + view["byteLength"]]
    uri = image.get("uri", "")
    if uri.startswith("data:"):
        return base64.b64decode(uri.split(",", 1)[1])
    if not uri:
        raise GlbError(f"{path}: image has neither bufferView nor uri")
    return (path.parent / uri).read_bytes()


def _base_colour_image(document: dict) -> int:
    """Index of the image the first material's base-colour texture samples (0 when no material says)."""
    for material in document.get("materials", []):
        texture = material.get("pbrMetallicRoughness", {}).get("baseColorTexture")
        if texture is not None:
            return document["textures"][texture["index"]]["source"]
    return 0
