"""Gemma decoder with a mixture of experts sharing joint attention (PaliGemma expert 0 + Pi0's action expert 1); the
one decoder-LM of the project: `GemmaConfig`'s switches also make it Llama-2 (OpenVLA), see "Llama" below.

Parameter layout equals openpi's (`PaliGemma/llm/...`), scanned over depth (leading depth axis):
`embedder/input_embedding`, `layers/attn/{q_einsum,kv_einsum,attn_vec_einsum}[_i]/w`,
`layers/mlp[_i]/{gating_einsum,linear}`, `layers/{pre_attention_norm,pre_ffw_norm}[_i]/scale`, `final_norm[_i]/scale`.
Expert 0 has no suffix, expert i > 0 the suffix `_i`. Each expert projects its own tokens with its own weights; all
tokens then attend jointly (experts share depth, heads and head_dim).

adaRMSNorm (Pi0.5's action expert, `adaptive_norms[i]`): the expert's three norms (`pre_attention_norm_i`,
`pre_ffw_norm_i`, `final_norm_i`) hold a `Dense_0` instead of `scale`; it maps the expert's conditioning vector
(`adarms_cond[i]`, `[b, width_i]`, Pi0.5's flow-time embedding) to per-sample (scale, shift, gate), the norm outputs
`normed * (1 + scale) + shift`, and the residual branch after it is multiplied by `gate` (the final norm's gate is
unused), as openpi's `gemma.RMSNorm(x, cond)` and `_gated_residual`.

Numerics as openpi: RMSNorm `x * rsqrt(mean(x^2) + 1e-6) * (1 + scale)` in float32, cast back to the activation
dtype; tanh-GELU gated MLP; RoPE (max wavelength 10000, split-half rotation) computed in float32; embeddings scaled
by sqrt(width); attention logits and softmax in float32; weights cast to the activation dtype (`dtype`) at use.
Matmuls sum in float32 and GELU runs in float32, each rounded once to `dtype`, as on TPU/GPU (`numerics`).

Llama (OpenVLA's Llama-2, one expert, switches in `GemmaConfig`): RMSNorm multiplies by `scale` (`norm_offset=False`,
eps from the checkpoint), SiLU-gated MLP (`gating_einsum[0]` = gate_proj, `[1]` = up_proj), no embedding scaling,
logits from a separate `embedder/lm_head` `[vocab, width]`, RoPE base `rope_theta`. HF's Llama rotates split halves
as `apply_rope` does, so only the parameter mapping differs (`models/openvla_checkpoint.py`).

KV-cache API (Pi0's flow sampler and the Pi0-FAST decoder both use it)::

    outputs, kv_cache = gemma.apply(params, embedded, positions, attn_mask,
                                    kv_cache=None, cache_write_index=None, adarms_cond=None)

- `embedded`: one entry per expert, `[b, t_i, width_i]` or None (that expert does not compute; its output is None).
  The tokens of the non-None entries are concatenated in expert order (t = sum of t_i).
- `positions`: int32 `[b, t]` RoPE positions of the new tokens.
- `attn_mask`: bool `[b, t, s]`, True where query token t may attend key s (s as described below).
- `adarms_cond`: one entry per expert, `[b, width_i]` for an expert with adaptive norms that computes, else None.
- `outputs`: per expert, the final-normed hidden states `[b, t_i, width_i]` (None where the input was None).
- `kv_cache` = (k, v), each `[depth, b, s, num_kv_heads, head_dim]`, in the activation dtype:
  * `kv_cache=None`: the tokens attend among themselves (s = t); returns their (k, v) (prefill).
  * `kv_cache` given, `cache_write_index=None`: attend over concat(cache, new) (s = cache_len + t) and return that
    concatenation. Pi0's suffix attends to the prefix cache like this at every flow step.
  * `cache_write_index` given (int32 scalar, may be traced): write the new k/v into the preallocated cache at
    slots [index, index + t) (`lax.dynamic_update_slice` along s), attend over the whole cache (s = cache_len;
    mask the unwritten slots in `attn_mask`), and return the updated cache. The write is in place (the stack is
    the layer scan's carry). A bf16 cache may be given as its uint16 bits (`numerics.bfloat16_as_bits`) and then
    comes back so: a decode loop keeps it as bits, so that no step converts the whole cache.
- `embed(tokens)` (method): int tokens `[b, t]` -> `[b, t, width_0]` in `dtype`, scaled by sqrt(width_0).
- `logits(x)` (method): `[b, t, width_0]` -> float32 `[b, t, vocab]` via the tied embedding (or `lm_head`).
Use `Gemma.apply(params, tokens, method="embed")` / `method="logits"` with the `llm` sub-tree as params.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from multinet_jax.models import attention, numerics
from multinet_jax.models.configs import GemmaConfig

KVCache = tuple[jax.Array, jax.Array]
# openpi's (and gemma's) masked-logit value: large and finite, so a fully masked row stays NaN-free.
_BIG_NEG = -2.3819763e38


def expert_name(name: str, index: int) -> str:
    """openpi's naming: expert 0 keeps PaliGemma's names, expert i gets the suffix `_i`."""
    return name if index == 0 else f"{name}_{index}"


class RMSNorm(nn.Module):
    """`x / rms(x)` in float32, times `1 + scale` (Gemma, `offset`) or `scale` (Llama)."""

    eps: float = 1e-6
    offset: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = nn.initializers.zeros_init() if self.offset else nn.initializers.ones_init()
        scale = self.param("scale", init, (x.shape[-1],))
        return (_normalize(x, self.eps) * (1 + scale if self.offset else scale)).astype(x.dtype)


class AdaRMSNorm(nn.Module):
    """RMSNorm whose scale, shift and gate come from a conditioning vector (openpi's `RMSNorm(x, cond)`)."""

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(normed `[b, t, d]` in x's dtype, gate `[b, 1, d]` for the residual that follows)."""
        dense = nn.Dense(3 * x.shape[-1], dtype=x.dtype, kernel_init=nn.initializers.zeros, dot_general=numerics.dot_general)
        scale, shift, gate = jnp.split(dense(cond)[:, None, :], 3, axis=-1)
        return (_normalize(x) * (1 + scale) + shift).astype(x.dtype), gate


def _normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """x / rms(x) in float32 (the variance of the float32 values, as openpi)."""
    variance = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(variance + eps)


def make_norm(name: str, index: int, adaptive: bool, config: GemmaConfig) -> nn.Module:
    """Expert `index`'s norm `name`: an AdaRMSNorm when the expert's norms are adaptive, else an RMSNorm with the
    expert's switches (eps, `1 + scale` or `scale`)."""
    if adaptive:
        return AdaRMSNorm(name=expert_name(name, index))
    return RMSNorm(config.norm_eps, config.norm_offset, name=expert_name(name, index))


def apply_norm(norm: nn.Module, x: jax.Array, cond: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
    """(normed x, the residual gate or None) for either kind of norm."""
    if not isinstance(norm, AdaRMSNorm):
        return norm(x), None
    if cond is None:
        raise ValueError(f"{norm.name} is an adaptive norm: the expert needs its adarms_cond")
    return norm(x, cond)


def _gated_residual(x: jax.Array, y: jax.Array, gate: jax.Array | None) -> jax.Array:
    return x + y if gate is None else x + y * gate


class Einsum(nn.Module):
    """A weight `w` applied with an einsum equation, in the input's dtype."""

    shape: tuple[int, ...]
    init_fn: nn.initializers.Initializer

    @nn.compact
    def __call__(self, equation: str, x: jax.Array) -> jax.Array:
        w = self.param("w", self.init_fn, self.shape)
        return numerics.einsum(equation, x, w.astype(x.dtype))


class FeedForward(nn.Module):
    """Gated tanh-GELU MLP with openpi's `gating_einsum` `[2, width, mlp_dim]` and `linear` `[mlp_dim, width]`."""

    config: GemmaConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
        gating = self.param("gating_einsum", init, (2, cfg.width, cfg.mlp_dim)).astype(x.dtype)
        linear = self.param("linear", nn.initializers.lecun_normal(), (cfg.mlp_dim, cfg.width)).astype(x.dtype)
        # Both halves in one product batched over the stacked axis: the weight is read where it lies (`gating[i]`
        # made XLA's CPU backend copy each half out, through float32, per layer and step).
        gate, up = numerics.einsum("cbtd,cdf->cbtf", jnp.broadcast_to(x, (2, *x.shape)), gating)
        hidden = numerics.gelu(gate) if cfg.activation == "gelu_tanh" else numerics.silu(gate)
        return numerics.einsum("btf,fd->btd", hidden * up, linear)


def rope_sin_cos(positions: jax.Array, head_dim: int, max_wavelength: float = 10_000.0) -> tuple[jax.Array, jax.Array]:
    """(sin, cos) of the split-half rotary angles at `positions` `[b, t]`, as `[b, t, head_dim / 2]` float32.
    Computed once for the queries and keys of a layer: two `apply_rope` calls made XLA compute them twice per decode
    step (hoisted out of the layer scan, but not merged); and without the heads axis, which at batch 8 XLA's CPU
    backend laid out apart and copied per step."""
    half = head_dim // 2
    timescale = max_wavelength ** ((2.0 / head_dim) * jnp.arange(half, dtype=jnp.float32))
    radians = positions[..., None].astype(jnp.float32) / timescale
    return jnp.sin(radians), jnp.cos(radians)


def rotate(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
    """`x` `[b, t, heads, head_dim]` rotated by `rope_sin_cos`'s angles, in float32, returned in `x`'s dtype."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    sin, cos = sin[..., None, :], cos[..., None, :]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def apply_rope(x: jax.Array, positions: jax.Array, max_wavelength: float = 10_000.0) -> jax.Array:
    """Rotary embedding of `x` `[b, t, heads, head_dim]` at `positions` `[b, t]`, split-half, in float32."""
    return rotate(x, *rope_sin_cos(positions, x.shape[-1], max_wavelength))


def _attend_cache(
    k: jax.Array, v: jax.Array, kv_cache: KVCache | None, layer: jax.Array, cache_write_index: jax.Array | None
) -> tuple[KVCache, KVCache | None]:
    """(this layer's keys and values to attend over, the stacked cache after this layer) per the three cache modes
    in the module docstring. `kv_cache` is the whole stack `[depth, ...]`, bf16 as uint16 bits (`Gemma.__call__`),
    `layer` this layer's index in it. A write updates the stack where it lies (`dynamic_update_slice` of the layer
    scan's carry); the other modes leave it as it is."""
    if kv_cache is None:
        return (k, v), None
    at_layer = lambda stack: numerics.bits_as_bfloat16(jax.lax.dynamic_index_in_dim(stack, layer, keepdims=False))
    if cache_write_index is None:
        return (jnp.concatenate([at_layer(kv_cache[0]), k], axis=1), jnp.concatenate([at_layer(kv_cache[1]), v], axis=1)), kv_cache
    start = (layer, jnp.int32(0), jnp.asarray(cache_write_index, jnp.int32), jnp.int32(0), jnp.int32(0))
    kv_cache = tuple(
        jax.lax.dynamic_update_slice(stack, numerics.bfloat16_as_bits(new)[None], start) for stack, new in zip(kv_cache, (k, v))
    )
    return (at_layer(kv_cache[0]), at_layer(kv_cache[1])), kv_cache


def grouped_attention(q: jax.Array, k: jax.Array, v: jax.Array, attn_mask: jax.Array | None) -> jax.Array:
    """GQA softmax attention: q `[b, t, heads, h]` (already scaled), k/v `[b, s, kv_heads, h]`, optional bool
    mask `[b, t, s]` -> `[b, t, heads, h]` in v's dtype. Logits and softmax in float32 (`numerics.attend`).

    The query heads of one KV head and the query tokens are folded into one matmul dimension, so both products
    are plain batched matmuls over (b, kv_heads); XLA's CPU backend runs those several times faster than the
    equivalent einsums with the group axis kept apart. Keys and values enter the products in their `[b, s, kv, h]`
    layout: transposing them to `[b, kv, s, h]` first made XLA's CPU backend convert each bf16 decode step's
    cache slice (and the query) to float32 when there are several KV heads (OpenVLA's Llama; 1.5x slower at
    batch 1, 2.5x at batch 8 for 32 heads x 300 slots); with one KV head that transpose is a free reshape and is
    kept (the products then run on the slice as it lies). On a GPU, calls cuDNN can take run its fused kernel
    instead: `attention` chooses, per call, at trace time.
    """
    implementation = attention.implementation_for(q, k, v)
    if implementation != "reference":
        return attention.fused(q, k, v, attn_mask, implementation)
    b, t, num_heads, head_dim = q.shape
    s, num_kv_heads = k.shape[1], k.shape[2]
    group = num_heads // num_kv_heads
    q = q.reshape(b, t, num_kv_heads, group, head_dim).transpose(0, 2, 3, 1, 4).reshape(b, num_kv_heads, group * t, -1)
    kv_axes = "bskh"
    if num_kv_heads == 1:
        k, v, kv_axes = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), "bksh"
    logits = numerics.einsum(f"bkqh,{kv_axes}->bkqs", q, k, out_dtype=jnp.float32)
    logits = logits.reshape(b, num_kv_heads, group, t, s)
    if attn_mask is not None:
        logits = jnp.where(attn_mask[:, None, None, :, :], logits, _BIG_NEG)
    encoded = numerics.attend(logits.reshape(b, num_kv_heads, group * t, s), v, kv_axes).reshape(b, num_kv_heads, group, t, head_dim)
    return encoded.transpose(0, 3, 1, 2, 4).reshape(b, t, num_heads, head_dim)


class Attention(nn.Module):
    configs: tuple[GemmaConfig, ...]

    @nn.compact
    def __call__(self, xs, positions, attn_mask, kv_cache, layer, cache_write_index):
        """(each expert's output, this layer's keys and values attended over, the stacked cache after the layer)."""
        qs, ks, vs = [], [], []
        for i, (x, cfg) in enumerate(zip(xs, self.configs, strict=True)):
            if x is None:
                continue
            q_init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
            kv_init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0, 1))
            q_shape = (cfg.num_heads, cfg.width, cfg.head_dim)
            kv_shape = (2, cfg.num_kv_heads, cfg.width, cfg.head_dim)
            qs.append(Einsum(q_shape, q_init, name=expert_name("q_einsum", i))("btd,ndh->btnh", x))
            k, v = Einsum(kv_shape, kv_init, name=expert_name("kv_einsum", i))("bsd,2kdh->2bskh", x)
            ks.append(k)
            vs.append(v)
        q, k, v = (jnp.concatenate(parts, axis=1) for parts in (qs, ks, vs))
        head_dim = self.configs[0].head_dim
        theta = self.configs[0].rope_theta
        sin, cos = rope_sin_cos(positions, head_dim, theta)
        q = rotate(q, sin, cos) * jnp.asarray(head_dim**-0.5, q.dtype)
        k = rotate(k, sin, cos)
        (k, v), kv_cache = _attend_cache(k, v, kv_cache, layer, cache_write_index)

        encoded = grouped_attention(q, k, v, attn_mask)

        outputs, start = [], 0
        for i, (x, cfg) in enumerate(zip(xs, self.configs, strict=True)):
            if x is None:
                outputs.append(None)
                continue
            end = start + x.shape[1]
            out_init = nn.initializers.lecun_normal(in_axis=(-3, -2), out_axis=-1)
            out_proj = Einsum((cfg.num_heads, cfg.head_dim, cfg.width), out_init, name=expert_name("attn_vec_einsum", i))
            outputs.append(out_proj("btnh,nhd->btd", encoded[:, start:end]))
            start = end
        return outputs, (k, v), kv_cache


class Block(nn.Module):
    """One decoder layer for all experts; scanned over depth with the activations and the stacked cache as carry
    and the layer's index as the scanned input."""

    configs: tuple[GemmaConfig, ...]
    adaptive_norms: tuple[bool, ...]

    @nn.compact
    def __call__(self, carry, layer, positions, attn_mask, cache_write_index, adarms_cond):
        """((each expert's stream, the stacked cache), this layer's keys and values unless the cache is written)."""
        xs, kv_cache = carry
        experts = list(zip(xs, self.adaptive_norms, adarms_cond, self.configs, strict=True))
        normed = [
            (None, None) if x is None else apply_norm(make_norm("pre_attention_norm", i, adaptive, cfg), x, cond)
            for i, (x, adaptive, cond, cfg) in enumerate(experts)
        ]
        attn_out, attended, kv_cache = Attention(self.configs, name="attn")(
            [y for y, _ in normed], positions, attn_mask, kv_cache, layer, cache_write_index
        )
        xs = [None if x is None else _gated_residual(x, y, gate) for x, y, (_, gate) in zip(xs, attn_out, normed)]
        outputs = []
        for i, (x, cfg, adaptive, cond) in enumerate(zip(xs, self.configs, self.adaptive_norms, adarms_cond)):
            if x is not None:
                y, gate = apply_norm(make_norm("pre_ffw_norm", i, adaptive, cfg), x, cond)
                x = _gated_residual(x, FeedForward(cfg, name=expert_name("mlp", i))(y), gate)
            outputs.append(x)
        # Each expert's residual stream after this layer, kept only when the caller asks for "intermediates"
        # (a no-op otherwise); the layer scan stacks them on a leading depth axis. Probing reads them.
        self.sow("intermediates", "residual", tuple(outputs))
        return (outputs, kv_cache), (None if cache_write_index is not None else attended)


class Embedder(nn.Module):
    """Token embedding (`input_embedding`) and the logits head: the same table (tied) or `lm_head`."""

    vocab_size: int
    config: GemmaConfig

    def setup(self) -> None:
        shape = (self.vocab_size, self.config.width)
        self.input_embedding = self.param("input_embedding", nn.initializers.normal(), shape)
        if not self.config.tied_embedding:
            self.lm_head = self.param("lm_head", nn.initializers.normal(), shape)

    def encode(self, tokens: jax.Array) -> jax.Array:
        table = self.input_embedding
        if not self.config.scale_embedding:
            return table[tokens]
        return table[tokens] * jnp.sqrt(jnp.float32(self.config.width)).astype(table.dtype)

    def decode(self, x: jax.Array) -> jax.Array:
        table = (self.input_embedding if self.config.tied_embedding else self.lm_head).astype(x.dtype)
        return numerics.einsum("btd,vd->btv", x, table, out_dtype=jnp.float32)


class Gemma(nn.Module):
    """The multi-expert Gemma decoder (`PaliGemma/llm`); see the module docstring for the call/cache API."""

    configs: tuple[GemmaConfig, ...]
    vocab_size: int
    dtype: str = "float32"
    adaptive_norms: tuple[bool, ...] | None = None  # per expert; None: no adaptive norms

    def setup(self) -> None:
        if len({(c.depth, c.num_heads, c.num_kv_heads, c.head_dim) for c in self.configs}) != 1:
            raise ValueError(f"experts must share depth, heads and head_dim: {self.configs}")
        self.embedder = Embedder(self.vocab_size, self.configs[0])
        self.layers = numerics.scan_layers(
            Block,
            length=self.configs[0].depth,
            initializing=self.is_initializing(),
            in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
        )(self.configs, self._adaptive)
        self.final_norms = [
            make_norm("final_norm", i, adaptive, cfg) for i, (adaptive, cfg) in enumerate(zip(self._adaptive, self.configs))
        ]

    @property
    def _adaptive(self) -> tuple[bool, ...]:
        return self.adaptive_norms or (False,) * len(self.configs)

    def embed(self, tokens: jax.Array) -> jax.Array:
        return self.embedder.encode(tokens).astype(self.dtype)

    def logits(self, x: jax.Array) -> jax.Array:
        return self.embedder.decode(x)

    def __call__(
        self,
        embedded: Sequence[jax.Array | None],
        positions: jax.Array,
        attn_mask: jax.Array,
        *,
        kv_cache: KVCache | None = None,
        cache_write_index: jax.Array | None = None,
        adarms_cond: Sequence[jax.Array | None] | None = None,
    ) -> tuple[list[jax.Array | None], KVCache]:
        xs = [None if e is None else e.astype(self.dtype) for e in embedded]
        adarms_cond = [None] * len(self.configs) if adarms_cond is None else list(adarms_cond)
        # The stacked cache is the layer scan's carry, so a write updates it where it lies; bf16 goes as uint16 bits,
        # as the weights do: XLA's CPU backend would otherwise convert the whole cache to float32 at every step to
        # slice it per layer. A cache given as bits comes back as bits (a decode loop keeps it so; see the API).
        given_as_bits = kv_cache is not None and kv_cache[0].dtype == jnp.uint16
        layers = jnp.arange(self.configs[0].depth, dtype=jnp.int32)
        (xs, stack), attended = self.layers(
            (xs, numerics.bfloat16_as_bits(kv_cache)), layers, positions, attn_mask, cache_write_index, adarms_cond
        )
        if cache_write_index is None:
            kv_cache = attended
        else:
            kv_cache = stack if given_as_bits else numerics.bits_as_bfloat16(stack)
        outputs = [
            None if x is None else apply_norm(norm, x, cond)[0]
            for norm, x, cond in zip(self.final_norms, xs, adarms_cond, strict=True)
        ]
        return outputs, kv_cache

    def init_all(self) -> None:
        """Touch every parameter (for `init`): embedder and one token per expert."""
        self.embed(jnp.zeros((1, 1), jnp.int32))
        n = len(self.configs)
        cond = [jnp.zeros((1, c.width), self.dtype) if a else None for c, a in zip(self.configs, self._adaptive)]
        self([jnp.zeros((1, 1, c.width), self.dtype) for c in self.configs], jnp.zeros((1, n), jnp.int32),
             jnp.ones((1, n, n), bool), adarms_cond=cond)
