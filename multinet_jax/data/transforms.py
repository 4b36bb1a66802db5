"""Model-input transforms shared by every domain: images, state, cameras, prompt tokens.

They follow openpi's Pi0 input conventions so a batch can go straight into `sample_actions`:
images are resized with black padding to 224x224 keeping the aspect ratio (openpi_client's
`resize_with_pad`, PIL bilinear), then mapped uint8 [0, 255] -> float32 [-1, 1]; the state is
zero-padded or truncated to 32 dims; cameras a sample lacks are black (-1) and masked out.
Images stay uint8 per sample and become float once per batch (`images_to_model_range`): the
per-sample work then moves 4x fewer bytes.
"""

from __future__ import annotations

import functools
import io
from typing import Protocol, Sequence

import numpy as np
from PIL import Image

from multinet_jax.pixels import to_model_range

IMAGE_SIZE = 224
STATE_DIM = 32
MAX_TOKEN_LEN = 48  # openpi Pi0Config.max_token_len, the length MultiNet's Pi0 runs used
PI0_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")


class PromptTokenizer(Protocol):
    """What the pipeline needs from a tokenizer (e.g. `multinet_jax.tokenizers.PaliGemmaTokenizer`)."""

    def tokenize_prompt(self, text: str, max_len: int) -> tuple[np.ndarray, np.ndarray]: ...


def decode_image(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 [h, w, 3]; raises ValueError/OSError on corrupt data."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def resize_with_pad(image: np.ndarray, height: int = IMAGE_SIZE, width: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 [h, w, 3] -> uint8 [height, width, 3]: bilinear resize keeping aspect, centred on black."""
    cur_height, cur_width = image.shape[:2]
    if (cur_height, cur_width) == (height, width):
        return image
    ratio = max(cur_width / width, cur_height / height)
    resized_height, resized_width = int(cur_height / ratio), int(cur_width / ratio)
    resized = Image.fromarray(image).resize((resized_width, resized_height), resample=Image.BILINEAR)
    canvas = np.zeros((height, width, image.shape[2]), dtype=np.uint8)
    top, left = (height - resized_height) // 2, (width - resized_width) // 2
    canvas[top : top + resized_height, left : left + resized_width] = np.asarray(resized)
    return canvas


@functools.cache
def _black(shape: tuple[int, ...]) -> np.ndarray:
    black = np.full(shape, -1.0, np.float32)
    black.flags.writeable = False
    return black


def images_to_model_range(tree: dict) -> dict:
    """Every `image/<camera>` entry of a sample or batch -> float32 [-1, 1].

    A camera masked out everywhere holds black (0) pixels, so it becomes one shared read-only
    array of -1 per shape, skipping the arithmetic (most of a batch's image bytes are such
    wrist cameras).
    """
    converted = dict(tree)
    for key, value in tree.items():
        if key.startswith("image/"):
            mask = tree.get("image_mask/" + key[len("image/") :])
            converted[key] = to_model_range(value) if mask is None or np.any(mask) else _black(value.shape)
    return converted


def pad_state(state: np.ndarray | None, dim: int = STATE_DIM) -> np.ndarray:
    """Flatten, zero-pad or truncate to `dim` (openpi's `pad_to_dim`; MultiNet truncates longer states)."""
    if state is None:
        return np.zeros((dim,), np.float32)
    flat = np.asarray(state, np.float32).reshape(-1)[:dim]
    return np.pad(flat, (0, dim - flat.shape[0]))


def state_dim(state: np.ndarray | None, dim: int = STATE_DIM) -> np.int32:
    """How many of `pad_state`'s dims are the sample's own (openpi's Pi0.5 / Pi0-FAST prompts hold only those)."""
    return np.int32(0 if state is None else min(np.size(state), dim))


def camera_inputs(image: np.ndarray | None, cameras: Sequence[str]) -> dict[str, np.ndarray]:
    """uint8 `image/<camera>` [224, 224, 3] and bool `image_mask/<camera>`; the sample's image feeds the first.

    MultiNet's Pi0 runs give the single dataset image to `base_0_rgb` and zero (black) images with a
    False mask to the wrist cameras; text-only domains mask every camera.
    """
    inputs: dict[str, np.ndarray] = {}
    for position, camera in enumerate(cameras):
        present = position == 0 and image is not None
        inputs[f"image/{camera}"] = resize_with_pad(image) if present else np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
        inputs[f"image_mask/{camera}"] = np.asarray(present)
    return inputs


def tokenize(tokenizer: PromptTokenizer, text: str, max_len: int) -> dict[str, np.ndarray]:
    """`tokenized_prompt` int32 [max_len] and `tokenized_prompt_mask` bool [max_len]."""
    ids, mask = tokenizer.tokenize_prompt(text, max_len)
    ids, mask = np.asarray(ids, np.int32), np.asarray(mask, bool)
    if ids.shape != (max_len,) or mask.shape != (max_len,):
        raise ValueError(f"tokenize_prompt returned shapes {ids.shape}, {mask.shape}; expected ({max_len},)")
    return {"tokenized_prompt": ids, "tokenized_prompt_mask": mask}
