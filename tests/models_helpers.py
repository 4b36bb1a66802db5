"""Shared inputs for the model, weights and sharding tests: the openpi golden fixture and small observations."""

from __future__ import annotations

import numpy as np

from conftest import openpi_io, openpi_observation, shared_path


def openpi_checkpoint(model: str) -> str:
    """openpi's tiny "pi0" or "pi05" training checkpoint step dir (`params/` + `assets/tiny_robot/norm_stats.json`)."""
    return str(shared_path("openpi_reference", model, "ckpt", "0"))


def pi0_checkpoint() -> str:
    return openpi_checkpoint("pi0")


def pi0_io() -> dict[str, np.ndarray]:
    """The fixture's inputs, noise and openpi outputs (a fresh dict of the cached arrays)."""
    return openpi_io("pi0")


def pi0_observation() -> dict[str, np.ndarray]:
    """The fixture's observation dict (keys without `obs/`, in the file's order: base, left wrist, right wrist)."""
    return openpi_observation("pi0")


def take(observation: dict[str, np.ndarray], rows: list[int]) -> dict[str, np.ndarray]:
    """The observation restricted to `rows` (same key order)."""
    return {key: value[rows] for key, value in observation.items()}


def relative_error(actual, expected) -> float:
    expected = np.asarray(expected, np.float64)
    return float(np.abs(np.asarray(actual, np.float64) - expected).max() / np.abs(expected).max())


def random_like(shapes, seed: int = 0, scale: float = 0.3):
    """Numpy normal(0, scale) arrays for a tree of ShapeDtypeStructs (no compiled initializer needed)."""
    import jax

    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


def tiny_observation(batch: int = 2, length: int = 5) -> dict[str, np.ndarray]:
    """A valid observation for `validate(..., image_size=14, vocab_size=8, state_dim=4)`: one camera, 5 tokens."""
    return {
        "image/base_0_rgb": np.zeros((batch, 14, 14, 3), np.float32),
        "image_mask/base_0_rgb": np.ones(batch, bool),
        "tokenized_prompt": np.ones((batch, length), np.int32),
        "tokenized_prompt_mask": np.ones((batch, length), bool),
        "state": np.zeros((batch, 4), np.float32),
    }
