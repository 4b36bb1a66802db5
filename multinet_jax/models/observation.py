"""The observation boundary: every model's `sample_actions` / `sample_tokens` validates its inputs here, once.

An observation is a dict mirroring openpi's `Observation` (see the README): `image/<camera>` `[b, h, w, 3]` at any size,
`image_mask/<camera>` `[b]`, `tokenized_prompt` / `tokenized_prompt_mask` `[b, L]`, optionally `token_ar_mask`,
`token_loss_mask`, `state` `[b, state_dim]` and `sample_index` `[b]`. `validate` returns it as host numpy arrays of
one dtype per key, or raises `ObservationError` naming the key and what is wrong. Inside the jitted samplers
nothing is checked, and bad values there do not fail: an out-of-vocabulary id is clamped by the embedding
lookup, a 0..255 image runs as a very bright one. So:

- Images: uint8 is mapped [0, 255] -> [-1, 1] as openpi's `Observation.from_dict` does; floating images must
  already be in [-1, 1] (within `IMAGE_RANGE_TOLERANCE`) and finite; any other dtype is refused. Any height and
  width is accepted: inside the jitted samplers every camera is brought to the model's size by `resize_with_pad`,
  openpi's `preprocess_observation` resize (in float, after the conversion; identity at the model's size). A
  camera may also be a list of per-row images of different sizes (a batch mixing them, as the data pipeline
  hands over Overcooked's layouts): each row is resized here, on the host, exactly as the model would.
- Token ids must be integers in [0, vocab_size) of the model; masks bool (or integers 0/1).
- The state, when the model reads it, must be finite floats of the model's state width.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

Observation = Mapping[str, Any]
# Float images may exceed [-1, 1] by this much (float rounding of a resize or a conversion), no more.
IMAGE_RANGE_TOLERANCE = 1e-3
_PROMPT_KEYS = ("tokenized_prompt", "tokenized_prompt_mask")
# Every key `validate` reads (the `image/` and `image_mask/` prefixes per camera). Other keys pass (the evaluator's and
# other families' inputs: `prompt`, `chat`, ...), but a near-miss of one of these is refused: read as absent, a
# misspelled mask would leave its camera attended and the model's output changed, with nothing failing.
_READ_KEYS = (*_PROMPT_KEYS, "token_ar_mask", "token_loss_mask", "sample_index", "state", "state_dim")
_READ_PREFIXES = ("image", "image_mask")
NEAR_MISS_CUTOFF = 0.84  # difflib's ratio; the evaluator's own keys score at most 0.76 (text_prompt_mask)
Resize = Callable[[jax.Array, int, int], jax.Array]  # (images [b, h, w, c], height, width) -> resized


def to_model_range(image: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1] as openpi's `Observation.from_dict` computes it (`x / 255 * 2 - 1` in
    float32), any shape. For every uint8 value this equals the Hugging Face SigLIP processor's rescale (float64
    `x * (1/255)` cast to float32) followed by its normalize (`(x - 0.5) / 0.5` in float32), bit for bit."""
    return np.asarray(image).astype(np.float32) / np.float32(255.0) * np.float32(2.0) - np.float32(1.0)


class ObservationError(ValueError):
    """An observation a model cannot use: the message names the key and what is wrong."""

    def __init__(self, key: str, problem: str):
        self.key = key
        super().__init__(f"observation[{key!r}]: {problem}")


def observation_cameras(observation: Observation) -> list[str]:
    """Camera names (`image/<camera>`) in sorted order, the image tokens' order: the order jax flattens a dict in, so
    the order openpi's jitted models see their cameras in, whatever order the dict was built in."""
    return sorted(key.removeprefix("image/") for key in observation if key.startswith("image/"))


def live_cameras(observation: Observation) -> list[str]:
    """Cameras with at least one True mask entry (host-side: decides which SigLIP passes run).

    `observation` must be `validate`d (every camera then has its mask).
    """
    return [camera for camera in observation_cameras(observation) if observation[f"image_mask/{camera}"].any()]


def _array(observation: Observation, key: str, shape: tuple[int, ...]) -> np.ndarray:
    value = np.asarray(observation[key])
    if value.shape != shape:
        raise ObservationError(key, f"shape {value.shape}, expected {shape}")
    return value


def _mask(observation: Observation, key: str, shape: tuple[int, ...]) -> np.ndarray:
    value = _array(observation, key, shape)
    if value.dtype == bool:
        return value
    if np.issubdtype(value.dtype, np.integer) and np.isin(value, (0, 1)).all():
        return value.astype(bool)
    raise ObservationError(key, f"a mask must be bool (or integers 0/1), got {value.dtype}")


def _check_cameras(observation: Observation, cameras: Sequence[str]) -> None:
    given = observation_cameras(observation)
    for camera in cameras:
        if camera not in given:
            raise ObservationError(f"image/{camera}", f"missing: the model takes exactly the cameras {list(cameras)} "
                                   f"(mask one out with image_mask/{camera} False), the observation has {given}")
    for camera in given:
        if camera not in cameras:
            raise ObservationError(f"image/{camera}", f"not one of the model's cameras {list(cameras)}")


