"""The one ViT image encoder in Flax: SigLIP as openpi/big_vision have it, and the timm ViTs of OpenVLA (DINOv2 with
registers and LayerScale, SigLIP So400m) through `ViTConfig` switches, all with big_vision's parameter names (the
Hugging Face reader maps timm's names onto them: `models/openvla_checkpoint.py`).

Parameter layout (so openpi checkpoints load as-is): `embedding/{kernel,bias}` (the 14x14 patch "conv"),
`pos_embedding` `[1, tokens, width]`, `Transformer/encoderblock/...` with a leading depth axis (scanned blocks:
`LayerNorm_0`, `MultiHeadDotProductAttention_0/{query,key,value,out}`, `LayerNorm_1`, `MlpBlock_0/Dense_{0,1}`),
`Transformer/encoder_norm`, and `head` (Dense to the LLM width). No pooling: 256 tokens per 224x224 image.
Switches (off for openpi's SigLIP, so its tree is unchanged): `class_token` / `num_registers` add `cls` `[1, 1, w]` /
`registers` `[1, r, w]` prepended after the position embedding (timm's `no_embed_class`) and dropped from the output;
`layer_scale` adds `LayerScale_{0,1}/scale` to each block; `exact_gelu` uses erf GELU (timm's `nn.GELU`) instead of
tanh's; `final_norm=False` returns the last block's output as it is (OpenVLA reads the second-to-last block
without the norm: its config runs depth - 1 blocks); `out_width=None` drops the `head`.

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
from multinet_jax.models.configs import ViTConfig
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
    exact_gelu: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.Dense(self.mlp_dim, dtype=self.dtype, **_DENSE_OPTIONS)(x)
        y = numerics.gelu(y, approximate=not self.exact_gelu)
        return nn.Dense(x.shape[-1], dtype=self.dtype, **_DENSE_OPTIONS)(y)


class LayerScale(nn.Module):
    """Per-channel residual-branch scale (DINOv2; timm's `ls1`/`ls2`)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.param("scale", nn.initializers.constant(1e-5), (x.shape[-1],)).astype(x.dtype)


class EncoderBlock(nn.Module):
    """Pre-LN transformer block; scanned over depth (carry = activations)."""

    config: ViTConfig
    dtype: str

    @nn.compact
    def __call__(self, x: jax.Array, _: None) -> tuple[jax.Array, None]:
        cfg = self.config
        scale = (lambda name: LayerScale(name=name)) if cfg.layer_scale else (lambda name: lambda y: y)
        y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)(x)
        x = x + scale("LayerScale_0")(SelfAttention(cfg.num_heads, self.dtype, name="MultiHeadDotProductAttention_0")(y))
        y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)(x)
        return x + scale("LayerScale_1")(MlpBlock(cfg.mlp_dim, self.dtype, cfg.exact_gelu, name="MlpBlock_0")(y)), None


class Encoder(nn.Module):
    config: ViTConfig
    dtype: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        blocks = numerics.scan_layers(EncoderBlock, length=self.config.depth, initializing=self.is_initializing())(
            self.config, self.dtype, name="encoderblock"
        )
        x, _ = blocks(x, None)
        if not self.config.final_norm:
            return x
        return nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="encoder_norm")(x)


class ViT(nn.Module):
    """Images `[b, H, W, 3]` (normalized as the family's preprocessing does) -> patch tokens
    `[b, (H/p)*(W/p), out_width or width]` in `dtype` (prefix tokens dropped)."""

    config: ViTConfig
    out_width: int | None
    dtype: str = "float32"

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        cfg = self.config
        x = PatchEmbedding(cfg.patch_size, cfg.width, name="embedding")(images.astype(jnp.float32))
        pos = self.param("pos_embedding", nn.initializers.normal(stddev=cfg.width**-0.5), (1, x.shape[1], cfg.width))
        x = x + pos.astype(jnp.float32)
        prefix = []
        if cfg.class_token:
            prefix.append(self.param("cls", nn.initializers.zeros_init(), (1, 1, cfg.width)))
        if cfg.num_registers:
            prefix.append(self.param("registers", nn.initializers.zeros_init(), (1, cfg.num_registers, cfg.width)))
        num_prefix = sum(part.shape[1] for part in prefix)
        if prefix:
            prefix = [jnp.broadcast_to(part.astype(jnp.float32), (x.shape[0], *part.shape[1:])) for part in prefix]
            x = jnp.concatenate([*prefix, x], axis=1)
        x = Encoder(cfg, self.dtype, name="Transformer")(x.astype(self.dtype))[:, num_prefix:]
        if self.out_width is None:
            return x
        return nn.Dense(self.out_width, dtype=self.dtype, dot_general=numerics.dot_general, name="head")(x)
