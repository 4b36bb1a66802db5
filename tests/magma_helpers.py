"""Shared inputs for the Magma tests: the golden fixture written by Magma's own PyTorch code, and the model."""

from __future__ import annotations

import functools
import json
import pathlib

import numpy as np

from conftest import shared_path
from multinet_jax.models import magma

# What MultiNet's Magma game scripts built, parsed and scored (`fixtures/generate_multinet_magma_games.py.txt`).
GAMES_FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "multinet_magma_games.json"
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


def write_quadrupedal(directory: pathlib.Path) -> pathlib.Path:
    """`<directory>/openx_quadrupedal/test/`: the games fixture's constructed saytap-like shard (12 steps, 12-dim
    actions), written as its generator wrote it (`tf.data.Dataset.save`)."""
    import tensorflow as tf

    fixture = json.loads(GAMES_FIXTURE.read_text())["openx_quadrupedal"]
    steps = [{"observation": {"image": np.asarray(step["image"], np.uint8)}, "language_instruction": step["instruction"],
              "action": np.asarray(step["action"], np.float32), "reward": np.float32(0),
              "is_last": index == len(fixture["steps"]) - 1}
             for index, step in enumerate(fixture["steps"])]
    tf.data.Dataset.from_generator(lambda: iter(steps), output_signature={
        "observation": {"image": tf.TensorSpec((8, 10, 3), tf.uint8)}, "language_instruction": tf.TensorSpec((), tf.string),
        "action": tf.TensorSpec((12,), tf.float32), "reward": tf.TensorSpec((), tf.float32), "is_last": tf.TensorSpec((), tf.bool),
    }).save(str(directory / "openx_quadrupedal" / "test" / "translated_shard_0"))
    return directory
