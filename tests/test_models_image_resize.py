"""The model's image boundary: uint8 -> [-1, 1] and openpi's float resize with padding (`models.observation`), on
hand-made images."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from multinet_jax.models.observation import resize_with_pad, to_model_range


def test_to_model_range_is_openpis_and_hugging_faces_bit_for_bit():
    """openpi's `x / 255 * 2 - 1` and the HF SigLIP processor's rescale + normalize, for every uint8 value."""
    pixels = np.arange(256, dtype=np.uint8)
    openpi = pixels.astype(np.float32) / 255.0 * 2.0 - 1.0
    rescaled = (pixels.astype(np.float64) * (1 / 255)).astype(np.float32)
    hugging_face = (rescaled - np.float32(0.5)) / np.float32(0.5)
    converted = to_model_range(pixels)
    assert converted.dtype == np.float32 and converted[0] == -1.0 and converted[255] == 1.0
    np.testing.assert_array_equal(converted, openpi)
    np.testing.assert_array_equal(converted, hugging_face)


def test_resize_with_pad_keeps_the_aspect_ratio_with_black_bars():
    """200 wide x 100 high -> 224 x 112 of content, 56 rows of -1 above and below (openpi's divmod split)."""
    image = jnp.full((1, 100, 200, 3), 0.5, jnp.float32)
    out = np.asarray(resize_with_pad(image, 224, 224))
    assert out.shape == (1, 224, 224, 3)
    assert np.all(out[:, :56] == -1.0) and np.all(out[:, 168:] == -1.0)
    np.testing.assert_allclose(out[:, 56:168], 0.5, atol=1e-6)
    odd = np.asarray(resize_with_pad(jnp.full((1, 224, 75, 3), 1.0), 224, 224))  # pad 149: 74 + 75
    assert np.all(odd[:, :, :74] == -1.0) and np.all(odd[:, :, 149:] == -1.0) and np.allclose(odd[:, :, 74:149], 1.0)


def test_resize_with_pad_is_identity_at_the_target_size_and_clips_overshoot():
    image = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)), jnp.float32)
    assert resize_with_pad(image, 224, 224) is image
    checkers = jnp.asarray(np.indices((64, 64)).sum(axis=0) % 2 * 2.0 - 1.0, jnp.float32)[None, :, :, None].repeat(3, axis=3)
    out = np.asarray(resize_with_pad(checkers, 24, 24))
    assert out.min() >= -1.0 and out.max() <= 1.0