def _image(observation: Observation, key: str, batch: int, image_size: int, resize: Resize) -> np.ndarray:
    value = observation[key]
    if not isinstance(value, (list, tuple)):
        return _pixels(key, np.asarray(value), batch)
    if len(value) != batch:
        raise ObservationError(key, f"{len(value)} per-row images for a batch of {batch}")
    rows = [_pixels(f"{key}[{index}]", np.asarray(row)[None], 1) for index, row in enumerate(value)]
    return np.concatenate([np.asarray(resize(jnp.asarray(row), image_size, image_size)) for row in rows])


def _pixels(key: str, value: np.ndarray, batch: int) -> np.ndarray:
    """A `[batch, h, w, 3]` image array checked and converted to float32 in [-1, 1]."""
    if value.ndim != 4 or value.shape[0] != batch or value.shape[3] != 3 or min(value.shape[1:3]) < 1:
        raise ObservationError(key, f"shape {value.shape}, expected ({batch}, height, width, 3)")
    if value.dtype == np.uint8:
        return to_model_range(value)
    if value.dtype.kind != "f" and "float" not in value.dtype.name:  # ml_dtypes' bfloat16 is kind "V"
        raise ObservationError(key, f"{value.dtype} images are not accepted: pass uint8 (0..255) or floats in [-1, 1]")
    value = value.astype(np.float32)
    if not np.isfinite(value).all():
        raise ObservationError(key, "holds NaN or infinite pixels")
    low, high = float(value.min()), float(value.max())
    if low < -1 - IMAGE_RANGE_TOLERANCE or high > 1 + IMAGE_RANGE_TOLERANCE:
        raise ObservationError(
            key, f"float pixels span [{low:.4g}, {high:.4g}], outside [-1, 1]: pass uint8 (0..255) or floats in [-1, 1]"
        )
    return value


def _token_ids(observation: Observation, key: str, shape: tuple[int, ...], vocab_size: int) -> np.ndarray:
    value = _array(observation, key, shape)
    if not np.issubdtype(value.dtype, np.integer):
        raise ObservationError(key, f"token ids must be integers, got {value.dtype}")
    if value.size and (value.min() < 0 or value.max() >= vocab_size):
        bad = value[(value < 0) | (value >= vocab_size)]
        raise ObservationError(
            key, f"token id {int(bad[0])} is outside the model's vocabulary [0, {vocab_size}) "
            "(a tokenizer that does not belong to this checkpoint?)"
        )
    return value.astype(np.int32)


def _check_near_misses(observation: Observation) -> None:
    """A key that is not one `validate` reads but nearly is (`image_masks/wrist`, `tokenised_prompt_mask`) is refused,
    naming the key meant."""
    for key in observation:
        prefix, slash, camera = key.partition("/")
        names, name = (_READ_PREFIXES, prefix) if slash else (_READ_KEYS, key)
        if name in names:
            continue
        near = difflib.get_close_matches(name, names, n=1, cutoff=NEAR_MISS_CUTOFF)
        if near:
            meant = f"{near[0]}/{camera}" if slash else near[0]
            raise ObservationError(key, f"not a key the model reads; did you mean {meant!r}? (read as absent, it would "
                                        "change the output without failing)")


