"""OpenVLA's inputs exactly as its Hugging Face processor makes them: prompt, Llama tokens, fused 6-channel pixels.

- Prompt: `In: What action should the robot take to {instruction.lower()}?\\nOut:` (OpenVLA's `predict_action`
  prompt; MultiNet's OpenVLA Open-X runs used it too).
- Tokens: the checkpoint's Llama SentencePiece model, BOS first, no EOS (HF `LlamaTokenizer` with `legacy=False`
  equals plain SentencePiece on these prompts); `predict_action` then appends the empty token `▁` when the prompt does
  not end with it. Its id is read from the tokenizer (29871 in Llama-2's vocabulary), never hard-coded.
- Pixels (`preprocessor_config.json`, `image_resize_strategy: resize-naive`): the image is resized to the input
  size as torchvision's `resize` does for PIL images (PIL's resampling filter named by `interpolation`, bicubic for
  OpenVLA; PIL's filters always antialias), scaled to [0, 1], then normalized twice with the `tvf_normalize_params`
  means/stds (DINOv2's, then SigLIP's), giving `[H, W, 6]`.
- Center crop (`crop_center`, when asked): OpenVLA's evaluation-time crop (`experiments/robot/openvla_utils.py`
  `get_vla_action(..., center_crop=True)` + `crop_and_resize`, in openvla/openvla and copied unchanged into MultiNet's
  OpenVLA harness, whose `EvalConfig.center_crop` is True): the image as float32 in [0, 1], the central box of
  sqrt(0.9) of its height and width resized bilinearly to 224 x 224 by `tf.image.crop_and_resize`'s rule, then back to
  uint8 by `tf.image.convert_image_dtype(saturate=True)` (x * 255.5, truncated); the processor then gets that image.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence

import numpy as np
import sentencepiece
from PIL import Image

from multinet_jax.models.openvla_checkpoint import read_json
from multinet_jax.weights.trees import CheckpointError

TOKENIZER_FILE = "tokenizer.model"
PREPROCESSOR_FILE = "preprocessor_config.json"
EMPTY_PIECE = "\u2581"
CROP_SCALE = 0.9  # the crop's share of the image area (OpenVLA's and MultiNet's `crop_scale`)
CROP_OUTPUT_SIZE = (224, 224)  # `crop_and_resize`'s output size, fixed in their code
# torchvision's InterpolationMode codes (as `tvf_resize_params` stores them) -> PIL's filters.
_PIL_FILTERS = {0: Image.NEAREST, 2: Image.BILINEAR, 3: Image.BICUBIC}


def action_prompt(instruction: str) -> str:
    return f"In: What action should the robot take to {instruction.lower()}?\nOut:"


class LlamaPromptTokenizer:
    """The checkpoint's `tokenizer.model`: `encode(prompt)` -> [BOS, ...pieces], plus OpenVLA's empty token."""

    def __init__(self, model_file: str | pathlib.Path, pad_id: int):
        self.path = pathlib.Path(model_file)
        try:
            self.processor = sentencepiece.SentencePieceProcessor(model_file=str(self.path))
        except (OSError, RuntimeError) as error:
            raise CheckpointError(f"{self.path}: not a SentencePiece model ({error})")
        self.bos_id, self.eos_id, self.pad_id = self.processor.bos_id(), self.processor.eos_id(), pad_id
        self.empty_id = self.processor.piece_to_id(EMPTY_PIECE)
        if self.bos_id < 0 or self.eos_id < 0 or self.empty_id == self.processor.unk_id():
            raise CheckpointError(f"{self.path}: a Llama tokenizer needs BOS, EOS and the piece {EMPTY_PIECE!r}")

    def encode(self, prompt: str) -> list[int]:
        return [self.bos_id, *self.processor.encode(prompt)]

    def encode_continuation(self, text: str) -> list[int]:
        """The pieces of `text` as it follows a prompt (no BOS): an answer `score_options` scores."""
        return self.processor.encode(text)

    def encode_for_actions(self, prompt: str) -> list[int]:
        """`encode` plus the empty token unless the prompt already ends with it (as `predict_action` does)."""
        ids = self.encode(prompt)
        return ids if ids[-1] == self.empty_id else [*ids, self.empty_id]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the ids; the embedding's padding rows (ids past the vocabulary) decode to nothing, as `<PAD>`."""
        return self.processor.decode([int(i) for i in ids if int(i) < self.processor.vocab_size()])


