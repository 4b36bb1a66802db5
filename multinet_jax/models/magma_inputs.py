"""Magma's inputs exactly as its processor makes them, and the merged sequence its model builds from them.

- Chat prompt: Llama-3-Instruct's template (`<|begin_of_text|>`, then per message
  `<|start_header_id|>{role}<|end_header_id|>\\n\\n{content.strip()}<|eot_id|>`, then the assistant header), with
  Magma's system prompt; each `<image>` becomes `<image_start><image><image_end>` when the checkpoint says
  `mm_use_image_start_end`. The tokenizer then adds its own BOS (its post-processor), so ids start with two BOS, as
  Magma's processor gives them.
- Images (`MagmaImageProcessor`, `anyres_strategy: "crop"`): RGB uint8 -> `/ 255` -> normalized with the CLIP
  mean/std -> the crop grid (gh, gw), gh * gw <= `num_crops`, chosen by LLaVA-NeXT's `select_best_resolution` ->
  torch's bilinear resize (align_corners=False, no antialias) to (gh * S, gw * S) -> gh * gw crops of S x S,
  row-major. Everything in float32, in torch's order of operations.
- Merged sequence (`MagmaForCausalLM._merge_input_ids_with_image_features`): each `<image>` id is replaced by its
  image's tokens: the crops' feature maps (h x w each) tiled into a (gh * h, gw * w) grid, a learned row separator
  after every grid row, row-major: gh * h * (gw * w + 1) tokens. `merge_plan` writes this as gather indices into
  `[text tokens | every crop's feature positions | the row separator]`, so one jitted gather builds the sequence.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tokenizers

from multinet_jax.models.llama_checkpoint import read_json
from multinet_jax.weights.trees import CheckpointError

PREPROCESSOR_FILE = "preprocessor_config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SYSTEM_PROMPT = "You are agent that can see, talk and act."
IMAGE_TOKEN = "<image>"
IMAGE_START_END = ("<image_start>", "<image_end>")
# Meta-Llama-3-8B-Instruct's chat template (Magma-8B ships the Llama-3-Instruct tokenizer): the one `chat_text`
# renders. A checkpoint with another template (Llama-3.1's date header, another system turn) is refused, not rendered
# as this one.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' "
    "+ message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def action_prompt(instruction: str) -> str:
    """Magma's robot question (SimplerEnv, LIBERO and MultiNet's Open-X scripts)."""
    return f"{IMAGE_TOKEN}\nWhat action should the robot take to {instruction}?"


class MagmaTokenizer:
    """The checkpoint's `tokenizer.json` (through the `tokenizers` library, as transformers' fast tokenizer runs it)."""

    decodes_every_id = True  # `decode` skips the special tokens itself, added ones included (`runners.decode_text`)

    def __init__(self, directory: str | pathlib.Path, eos_ids: Sequence[int] | None = None):
        directory = pathlib.Path(directory)
        path = directory / TOKENIZER_FILE
        try:
            self.tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises its own Exception subclass
            raise CheckpointError(f"{path}: not a tokenizers JSON file ({error})")
        config_path = directory / TOKENIZER_CONFIG_FILE
        config = read_json(config_path)
        if config.get("chat_template") != LLAMA3_CHAT_TEMPLATE:
            raise CheckpointError(f"{config_path}: chat_template: only Meta-Llama-3-Instruct's template (Magma-8B's) is "
                                  "rendered here; this one differs")
        self.bos_token = self._special(config, config_path, "bos_token")
        self.eos_token = self._special(config, config_path, "eos_token")
        self.bos_id, self.image_id = self.token_id(self.bos_token, config_path), self.token_id(IMAGE_TOKEN, path)
        self.pad_id = self.token_id(self._special(config, config_path, "pad_token"), config_path)
        self.eos_ids = tuple(eos_ids) if eos_ids else (self.token_id(self.eos_token, config_path),)
        self.eos_id = self.eos_ids[0]
        # transformers' `tokenizer.vocab_size`: the base BPE vocabulary, added tokens excluded (Llama-3: 128000).
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=False)

    @staticmethod
    def _special(config: dict[str, Any], path: pathlib.Path, field: str) -> str:
        value = config.get(field)
        value = value.get("content") if isinstance(value, dict) else value
        if not isinstance(value, str):
            raise CheckpointError(f"{path}: {field}: missing")
        return value

    def token_id(self, token: str, where: Any) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise CheckpointError(f"{where}: the tokenizer has no token {token!r}")
        return token_id

    def encode(self, text: str) -> list[int]:
        """Ids as Magma's processor makes them (`tokenizer(text)`: the post-processor's BOS first)."""
        return self.tokenizer.encode(text, add_special_tokens=True).ids

    def encode_continuation(self, text: str) -> list[int]:
        """The ids of `text` as it follows a prompt (no BOS): an answer `score_options` scores."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the ids without special tokens (`processor.decode(ids, skip_special_tokens=True)`)."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


