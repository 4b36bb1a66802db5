"""Model-input transforms shared by every domain: images, state, cameras, prompt tokens.

They follow the input conventions of MultiNet's Pi0 runs (`multinet_jax.domains.Protocol`): the sample's image
feeds the first camera, uint8, at its native size for the openpi path (the model resizes it, as openpi does) or
resized straight to the model's input size (224x224 for MultiNet's pt-224) with PIL bicubic for the Hugging Face
PaliGemma path; the other cameras get black
images of the same size, masked out; the state is zero-padded or truncated to 32 dims. Images stay uint8 all the
way to the model, which maps them to [-1, 1] (`models.observation`).
"""

from __future__ import annotations

import io
from typing import Protocol, Sequence

import numpy as np
from PIL import Image

IMAGE_SIZE = 224
STATE_DIM = 32
# Untruncated prompts are padded to the next of these lengths (powers of two), so a domain compiles a few shapes.
MIN_PROMPT_BUCKET = 32
PI0_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")


class PromptTokenizer(Protocol):
    """What the pipeline needs from a tokenizer (e.g. `multinet_jax.tokenizers.PaliGemmaTokenizer`)."""

    def prompt_ids(self, text: str, prompt_format: str) -> list[int]: ...


def decode_image(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 [h, w, 3]; raises ValueError/OSError on corrupt data."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def paligemma_processor_resize(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 [h, w, 3] -> uint8 [size, size, 3] as Hugging Face's PaliGemma processor resizes for MultiNet's text runs.

    `size` is the checkpoint's input size (its processor's: pt-448's resizes to 448). google/paligemma-3b-pt-224's
    `preprocessor_config.json` configures its SiglipImageProcessor with `"size":
    {"height": 224, "width": 224}`, `"resample": 3` (PIL BICUBIC; the class default would be bilinear),
    `"rescale_factor": 1/255` and mean = std = 0.5. Its resize hands the uint8 array to PIL (no rescaling for uint8)
    and resizes straight to 224x224, aspect ratio not kept; the rescale and normalize that follow equal openpi's
    `x / 255 * 2 - 1` bit for bit (`models.observation.to_model_range`), which the model applies.
    """
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), resample=Image.BICUBIC))


def pad_state(state: np.ndarray | None, dim: int = STATE_DIM) -> np.ndarray:
    """Flatten, zero-pad or truncate to `dim` (openpi's `pad_to_dim`; MultiNet truncates longer states)."""
    if state is None:
        return np.zeros((dim,), np.float32)
    flat = np.asarray(state, np.float32).reshape(-1)[:dim]
    return np.pad(flat, (0, dim - flat.shape[0]))


def state_dim(state: np.ndarray | None, dim: int = STATE_DIM) -> np.int32:
    """How many of `pad_state`'s dims are the sample's own (openpi's Pi0.5 / Pi0-FAST prompts hold only those)."""
    return np.int32(0 if state is None else min(np.size(state), dim))


def camera_inputs(
    image: np.ndarray | None,
    cameras: Sequence[str],
    *,
    paligemma_resize: int | None = None,
    blank_image: int | None = None,
) -> dict[str, np.ndarray]:
    """uint8 `image/<camera>` and bool `image_mask/<camera>`; the sample's image feeds the first camera.

    MultiNet's Pi0 runs give the single dataset image to `base_0_rgb` and `zeros_like` of it (black) with a False
    mask to the wrist cameras. `paligemma_resize`: resize to that size as the Hugging Face processor does (None: the
    native size). A sample without an image shows an image of `blank_image` (attended), or masks every camera.
    """
    size = paligemma_resize or IMAGE_SIZE
    if image is None and blank_image is not None:
        image = np.full((size, size, 3), blank_image, np.uint8)
    if image is not None and paligemma_resize:
        image = paligemma_processor_resize(image, paligemma_resize)
    base = image if image is not None else np.zeros((size, size, 3), np.uint8)
    inputs: dict[str, np.ndarray] = {}
    for position, camera in enumerate(cameras):
        present = position == 0 and image is not None
        inputs[f"image/{camera}"] = base if present else np.zeros_like(base)
        inputs[f"image_mask/{camera}"] = np.asarray(present)
    return inputs


def prompt_bucket(num_tokens: int) -> int:
    """The padded length of an untruncated prompt: the smallest power of two >= `num_tokens` (at least 32)."""
    return max(MIN_PROMPT_BUCKET, 1 << max(num_tokens - 1, 0).bit_length())


def tokenize(tokenizer: PromptTokenizer, text: str, prompt_format: str, max_len: int | None) -> dict[str, np.ndarray]:
    """`tokenized_prompt` int32 and `tokenized_prompt_mask` bool, right-padded; `prompt_tokens`: the full length.

    `max_len`: pad or truncate to it (a truncated prompt has `prompt_tokens > max_len`); None: never truncate,
    pad to `prompt_bucket(prompt_tokens)`.
    """
    ids = list(tokenizer.prompt_ids(text, prompt_format))
    length = max_len if max_len is not None else prompt_bucket(len(ids))
    padded = np.zeros(length, np.int32)
    kept = ids[:length]
    padded[: len(kept)] = kept
    return {"tokenized_prompt": padded, "tokenized_prompt_mask": np.arange(length) < len(kept), "prompt_tokens": np.int32(len(ids))}
