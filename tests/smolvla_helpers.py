"""Shared inputs for the SmolVLA tests: the golden fixture written by LeRobot's own code, and the model."""

from __future__ import annotations

import functools

import numpy as np

from conftest import shared_path
from multinet_jax.models import smolvla

CAMERAS = ("camera1", "camera2")


def smolvla_dir() -> str:
    """The tiny SmolVLA in LeRobot's layout (`../shared/smolvla_reference/policy`, its backbone folder beside it)."""
    return str(shared_path("smolvla_reference", "policy"))


@functools.cache
def _smolvla_io() -> dict[str, np.ndarray]:
    with np.load(shared_path("smolvla_reference", "io.npz")) as data:
        return {key: data[key] for key in data.files}


def smolvla_io() -> dict[str, np.ndarray]:
    """The fixture's inputs, outputs and intermediates (a fresh dict of the cached arrays)."""
    return dict(_smolvla_io())


@functools.cache
def smolvla_model(dtype: str = "float32") -> smolvla.SmolVLAModel:
    """The fixture checkpoint loaded through the family's loader (cached: loading compiles)."""
    return smolvla.load(smolvla_dir(), dtype=dtype)


def preprocessed_observation() -> dict[str, np.ndarray]:
    """The model-level inputs LeRobot's `sample_actions` got: 256 x 256 images in [-1, 1] (NHWC), its tokens and
    the normalized, padded state."""
    io = _smolvla_io()
    observation = {f"image/{camera}": io[f"image_{camera}"].transpose(0, 2, 3, 1) for camera in CAMERAS}
    return {**observation, "tokenized_prompt": io["lang_tokens"], "tokenized_prompt_mask": io["lang_masks"],
            "state": io["state_padded"]}


def raw_observation() -> dict[str, object]:
    """What LeRobot's preprocessor got: the cameras' raw uint8 pixels at their own sizes (NHWC), the task texts and
    the raw state."""
    io = _smolvla_io()
    observation = {f"image/{camera}": io[f"raw_image_{camera}_uint8"].transpose(0, 2, 3, 1) for camera in CAMERAS}
    return {**observation, "prompt": [str(task) for task in io["tasks"]], "state": io["raw_state"]}
