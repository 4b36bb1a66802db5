"""SigLIP ViT image encoder in Flax, with openpi's (big_vision's) parameter names and numerics.

Parameter layout (so openpi checkpoints load as-is): `embedding/{kernel,bias}` (the 14x14 patch "conv"),
`pos_embedding` `[1, tokens, width]`, `Transformer/encoderblock/...` with a leading depth axis (scanned blocks:
`LayerNorm_0`, `MultiHeadDotProductAttention_0/{query,key,value,out}`, `LayerNorm_1`, `MlpBlock_0/Dense_{0,1}`),
`Transformer/encoder_norm`, and `head` (Dense to the LLM width). No pooling: 256 tokens per 224x224 image.

Numerics as openpi: patch embedding and position embedding in float32, then `dtype` for the blocks; pre-LN blocks
with LayerNorm eps 1e-6, tanh-approximated GELU (flax's default, which big_vision uses), attention logits and
softmax in float32; matmuls summed and GELU evaluated in float32, each rounded once to `dtype` (`numerics`, as
on TPU/GPU). The patch embedding is a reshape + matmul rather than a strided convolution, and attention
uses plain batched-matmul layouts (`gemma.grouped_attention`): the same sums, faster on CPU.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from multinet_jax.models import numerics
from multinet_jax.models.configs import SiglipConfig
from multinet_jax.models.gemma import grouped_attention

_DENSE_OPTIONS = {
    "kernel_init": nn.initializers.xavier_uniform(),
    "bias_init": nn.initializers.normal(stddev=1e-6),
    "dot_general": numerics.dot_general,
}


class PatchEmbedding(nn.Module):
    """Non-overlapping patch projection with a conv-shaped kernel `[p, p, channels, width]` (openpi's `embedding`)."""

    patch_size: int
    width: int

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        p = self.patch_size
        b, h, w, c = images.shape
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (p, p, c, self.width), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.width,), jnp.float32)
        patches = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(b, (h // p) * (w // p), p * p * c)
        return patches @ kernel.astype(jnp.float32).reshape(p * p * c, self.width) + bias.astype(jnp.float32)


class SelfAttention(nn.Module):
    """Multi-head self-attention with flax `MultiHeadDotProductAttention`'s parameter names and shapes
    (`query`/`key`/`value` `[width, heads, head_dim]`, `out` `[heads, head_dim, width]`)."""

    num_heads: int
    dtype: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        head_dim = width // self.num_heads
        q, k, v = (
            nn.DenseGeneral((self.num_heads, head_dim), dtype=self.dtype, name=name, **_DENSE_OPTIONS)(x)
            for name in ("query", "key", "value")
        )
        encoded = grouped_attention(q * jnp.asarray(head_dim**-0.5, q.dtype), k, v, None)
        return nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype, name="out", **_DENSE_OPTIONS)(encoded)


class MlpBlock(nn.Module):
    mlp_dim: int
    dtype: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.Dense(self.mlp_dim, dtype=self.dtype, **_DENSE_OPTIONS)(x)
        return nn.Dense(x.shape[-1], dtype=self.dtype, **_DENSE_OPTIONS)(numerics.gelu(y))


class EncoderBlock(nn.Module):
    """Pre-LN transformer block; scanned over depth (carry = activations)."""

    config: SiglipConfig
    dtype: str

    @nn.compact
    def __call__(self, x: jax.Array, _: None) -> tuple[jax.Array, None]:
        y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)(x)
        x = x + SelfAttention(self.config.num_heads, self.dtype, name="MultiHeadDotProductAttention_0")(y)
        y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)(x)
        return x + MlpBlock(self.config.mlp_dim, self.dtype, name="MlpBlock_0")(y), None


class Encoder(nn.Module):
    config: SiglipConfig
    dtype: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        blocks = numerics.scan_layers(EncoderBlock, length=self.config.depth, initializing=self.is_initializing())(
            self.config, self.dtype, name="encoderblock"
        )
        x, _ = blocks(x, None)
        return nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="encoder_norm")(x)


class Siglip(nn.Module):
    """Images `[b, H, W, 3]` in [-1, 1] -> tokens `[b, (H/p)*(W/p), out_width]` in `dtype`."""

    config: SiglipConfig
    out_width: int
    dtype: str = "float32"

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        cfg = self.config
        x = PatchEmbedding(cfg.patch_size, cfg.width, name="embedding")(images.astype(jnp.float32))
        pos = self.param("pos_embedding", nn.initializers.normal(stddev=cfg.width**-0.5), (1, x.shape[1], cfg.width))
        x = (x + pos.astype(jnp.float32)).astype(self.dtype)
        x = Encoder(cfg, self.dtype, name="Transformer")(x)
        return nn.Dense(self.out_width, dtype=self.dtype, dot_general=numerics.dot_general, name="head")(x)