def chat_text(messages: Sequence[Mapping[str, str]], bos_token: str, image_start_end: bool) -> str:
    """Llama-3-Instruct's chat template over `{"role", "content"}` messages with the generation prompt (module
    docstring); every `<image>` wrapped in its start/end tokens when `image_start_end`."""
    turns = "".join(f"<|start_header_id|>{message['role']}<|end_header_id|>\n\n{message['content'].strip()}<|eot_id|>"
                    for message in messages)
    prompt = f"{bos_token}{turns}<|start_header_id|>assistant<|end_header_id|>\n\n"
    return prompt.replace(IMAGE_TOKEN, "".join((IMAGE_START_END[0], IMAGE_TOKEN, IMAGE_START_END[1]))) if image_start_end else prompt


def chat_prompt(user: str, bos_token: str, image_start_end: bool, system: str = SYSTEM_PROMPT) -> str:
    """The chat template over [system, user] (`chat_text`)."""
    return chat_text([{"role": "system", "content": system}, {"role": "user", "content": user}], bos_token, image_start_end)


def select_best_resolution(original_size: tuple[int, int], resolutions: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """LLaVA-NeXT's rule (as Magma's processor has it): the (width, height) keeping the most of the image's
    resolution, ties broken by the least wasted area. `original_size` is (width, height)."""
    width, height = original_size
    best, best_effective, best_wasted = resolutions[0], 0, float("inf")
    for candidate_width, candidate_height in resolutions:
        scale = min(candidate_width / width, candidate_height / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = candidate_width * candidate_height - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (candidate_width, candidate_height), effective, wasted
    return best


def _bilinear_axis(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torch's `upsample_bilinear2d` sampling along one axis (align_corners=False, float32 as its CPU kernel): the
    lower / upper source indices and their weights. The float32 products are exact in float64, so rounding the
    float64 result once is the fused multiply-add."""
    scale = np.float32(size_in) / np.float32(size_out)
    centers = np.arange(size_out, dtype=np.float32) + np.float32(0.5)
    source = (np.float64(scale) * centers - 0.5).astype(np.float32)  # one fused multiply-add, as the kernel compiles
    source = np.maximum(source, np.float32(0))
    lower = source.astype(np.int64)
    upper_weight = (source - lower.astype(np.float32)).astype(np.float32)
    upper = lower + (lower < size_in - 1)
    return lower, upper, (np.float32(1) - upper_weight).astype(np.float32), upper_weight


def _fused_pair(a: np.ndarray, w_a: np.ndarray, b: np.ndarray, w_b: np.ndarray) -> np.ndarray:
    """`a * w_a + b * w_b` as torch's compiled CPU kernel evaluates it in float32: `b * w_b` rounded, then one fused
    multiply-add (emulated in float64: the float32 product is exact there)."""
    second = (b * w_b).astype(np.float32)
    return (a.astype(np.float64) * w_a.astype(np.float64) + second).astype(np.float32)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 `[H, W, C]` -> `[height, width, C]` as `torch.nn.functional.interpolate(mode="bilinear")` computes it
    on CPU, bit for bit: each output is `fma(row0, h0, row1 * h1)` over the rows `fma(x0, w0, x1 * w1)`."""
    rows_low, rows_high, row_low_weight, row_high_weight = _bilinear_axis(image.shape[0], height)
    cols_low, cols_high, col_low_weight, col_high_weight = _bilinear_axis(image.shape[1], width)

    def along_width(rows: np.ndarray) -> np.ndarray:
        picked = image[rows]
        return _fused_pair(picked[:, cols_low], col_low_weight[None, :, None], picked[:, cols_high], col_high_weight[None, :, None])

    return _fused_pair(along_width(rows_low), row_low_weight[:, None, None], along_width(rows_high), row_high_weight[:, None, None])


@dataclasses.dataclass(frozen=True)
class ImageProcessor:
    """`preprocessor_config.json` of Magma's processor (module docstring)."""

    crop_size: int
    num_crops: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_pretrained(cls, directory: str | pathlib.Path) -> ImageProcessor:
        path = pathlib.Path(directory) / PREPROCESSOR_FILE
        raw = read_json(path)
        if raw.get("anyres_strategy") != "crop":
            raise CheckpointError(f"{path}: anyres_strategy: only 'crop' (Magma-8B's) is supported, got {raw.get('anyres_strategy')!r}")
        try:
            processor = cls(int(raw["base_img_size"]), int(raw["num_crops"]), tuple(float(v) for v in raw["image_mean"]),
                            tuple(float(v) for v in raw["image_std"]))
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: base_img_size/num_crops/image_mean/image_std: missing or malformed ({error})")
        if processor.crop_size % 32 or processor.num_crops < 1 or len(processor.mean) != 3 or len(processor.std) != 3:
            raise CheckpointError(f"{path}: base_img_size must be a multiple of 32 (ConvNeXt's stride), num_crops >= 1 "
                                  f"and mean/std 3 values, got {processor}")
        return processor

    @property
    def grids(self) -> list[tuple[int, int]]:
        """Candidate (width, height) multiples as the processor lists them: (i, j) for i * j <= num_crops."""
        return [(i, j) for i in range(1, self.num_crops + 1) for j in range(1, self.num_crops // i + 1)]

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """The crop grid (rows gh, columns gw) for an image of `height` x `width` pixels."""
        size = self.crop_size
        best_width, best_height = select_best_resolution((width, height), [(i * size, j * size) for i, j in self.grids])
        return best_height // size, best_width // size

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """RGB uint8 `[H, W, 3]` -> (crops float32 `[gh * gw, S, S, 3]` NHWC, row-major; the grid (gh, gw))."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"Magma images must be RGB uint8 [H, W, 3], got {image.dtype} {image.shape}")
        normalized = ((image.astype(np.float32) / np.float32(255) - np.asarray(self.mean, np.float32))
                      / np.asarray(self.std, np.float32))
        rows, columns = self.grid(*image.shape[:2])
        size = self.crop_size
        resized = resize_bilinear(normalized, rows * size, columns * size)
        crops = resized.reshape(rows, size, columns, size, 3).transpose(0, 2, 1, 3, 4).reshape(rows * columns, size, size, 3)
        return crops, (rows, columns)


@dataclasses.dataclass(frozen=True)
class Batch:
    """A batch as the jitted model reads it (module docstring): every array right-padded."""

    crops: np.ndarray  # float32 [b, C, S, S, 3]: each row's crops, zeros after its last
    tokens: np.ndarray  # int32 [b, T]: the text ids (`<image>` ids replaced by 0, as Magma embeds them)
    gather: np.ndarray  # int32 [b, L]: per merged position, an index into [tokens (T) | crop positions (C*h*w) | separator]
    mask: np.ndarray  # bool [b, L]: valid merged positions (a prefix of each row)
    prompt_mask: np.ndarray  # bool [b, L]: the text tokens after the row's last image (what probing pools)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def merge_plan(token_rows: Sequence[Sequence[int]], images: Sequence[Sequence[tuple[np.ndarray, tuple[int, int]]]],
               image_token_id: int, feature_size: int, length_multiple: int = 16) -> Batch:
    """Each row's ids and processed images -> the batch's gather plan (module docstring). `feature_size` is h = w,
    the crop size over the ConvNeXt's stride; T and L are rounded up to `length_multiple` (fewer compiled shapes)."""
    batch = len(token_rows)
    text_length = _round_up(max(len(row) for row in token_rows), length_multiple)
    max_crops = max(1, max(sum(len(crops) for crops, _ in row) for row in images))
    per_crop = feature_size * feature_size
    separator = text_length + max_crops * per_crop
    merged = []
    for row, (ids, row_images) in enumerate(zip(token_rows, images)):
        image_positions = [j for j, token in enumerate(ids) if token == image_token_id]
        if len(image_positions) != len(row_images):
            raise ValueError(f"row {row}: the prompt has {len(image_positions)} {IMAGE_TOKEN} tokens for {len(row_images)} images")
        sequence, prompt_start, crop_offset, image_index = [], 0, 0, 0
        for j, token in enumerate(ids):
            if token != image_token_id:
                sequence.append(j)
                continue
            _, (grid_rows, grid_columns) = row_images[image_index]
            for y in range(grid_rows * feature_size):
                for x in range(grid_columns * feature_size):
                    crop = (y // feature_size) * grid_columns + x // feature_size
                    position = (y % feature_size) * feature_size + x % feature_size
                    sequence.append(text_length + (crop_offset + crop) * per_crop + position)
                sequence.append(separator)
            crop_offset += grid_rows * grid_columns
            image_index += 1
            prompt_start = len(sequence)
        merged.append((sequence, prompt_start))
    length = _round_up(max(len(sequence) for sequence, _ in merged), length_multiple)
    size = next((row[0][0].shape[1] for row in images if row), feature_size * 32)
    crops = np.zeros((batch, max_crops, size, size, 3), np.float32)
    tokens = np.zeros((batch, text_length), np.int32)
    gather = np.zeros((batch, length), np.int32)
    mask = np.zeros((batch, length), bool)
    prompt_mask = np.zeros((batch, length), bool)
    for row, ((sequence, prompt_start), ids, row_images) in enumerate(zip(merged, token_rows, images)):
        if row_images:
            stacked = np.concatenate([image_crops for image_crops, _ in row_images])
            crops[row, : len(stacked)] = stacked
        tokens[row, : len(ids)] = np.where(np.asarray(ids) == image_token_id, 0, ids)
        gather[row, : len(sequence)], mask[row, : len(sequence)] = sequence, True
        prompt_mask[row, prompt_start: len(sequence)] = True
    return Batch(crops, tokens, gather, mask, prompt_mask)
