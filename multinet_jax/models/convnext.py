"""The ConvNeXt image trunk in Flax (timm's `ConvNeXt`, as open_clip's `convnext_xxlarge` tower holds it), read the way
Magma reads it: `trunk.stages(trunk.stem(x))`, without the final norm or head.

Layout (NHWC throughout): `stem` (a 4x4 / stride-4 patch projection, the shared `vit.PatchEmbedding`) then
`stem_norm` (LayerNorm over channels); stage i > 0 starts with `downsample_norm` + a 2x2 / stride-2 projection
(`downsample`); each block is `conv_dw` (7x7 depthwise, padding 3) -> `norm` (LayerNorm) -> `fc1` (4x width) ->
exact GELU -> `fc2` -> times `gamma` (layer scale) -> plus the block's input. Blocks are scanned per stage (leading
depth axis). All LayerNorms use eps 1e-5 (timm's `norm_eps` for convnext_xxlarge) and the two-pass variance.

Numerics follow the project (`models.numerics`): matmuls and convolutions accumulate in float32 and round once to the
activation dtype; GELU in float32; the patch projections in float32, as `vit.PatchEmbedding` does.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from multinet_jax.models import numerics
from multinet_jax.models.vit import PatchEmbedding

LAYER_NORM_EPS = 1e-5
STEM_PATCH = 4
DOWNSAMPLE_PATCH = 2


@dataclasses.dataclass(frozen=True)
class ConvNeXtConfig:
    """Per-stage block counts and widths; convnext_xxlarge is depths (3, 4, 30, 3), widths (384, 768, 1536, 3072)."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.depths) != len(self.widths) or not self.depths or min(self.depths + self.widths) < 1:
            raise ValueError(f"ConvNeXt needs one positive depth and width per stage, got {self.depths} / {self.widths}")

    @property
    def stride(self) -> int:
        """Input pixels per output position along each axis (32 for four stages)."""
        return STEM_PATCH * DOWNSAMPLE_PATCH ** (len(self.depths) - 1)

    @property
    def out_width(self) -> int:
        return self.widths[-1]


def _conv(lhs: jax.Array, rhs: jax.Array, *args, **kwargs) -> jax.Array:
    """`lax.conv_general_dilated` accumulating in float32, rounded once to the input's dtype (flax's hook)."""
    kwargs.pop("preferred_element_type", None)
    out = jax.lax.conv_general_dilated(lhs, rhs.astype(lhs.dtype), *args, preferred_element_type=jnp.float32, **kwargs)
    return out.astype(lhs.dtype)


def _layer_norm(name: str, dtype: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=dtype, use_fast_variance=False, name=name)


class Block(nn.Module):
    """One ConvNeXt block (timm's `ConvNeXtBlock` with `conv_mlp=False`); scanned, the activations are the carry."""

    dtype: str

    @nn.compact
    def __call__(self, x: jax.Array, _: None) -> tuple[jax.Array, None]:
        width = x.shape[-1]
        dense = functools.partial(nn.Dense, dtype=self.dtype, dot_general=numerics.dot_general)
        y = nn.Conv(width, (7, 7), padding=((3, 3), (3, 3)), feature_group_count=width, dtype=self.dtype,
                    conv_general_dilated=_conv, name="conv_dw")(x)
        y = _layer_norm("norm", self.dtype)(y)
        y = numerics.gelu(dense(4 * width, name="fc1")(y), approximate=False)
        y = dense(width, name="fc2")(y)
        gamma = self.param("gamma", nn.initializers.constant(1e-6), (width,))
        return x + y * gamma.astype(y.dtype), None


def _project_patches(x: jax.Array, patch: int, width: int, name: str, dtype: str) -> jax.Array:
    """A non-overlapping `patch` x `patch` convolution of NHWC `x` -> NHWC `[b, h / patch, w / patch, width]`."""
    b, h, w, _ = x.shape
    return PatchEmbedding(patch, width, name=name)(x).reshape(b, h // patch, w // patch, width).astype(dtype)


class Stage(nn.Module):
    depth: int
    width: int
    downsample: bool
    dtype: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.downsample:
            x = _layer_norm("downsample_norm", self.dtype)(x)
            x = _project_patches(x, DOWNSAMPLE_PATCH, self.width, "downsample", self.dtype)
        blocks = numerics.scan_layers(Block, length=self.depth, initializing=self.is_initializing())(self.dtype, name="blocks")
        x, _ = blocks(x, None)
        return x


class ConvNeXt(nn.Module):
    """Images NHWC `[n, S, S, 3]` (normalized as the processor does; S a multiple of `config.stride`) -> feature maps
    `[n, S / stride, S / stride, out_width]` in `dtype`."""

    config: ConvNeXtConfig
    dtype: str = "float32"

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        cfg = self.config
        if images.shape[1] % cfg.stride or images.shape[2] % cfg.stride:
            raise ValueError(f"ConvNeXt images must be multiples of {cfg.stride} pixels, got {images.shape[1:3]}")
        x = _project_patches(images.astype(jnp.float32), STEM_PATCH, cfg.widths[0], "stem", self.dtype)
        x = _layer_norm("stem_norm", self.dtype)(x)
        for index, (depth, width) in enumerate(zip(cfg.depths, cfg.widths)):
            x = Stage(depth, width, index > 0, self.dtype, name=f"stage_{index}")(x)
        return x
