"""Shared inputs for the Magma tests: the golden fixture written by Magma's own PyTorch code, and the model."""

from __future__ import annotations

import functools

import numpy as np

from conftest import shared_path
from multinet_jax.models import magma

ROBOT_TASK = "pick up the red block and put it in the blue bowl"
# The fixture's second case: its user turn names the image start/end tokens itself (make_fixture.py.txt).
MULTI_USER = ("<image_start><image><image_end>\n<image_start><image><image_end>\n"
              "What is in this image? Describe the two images.")


def magma_dir() -> str:
    """The tiny Magma in microsoft/Magma-8B's Hugging Face layout (`../shared/magma_reference`)."""
    return str(shared_path("magma_reference"))


@functools.cache
def _magma_io() -> dict[str, np.ndarray]:
    with np.load(shared_path("magma_reference", "io.npz")) as data:
        return {key: data[key] for key in data.files}


def magma_io() -> dict[str, np.ndarray]:
    """The fixture's inputs and outputs (a fresh dict of the cached arrays)."""
    return dict(_magma_io())


def case_images(case: str) -> list[np.ndarray]:
    data = _magma_io()
    return [data[key] for key in sorted(data) if key.startswith(f"{case}_image_") and key.endswith("_uint8")]


@functools.cache
def magma_model(dtype: str = "float32"):
    """The fixture checkpoint (cached: loading compiles)."""
    return magma.load(magma_dir(), dtype=dtype)
