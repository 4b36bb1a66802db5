"""`models.numerics`: float32-accumulating matmuls, single-rounding GELU, layer scans whose bfloat16 weights
are never copied to float32 (XLA's CPU backend did so for a plain scan: a float32 copy of every weight per call),
and softmax attention normalized after the product with the values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from multinet_jax.models import configs, numerics
from multinet_jax.models.vit import ViT


def _random(shape, seed, dtype):
    return jax.random.normal(jax.random.key(seed), shape).astype(dtype)


def test_bfloat16_products_are_the_float32_sums_rounded_once():
    lhs, rhs = _random((64, 512), 0, jnp.bfloat16), _random((512, 96), 1, jnp.bfloat16)
    exact = np.asarray(lhs, np.float64) @ np.asarray(rhs, np.float64)
    out = numerics.einsum("ij,jk->ik", lhs, rhs)
    assert out.dtype == jnp.bfloat16
    # One rounding of a float32 sum: within one bf16 half-ulp (2^-9 relative) plus float32 summation error.
    np.testing.assert_allclose(np.asarray(out, np.float64), exact, rtol=2**-8, atol=1e-3)
    flax_style = numerics.dot_general(lhs, rhs, (((1,), (0,)), ((), ())))
    np.testing.assert_array_equal(np.asarray(flax_style), np.asarray(out))


def test_float32_products_are_unchanged():
    lhs, rhs = _random((32, 128), 2, jnp.float32), _random((128, 16), 3, jnp.float32)
    np.testing.assert_array_equal(np.asarray(numerics.einsum("ij,jk->ik", lhs, rhs)), np.asarray(jnp.dot(lhs, rhs)))


def test_gelu_rounds_once_from_float32():
    x = _random((4096,), 4, jnp.bfloat16)
    expected = jax.nn.gelu(x.astype(jnp.float32), approximate=True).astype(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(numerics.gelu(x)), np.asarray(expected))
    assert numerics.gelu(x).dtype == jnp.bfloat16


def _siglip_forward(dtype: str):
    """A SigLIP with large weights (4 x 3.1M parameters) and tiny activations (4 tokens per image)."""
    config = configs.SiglipConfig(width=512, depth=4, mlp_dim=2048, num_heads=8, image_size=28)
    module = ViT(config, out_width=64, dtype=dtype)
    images = jax.random.uniform(jax.random.key(1), (1, 28, 28, 3), minval=-1.0, maxval=1.0)
    params = jax.tree.map(lambda p: p.astype(dtype), module.init(jax.random.key(0), images))
    return module, params, images


def test_bfloat16_layer_scan_keeps_weights_in_bfloat16_and_matches_float32():
    module, params, images = _siglip_forward("bfloat16")
    compiled = jax.jit(module.apply).lower(params, images).compile()
    stacked = params["params"]["Transformer"]["encoderblock"]
    stacked_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(stacked))
    # Activations here are a few KB. XLA's CPU backend keeps one working copy of the bf16 weights (25 MB, as for
    # unrolled layers); a plain scan adds the float32 copy of the stack on top (63 MB of temporaries in all).
    assert compiled.memory_analysis().temp_size_in_bytes < 1.5 * stacked_bytes

    outputs = np.asarray(compiled(params, images), np.float32)
    assert np.isfinite(outputs).all()
    float32_module, float32_params, _ = _siglip_forward("float32")
    reference = np.asarray(float32_module.apply(float32_params, images), np.float32)
    scale = np.abs(reference).max()
    assert np.abs(outputs - reference).max() < 0.05 * scale  # bf16 rounding, not a wrong layer order or slice


def test_attend_is_softmax_attention_with_the_normalization_moved_to_the_output():
    """float64 softmax(logits) @ values: float32 within float32 rounding, bfloat16 within one rounding of the
    weights and of the output; a masked key (a huge negative logit, as the models write masks) gets no weight."""
    logits = _random((2, 3, 40, 56), 0, jnp.float32) * 4
    logits = logits.at[..., :5].set(-2.3819763e38)  # the models' masked logit
    values = _random((2, 3, 56, 24), 1, jnp.float32)
    exact_logits = np.asarray(logits, np.float64)
    weights = np.exp(exact_logits - exact_logits.max(-1, keepdims=True))
    exact = (weights / weights.sum(-1, keepdims=True)) @ np.asarray(values, np.float64)
    out = numerics.attend(logits, values)
    assert out.dtype == jnp.float32 and out.shape == (2, 3, 40, 24)
    np.testing.assert_allclose(np.asarray(out, np.float64), exact, rtol=1e-5, atol=1e-6)
    changed = numerics.attend(logits, values.at[..., :5, :].set(1e3))  # values of masked keys are never read
    np.testing.assert_array_equal(np.asarray(changed), np.asarray(out))
    bf16 = numerics.attend(logits, values.astype(jnp.bfloat16))
    assert bf16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(bf16, np.float64), exact, rtol=2**-7, atol=2**-7)