def pad_batch(rows: Sequence[Sequence[int]], length_multiple: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token rows to a common length rounded up to `length_multiple` (fewer distinct compiled shapes):
    (ids int32 `[b, T]`, mask bool `[b, T]`)."""
    length = -(-max(len(row) for row in rows) // length_multiple) * length_multiple
    ids = np.zeros((len(rows), length), np.int32)
    mask = np.zeros((len(rows), length), bool)
    for index, row in enumerate(rows):
        ids[index, : len(row)], mask[index, : len(row)] = row, True
    return ids, mask


@dataclasses.dataclass(frozen=True)
class ImageProcessor:
    """`preprocessor_config.json`'s resize and the two normalizations (see the module docstring)."""

    size: tuple[int, int]  # (height, width)
    resample: int  # PIL filter
    means: tuple[tuple[float, ...], ...]
    stds: tuple[tuple[float, ...], ...]

    @classmethod
    def from_pretrained(cls, directory: str | pathlib.Path) -> ImageProcessor:
        path = pathlib.Path(directory) / PREPROCESSOR_FILE
        raw = read_json(path)
        if raw.get("image_resize_strategy") != "resize-naive" or raw.get("tvf_do_letterbox"):
            raise CheckpointError(f"{path}: image_resize_strategy: only 'resize-naive' (OpenVLA's) is supported, "
                                  f"got {raw.get('image_resize_strategy')!r}")
        try:
            resizes, normalizes = raw["tvf_resize_params"], raw["tvf_normalize_params"]
            sizes = {tuple(params["size"]) for params in resizes}
            filters = {params["interpolation"] for params in resizes}
            means = tuple(tuple(float(v) for v in params["mean"]) for params in normalizes)
            stds = tuple(tuple(float(v) for v in params["std"]) for params in normalizes)
        except (KeyError, TypeError) as error:
            raise CheckpointError(f"{path}: tvf_resize_params/tvf_normalize_params: missing field {error}")
        if len(sizes) != 1 or len(filters) != 1 or next(iter(filters)) not in _PIL_FILTERS or len(means) != 2:
            raise CheckpointError(f"{path}: expected two backbones sharing one size and filter "
                                  f"({sorted(_PIL_FILTERS)}), got sizes {sizes}, interpolations {filters}")
        if any(params.get("antialias") is False for params in resizes):
            raise CheckpointError(f"{path}: tvf_resize_params: antialias=False is not what PIL resizing does")
        return cls(next(iter(sizes)), _PIL_FILTERS[next(iter(filters))], means, stds)

    def __call__(self, image: np.ndarray, center_crop: bool = False) -> np.ndarray:
        """uint8 `[h, w, 3]` of any size -> float32 `[H, W, 6]`; `center_crop` first applies OpenVLA's evaluation-time
        crop (module docstring)."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"OpenVLA images must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
        if center_crop:
            image = crop_center(image)
        if image.shape[:2] != self.size:
            image = np.asarray(Image.fromarray(image).resize(self.size[::-1], resample=self.resample))
        scaled = image.astype(np.float32) / np.float32(255.0)
        normalized = [(scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
                      for mean, std in zip(self.means, self.stds)]
        return np.concatenate(normalized, axis=-1)


def _crop_sampling(size_in: int, size_out: int, low: np.float32, high: np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`tf.image.crop_and_resize`'s bilinear sampling along one axis (float32, as its CPU kernel): the lower and
    upper source indices and the weight of the upper one."""
    scale = (high - low) * np.float32(size_in - 1) / np.float32(size_out - 1)
    coords = (low * np.float32(size_in - 1) + np.arange(size_out, dtype=np.float32) * scale).astype(np.float32)
    lower = np.floor(coords).astype(np.int64)
    return lower, np.ceil(coords).astype(np.int64), (coords - lower.astype(np.float32)).astype(np.float32)


def crop_center(image: np.ndarray) -> np.ndarray:
    """uint8 `[h, w, 3]` -> uint8 `[224, 224, 3]`: OpenVLA's evaluation-time center crop (module docstring)."""
    scaled = np.asarray(image).astype(np.float32) * np.float32(1.0 / 255)
    side = np.float32(np.clip(np.sqrt(np.float32(CROP_SCALE)), 0, 1))
    low = (np.float32(1) - side) / np.float32(2)
    high = low + side
    rows_low, rows_high, row_weight = _crop_sampling(scaled.shape[0], CROP_OUTPUT_SIZE[0], low, high)
    cols_low, cols_high, col_weight = _crop_sampling(scaled.shape[1], CROP_OUTPUT_SIZE[1], low, high)
    col_weight, row_weight = col_weight[None, :, None], row_weight[:, None, None]
    top = scaled[rows_low][:, cols_low] + (scaled[rows_low][:, cols_high] - scaled[rows_low][:, cols_low]) * col_weight
    bottom = scaled[rows_high][:, cols_low] + (scaled[rows_high][:, cols_high] - scaled[rows_high][:, cols_low]) * col_weight
    cropped = np.clip(top + (bottom - top) * row_weight, 0, 1) * np.float32(255.5)
    return np.clip(cropped, 0, 255).astype(np.uint8)