def validate(
    observation: Observation, *, image_size: int, vocab_size: int, state_dim: int | None = None,
    resize: Resize | None = None, cameras: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """The observation as numpy arrays ready for a model, or ObservationError.

    Returns `image/<camera>` float32 in [-1, 1] at the size given (`resize_with_pad` is the model's; per-row images
    of different sizes already at `image_size`), `image_mask/<camera>` bool (True when absent),
    `tokenized_prompt` int32, the masks bool, `token_ar_mask` int32 (zeros when absent), `sample_index` int32
    (arange when absent) and, when `state_dim` is given (a model that reads the state), `state` float32.
    `resize`: the model's own resize of per-row images (default `resize_with_pad`, openpi's). `cameras`: the cameras
    the model takes, exactly (openpi's Pi0 / Pi0.5: `OPENPI_CAMERAS`, whose `preprocess_observation` refuses a missing
    one; one it does not know is refused too, where openpi would drop it); None: any.
    """
    _check_near_misses(observation)
    for key in _PROMPT_KEYS:
        if key not in observation:
            raise ObservationError(key, f"missing (the observation has {sorted(observation)})")
    prompt_shape = np.shape(observation["tokenized_prompt"])
    if len(prompt_shape) != 2:
        raise ObservationError("tokenized_prompt", f"shape {prompt_shape}, expected [batch, length]")
    batch = prompt_shape[0]
    if batch == 0:
        raise ObservationError("tokenized_prompt", "an empty batch (0 rows): nothing to run")
    if cameras is not None:
        _check_cameras(observation, cameras)
    cameras = observation_cameras(observation)
    if not cameras:
        raise ObservationError("image/<camera>", f"no camera in the observation (it has {sorted(observation)})")
    for key in observation:
        if key.startswith("image_mask/") and key.removeprefix("image_mask/") not in cameras:
            raise ObservationError(key, "a mask for a camera without an `image/` entry")
    validated: dict[str, np.ndarray] = {}
    for camera in cameras:
        validated[f"image/{camera}"] = _image(observation, f"image/{camera}", batch, image_size, resize or resize_with_pad)
        mask_key = f"image_mask/{camera}"
        validated[mask_key] = _mask(observation, mask_key, (batch,)) if mask_key in observation else np.ones(batch, bool)
    validated["tokenized_prompt"] = _token_ids(observation, "tokenized_prompt", prompt_shape, vocab_size)
    validated["tokenized_prompt_mask"] = _mask(observation, "tokenized_prompt_mask", prompt_shape)
    if "token_loss_mask" in observation:
        validated["token_loss_mask"] = _mask(observation, "token_loss_mask", prompt_shape)
    ar_mask = _mask(observation, "token_ar_mask", prompt_shape) if "token_ar_mask" in observation else np.zeros(prompt_shape, bool)
    validated["token_ar_mask"] = ar_mask.astype(np.int32)
    if "sample_index" in observation:
        sample_index = _array(observation, "sample_index", (batch,))
        if not np.issubdtype(sample_index.dtype, np.integer):
            raise ObservationError("sample_index", f"must be integers, got {sample_index.dtype}")
        validated["sample_index"] = sample_index.astype(np.int32)
    else:
        validated["sample_index"] = np.arange(batch, dtype=np.int32)
    if state_dim is not None:
        if "state" not in observation:
            raise ObservationError("state", f"missing (the observation has {sorted(observation)})")
        state = _array(observation, "state", (batch, state_dim))
        if state.dtype.kind not in "fiu" and "float" not in state.dtype.name:
            raise ObservationError("state", f"must be numbers, got {state.dtype}")
        validated["state"] = state.astype(np.float32)
        if not np.isfinite(validated["state"]).all():
            raise ObservationError("state", "holds NaN or infinite values")
    return validated


def check_num_steps(name: str, value: Any) -> int:
    """A positive integer step count (`num_steps`, `max_decoding_steps`), or ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def resize_with_pad(images: jax.Array, height: int, width: int, *, pad: Literal["center", "top_left"] = "center",
                    antialias: bool = True) -> jax.Array:
    """openpi's `image_tools.resize_with_pad` for float images `[b, h, w, c]` in [-1, 1] (identity at the target size):
    `jax.image.resize(..., "linear")` (antialiased when shrinking) to fit, clipped to [-1, 1], padded with -1 (black)
    to keep the aspect ratio, nothing rounded. Runs inside the jitted samplers, on every camera.

    `pad="top_left", antialias=False` is LeRobot's SmolVLA `resize_with_pad` instead: torch's bilinear
    `interpolate(align_corners=False)` (no antialiasing), the whole padding at the top and the left."""
    current_height, current_width = images.shape[1:3]
    if (current_height, current_width) == (height, width):
        return images
    ratio = max(current_width / width, current_height / height)
    resized_height, resized_width = int(current_height / ratio), int(current_width / ratio)
    resized = jax.image.resize(images, (images.shape[0], resized_height, resized_width, images.shape[3]), method="linear",
                               antialias=antialias)
    resized = jnp.clip(resized, -1.0, 1.0)
    pad_top, pad_left = height - resized_height, width - resized_width
    if pad == "center":
        pad_top, pad_left = pad_top // 2, pad_left // 2
    padding = ((0, 0), (pad_top, height - resized_height - pad_top), (pad_left, width - resized_width - pad_left), (0, 0))
    return jnp.pad(resized, padding, constant_values=-1.0)


# openpi's three camera slots, its `IMAGE_KEYS` (the data pipeline's `transforms.PI0_CAMERAS`): what Pi0 / Pi0.5 take
# and the benchmarks' random observations hold; with a prompt of this many valid tokens.
OPENPI_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
BENCHMARK_PROMPT_TOKENS = 12


def random_observation(config: Any, batch: int, live_cameras: int, seed: int = 0) -> dict[str, Any]:
    """Random inputs in the documented ranges for a PaliGemma-backbone `config` (a state where it has an action
    dimension); cameras beyond `live_cameras` are masked for the whole batch (MultiNet's Open-X: one of three)."""
    rng = np.random.default_rng(seed)
    size = config.siglip.image_size
    observation: dict[str, Any] = {}
    for index, camera in enumerate(OPENPI_CAMERAS):
        observation[f"image/{camera}"] = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
        observation[f"image_mask/{camera}"] = np.full(batch, index < live_cameras)
    observation["tokenized_prompt"] = rng.integers(0, config.vocab_size, (batch, config.max_token_len), dtype=np.int32)
    observation["tokenized_prompt_mask"] = np.arange(config.max_token_len)[None, :].repeat(batch, 0) < BENCHMARK_PROMPT_TOKENS
    if hasattr(config, "action_dim"):
        observation["state"] = rng.uniform(-1, 1, (batch, config.action_dim)).astype(np.float32)
    return observation
