"""Shared inputs for the OpenVLA tests: the golden fixture written by OpenVLA's own PyTorch code, and the model."""

from __future__ import annotations

import functools

import numpy as np

from conftest import shared_path
from multinet_jax.models import load_model


def openvla_dir() -> str:
    """The tiny OpenVLA in openvla/openvla-7b's Hugging Face layout (`../shared/openvla_reference/model`)."""
    return str(shared_path("openvla_reference", "model"))


@functools.cache
def _openvla_io() -> dict[str, np.ndarray]:
    with np.load(shared_path("openvla_reference", "io.npz")) as data:
        return {key: data[key] for key in data.files}


def openvla_io() -> dict[str, np.ndarray]:
    """The fixture's inputs and outputs (a fresh dict of the cached arrays)."""
    return dict(_openvla_io())


def fixture_images() -> list[np.ndarray]:
    data = _openvla_io()
    return [data[f"image_{i}"] for i in range(len(data["instructions"]))]


def fixture_instructions() -> list[str]:
    return [str(text) for text in _openvla_io()["instructions"]]


@functools.cache
def openvla_model(dtype: str = "float32"):
    """The fixture checkpoint loaded through `load_model` (cached: loading compiles)."""
    return load_model(openvla_dir(), dtype=dtype)
