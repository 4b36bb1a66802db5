"""SmolVLA (lerobot/smolvla_base: SmolVLM2-500M's vision tower and first 16 text layers + a 0.75-wide action expert)
in Flax, loaded from LeRobot's checkpoint with `safetensors` alone, batched, jitted and sharded.

    model = multinet_jax.load_model("smolvla_base", dtype="bfloat16")     # a LeRobot policy directory
    actions = model.sample_actions(observation, rng=jax.random.key(0))    # [b, 50, 32], normalized

Architecture (LeRobot 0.6.1, `modeling_smolvla.py` + `smolvlm_with_expert.py`; `smolvla_checkpoint` derives the sizes):
- Prefix: each camera's image (resized with padding at the left and top, `[-1, 1]`) through the SmolVLM2 vision tower
  (the shared `vit.ViT`: SigLIP blocks, no head), pixel-shuffled by `scale_factor` and projected by the connector,
  times sqrt(width); the task's tokens times sqrt(width) (the decoder's embedding); the normalized state, zero-padded
  to `max_state_dim`, through `state_proj` as one token. Images and language attend to each other bidirectionally;
  the state token sees them and itself, they do not see it (`pi0.make_attn_mask`, ar mask 1 at the state); padded
  tokens are masked and do not advance the positions.
- The kept text layers are the shared decoder (`gemma.Gemma`, Llama switches, RoPE base 10000 as SmolVLA hard-codes
  it), run once per batch over the prefix to fill the KV cache (keys after RoPE).
- Action expert, at every flow step, on the `chunk_size` noisy-action tokens (`action_in_proj` of x_t and the [sin |
  cos] flow-time embedding through `action_time_mlp_in` -> SiLU -> `action_time_mlp_out`): layer i is a
  self-attention layer when `i % self_attn_every_n_layers == 0` (the shared `gemma.Block`: its tokens attend causally
  to each other and to the valid prefix through the cache, at positions n_valid_prefix + k), else a cross-attention
  layer (`CrossAttentionBlock`: queries at positions 0..chunk_size-1 attend only to the valid prefix, whose cached
  keys and values the expert projects with its own k/v weights, without rotating the keys again). Scanned over the
  periods of that schedule.
- Flow matching as LeRobot's `euler_integrate`: x = noise at t = 1, `num_steps` steps of x += dt v with dt =
  -1/num_steps and t_k = 1 + k dt; the time embedding is computed in float64 on the host as LeRobot computes it.
  The result is the chunk in the normalized space, all `max_action_dim` dims (LeRobot returns the first `action_dim`).

Cameras masked for the whole batch are dropped before tracing (their tokens are masked everywhere, so this is
exact); noise is per sample (`pi0.per_sample_noise`), independent of the batch's makeup.
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from multinet_jax import domains, sharding
from multinet_jax.models import activations, numerics
from multinet_jax.models.configs import shapes_once_per_config
from multinet_jax.models.gemma import Block, Einsum, FeedForward, Gemma, KVCache, RMSNorm, apply_rope, grouped_attention
from multinet_jax.models.interface import BenchmarkCall, InferenceOptions, Observation, PromptLengths
from multinet_jax.models.masks import make_attn_mask
from multinet_jax.models.observation import check_num_steps, live_cameras, observation_cameras, resize_with_pad, validate
from multinet_jax.models.pi0 import per_sample_noise
from multinet_jax.models.smolvla_checkpoint import SmolVLAConfig, SmolVLATokenizer
from multinet_jax.models.vit import ViT

# LeRobot's `resize_with_pad`: bilinear as torch's `interpolate(align_corners=False)` (no antialiasing), the padding
# at the top and left.
resize_images = functools.partial(resize_with_pad, pad="top_left", antialias=False)

# LeRobot's key of a camera feature: `observation.images.<name>` (config.json input_features).
CAMERA_PREFIX = "observation.images."


def pixel_shuffle(features: jax.Array, scale: int) -> jax.Array:
    """transformers' SmolVLM `pixel_shuffle`: `[b, h*w, d]` patch features -> `[b, h*w / scale^2, d * scale^2]`, each
    output token the `scale x scale` block of patches (in transformers' channel order)."""
    batch, tokens, width = features.shape
    side = int(np.sqrt(tokens))
    x = features.reshape(batch, side, side // scale, width * scale).transpose(0, 2, 1, 3)
    x = x.reshape(batch, side // scale, side // scale, width * scale * scale).transpose(0, 2, 1, 3)
    return x.reshape(batch, tokens // scale**2, width * scale**2)


def time_embedding(times: np.ndarray, width: int, min_period: float, max_period: float) -> np.ndarray:
    """LeRobot's `create_sinusoidal_pos_embedding`: [sin | cos] of 2 pi t / period, periods geometric in [min, max],
    computed in float64 (angles reach 2 pi / 4e-3 ~ 1571 rad, where float32 would lose 1e-4) and cast to float32."""
    fraction = np.linspace(0.0, 1.0, width // 2, dtype=np.float64)
    period = min_period * (max_period / min_period) ** fraction
    angles = (1.0 / period * 2 * np.pi)[None, :] * np.asarray(times, np.float64)[:, None]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def flow_times(num_steps: int) -> np.ndarray:
    """t_k = 1 + k dt (dt = -1/num_steps) for k < num_steps, as LeRobot's `euler_integrate` (Python floats, float32)."""
    dt = -1.0 / num_steps
    return np.asarray([1.0 + step * dt for step in range(num_steps)], np.float32)


class CrossAttention(nn.Module):
    """Queries of the expert's tokens (RoPE at `positions`) over the VLM layer's cached keys and values, which it
    projects with its own k/v weights (`kv_einsum` reads the flattened `kv_heads * head_dim` cache channels); the
    keys are not rotated again. Parameter names as `gemma.Attention`'s."""

    config: Any  # GemmaConfig of the expert

    @nn.compact
    def __call__(self, x: jax.Array, cache: KVCache, positions: jax.Array, attn_mask: jax.Array) -> jax.Array:
        cfg = self.config
        cache_k, cache_v = cache
        batch, length, kv_heads, head_dim = cache_k.shape
        q_init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
        kv_init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0, 1))
        out_init = nn.initializers.lecun_normal(in_axis=(-3, -2), out_axis=-1)
        q = Einsum((cfg.num_heads, cfg.width, cfg.head_dim), q_init, name="q_einsum")("btd,ndh->btnh", x)
        sources = jnp.stack([cache_k, cache_v]).reshape(2, batch, length, kv_heads * head_dim).astype(x.dtype)
        kv_shape = (2, cfg.num_kv_heads, kv_heads * head_dim, cfg.head_dim)
        k, v = Einsum(kv_shape, kv_init, name="kv_einsum")("2bsd,2kdh->2bskh", sources)
        q = apply_rope(q, positions, cfg.rope_theta) * jnp.asarray(cfg.head_dim**-0.5, q.dtype)
        encoded = grouped_attention(q, k, v, attn_mask)
        return Einsum((cfg.num_heads, cfg.head_dim, cfg.width), out_init, name="attn_vec_einsum")("btnh,nhd->btd", encoded)


class CrossAttentionBlock(nn.Module):
    """An expert layer of the cross-attention kind: `gemma.Block`'s layer (and parameter names) with `CrossAttention`
    in place of the joint self-attention."""

    config: Any  # GemmaConfig of the expert

    @nn.compact
    def __call__(self, x: jax.Array, cache: KVCache, positions: jax.Array, attn_mask: jax.Array) -> jax.Array:
        cfg = self.config
        normed = RMSNorm(cfg.norm_eps, cfg.norm_offset, name="pre_attention_norm")(x)
        x = x + CrossAttention(cfg, name="attn")(normed, cache, positions, attn_mask)
        x = x + FeedForward(cfg, name="mlp")(RMSNorm(cfg.norm_eps, cfg.norm_offset, name="pre_ffw_norm")(x))
        self.sow("intermediates", "residual", (x,))  # one expert's stream, as `gemma.Block` sows it
        return x


class ExpertPeriod(nn.Module):
    """One period of the expert's schedule: a self-attention layer (`self_attn`, the shared `gemma.Block`) and
    `self_attn_every_n_layers - 1` cross-attention layers (`cross_attn_<j>`); scanned over the periods."""

    config: SmolVLAConfig

    @nn.compact
    def __call__(self, x: jax.Array, cache: KVCache, positions: jax.Array, self_mask: jax.Array,
                 cross_positions: jax.Array, cross_mask: jax.Array) -> tuple[jax.Array, None]:
        cfg = self.config
        keys, values = cache  # [period, b, s, kv_heads, head_dim]: this period's VLM layers, bf16 as uint16 bits
        # `gemma.Block` takes the stacked cache (bf16 or its bits) and the layer's index in it: the stack's first.
        ((x,), _), _ = Block((cfg.expert,), (False,), name="self_attn")(
            ([x], (keys[:1], values[:1])), jnp.int32(0), positions, self_mask, None, [None])
        for offset in range(1, cfg.self_attn_every_n_layers):
            x = CrossAttentionBlock(cfg.expert, name=f"cross_attn_{offset - 1}")(
                x, numerics.bits_as_bfloat16((keys[offset], values[offset])), cross_positions, cross_mask)
        return x, None


class ActionExpert(nn.Module):
    """The expert's layers over the action tokens `[b, t, width]`, reading the VLM's prefix cache; final-normed."""

    config: SmolVLAConfig

    @nn.compact
    def __call__(self, x: jax.Array, kv_cache: KVCache, prefix_mask: jax.Array) -> jax.Array:
        cfg = self.config
        batch, length = x.shape[:2]
        prefix = jnp.broadcast_to(prefix_mask[:, None, :], (batch, length, prefix_mask.shape[1]))
        causal = jnp.broadcast_to(jnp.tril(jnp.ones((length, length), bool)), (batch, length, length))
        positions = jnp.sum(prefix_mask, axis=1, keepdims=True) + jnp.arange(length)[None, :]
        cross_positions = jnp.broadcast_to(jnp.arange(length)[None, :], (batch, length))
        period = cfg.self_attn_every_n_layers
        # Scanned over as uint16 bits (`numerics.scan_layers`): a bf16 cache made XLA's CPU backend hold the whole
        # prefix cache in float32 through the flow loop and convert each period's slice back per step.
        cache = numerics.bfloat16_as_bits(
            tuple(part.reshape(part.shape[0] // period, period, *part.shape[1:]) for part in kv_cache))
        layers = numerics.scan_layers(
            ExpertPeriod, length=cfg.expert.depth // period, initializing=self.is_initializing(),
            in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
        )(cfg, name="layers")
        x, _ = layers(x.astype(cfg.dtype), cache, positions, jnp.concatenate([prefix, causal], axis=-1),
                      cross_positions, prefix)
        return RMSNorm(cfg.expert.norm_eps, cfg.expert.norm_offset, name="final_norm")(x)


class SmolVLA(nn.Module):
    """Parameter tree: `vision/...` (ViT), `connector/kernel`, `vlm/...` (decoder), `expert/layers/{self_attn,
    cross_attn_<j>}/...` (stacked over periods), `expert/final_norm`, and the action head's Dense layers."""

    config: SmolVLAConfig

    def setup(self) -> None:
        cfg = self.config
        self.vision = ViT(cfg.vision, None, cfg.dtype)
        self.connector = nn.Dense(cfg.vlm.width, use_bias=False, dtype=cfg.dtype, dot_general=numerics.dot_general)
        self.vlm = Gemma((cfg.vlm,), cfg.vocab_size, cfg.dtype)
        self.expert = ActionExpert(cfg)
        dense = functools.partial(nn.Dense, dot_general=numerics.dot_general)
        self.state_proj = dense(cfg.vlm.width)
        self.action_in_proj = dense(cfg.expert.width)
        self.action_time_mlp_in = dense(cfg.expert.width)
        self.action_time_mlp_out = dense(cfg.expert.width)
        self.action_out_proj = dense(cfg.max_action_dim)

    def embed_image(self, images: jax.Array) -> jax.Array:
        """Images `[b, H, W, 3]` in [-1, 1] at the vision tower's size -> connector tokens `[b, n, width]` (before
        SmolVLA's sqrt(width) scaling)."""
        return self.connector(pixel_shuffle(self.vision(images), self.config.scale_factor))

    def embed_context(self, images: Sequence[jax.Array], image_masks: Sequence[jax.Array], tokens: jax.Array,
                      token_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[image tokens of each camera, language tokens] `[b, n, width]` (each times sqrt(width), as SmolVLA scales
        them) and their mask `[b, n]`; images at any size in [-1, 1], resized as LeRobot does."""
        cfg = self.config
        scale = jnp.sqrt(jnp.float32(cfg.vlm.width)).astype(cfg.dtype)
        parts, masks = [], []
        for image, camera_mask in zip(images, image_masks, strict=True):
            size = cfg.vision.image_size
            embedded = self.embed_image(resize_images(image, size, size)) * scale
            parts.append(embedded)
            masks.append(jnp.broadcast_to(camera_mask[:, None], embedded.shape[:2]))
        parts.append(self.vlm.embed(tokens))
        masks.append(token_mask)
        return jnp.concatenate(parts, axis=1), jnp.concatenate(masks, axis=1)

    def embed_prefix(self, images: Sequence[jax.Array], image_masks: Sequence[jax.Array], tokens: jax.Array,
                     token_mask: jax.Array, state: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`embed_context`'s tokens, then the state token (`state` `[b, max_state_dim]`, normalized)."""
        context, mask = self.embed_context(images, image_masks, tokens, token_mask)
        state_token = self.state_proj(state)[:, None, :].astype(context.dtype)
        return jnp.concatenate([context, state_token], axis=1), jnp.concatenate([mask, jnp.ones_like(mask[:, :1])], axis=1)

    def embed_tokens(self, tokens: jax.Array) -> jax.Array:
        return self.vlm.embed(tokens)

    def hidden_states(self, embedded: jax.Array, mask: jax.Array, ar_mask: jax.Array) -> jax.Array:
        """The kept text layers over `embedded` without a cache (openpi's `ar_mask` blocks, positions skipping
        padding), final-normed: `[b, n, width]`."""
        positions = jnp.cumsum(mask, axis=1) - 1
        (hidden,), _ = self.vlm([embedded], positions, make_attn_mask(mask, ar_mask))
        return hidden

    def logits(self, hidden: jax.Array) -> jax.Array:
        """float32 `[b, t, vocab]` from the text model's `lm_head`."""
        return self.vlm.logits(hidden)

    def fill_prefix_cache(self, prefix: jax.Array, prefix_mask: jax.Array) -> KVCache:
        """The prefix through the kept text layers; their keys (after RoPE) and values `[depth, b, n, kv, head_dim]`."""
        state_block = jnp.arange(prefix_mask.shape[1]) == prefix_mask.shape[1] - 1
        positions = jnp.cumsum(prefix_mask, axis=1) - 1
        _, kv_cache = self.vlm([prefix], positions, make_attn_mask(prefix_mask, state_block))
        return kv_cache

    def velocity(self, kv_cache: KVCache, prefix_mask: jax.Array, noisy_actions: jax.Array,
                 time_emb: jax.Array) -> jax.Array:
        """v_t `[b, chunk, max_action_dim]` (float32) at `noisy_actions` with the flow-time embedding `[b, width]`."""
        action_tokens = self.action_in_proj(noisy_actions)
        time_tokens = jnp.broadcast_to(time_emb[:, None, :].astype(action_tokens.dtype), action_tokens.shape)
        mixed = self.action_time_mlp_in(jnp.concatenate([action_tokens, time_tokens], axis=-1))
        suffix = self.action_time_mlp_out(nn.silu(mixed))
        return self.action_out_proj(self.expert(suffix, kv_cache, prefix_mask).astype(jnp.float32))

    def init_all(self) -> None:
        """Touch every parameter (for `init` / `eval_shape`)."""
        cfg = self.config
        size = cfg.vision.image_size
        prefix, mask = self.embed_prefix([jnp.zeros((1, size, size, 3))], [jnp.ones((1,), bool)],
                                         jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2), bool),
                                         jnp.zeros((1, cfg.max_state_dim)))
        kv_cache = self.fill_prefix_cache(prefix, mask)
        self.logits(self.hidden_states(prefix, mask, jnp.zeros(mask.shape, bool)))
        actions = jnp.zeros((1, cfg.chunk_size, cfg.max_action_dim))
        self.velocity(kv_cache, mask, actions, jnp.zeros((1, cfg.expert.width)))


@shapes_once_per_config
def param_shapes(config: SmolVLAConfig) -> dict[str, Any]:
    """The parameter tree of `config` as ShapeDtypeStructs in the config's dtype (no memory: `jax.eval_shape`)."""
    variables = jax.eval_shape(lambda: SmolVLA(config).init(jax.random.key(0), method=SmolVLA.init_all))
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, jnp.dtype(config.dtype)), variables["params"])


def init_params(config: SmolVLAConfig, rng: jax.Array) -> dict[str, Any]:
    """Random parameters (flax's initializers) in the config's dtype: demo checkpoints and benchmarks."""
    params = SmolVLA(config).init(rng, method=SmolVLA.init_all)["params"]
    return jax.tree.map(lambda leaf: leaf.astype(config.dtype), params)


def expert_streams(intermediates: Mapping[str, Any], config: SmolVLAConfig) -> jax.Array:
    """The action expert's residual stream after each layer `[depth, b, t, width]`, in layer order, from the
    "intermediates" its blocks sow (stacked per period by the scan)."""
    layers = intermediates["expert"]["layers"]
    names = ["self_attn", *(f"cross_attn_{offset}" for offset in range(config.self_attn_every_n_layers - 1))]
    per_period = jnp.stack([layers[name]["residual"][0][0] for name in names], axis=1)  # [periods, period, b, t, w]
    return per_period.reshape(config.expert.depth, *per_period.shape[2:])


def sample_actions_fn(module: SmolVLA, params: Any, images: Sequence[jax.Array], image_masks: Sequence[jax.Array],
                      tokens: jax.Array, token_mask: jax.Array, state: jax.Array, noise: jax.Array,
                      time_embeddings: jax.Array, capture: bool = False) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
    """Pure sampler: the prefix cache once, then one Euler step per row of `time_embeddings` `[num_steps, width]`.

    `capture` (static) also returns the per-layer residual streams of the prefix's language tokens and of the first
    step's action expert, pooled (`models/activations.py`): `{"prefix_last", "prefix_mean", "action_mean"}`."""
    variables = {"params": params}
    prefix, prefix_mask = module.apply(variables, images, image_masks, tokens, token_mask, state,
                                       method=SmolVLA.embed_prefix)
    batch, num_steps = noise.shape[0], time_embeddings.shape[0]
    dt = jnp.float32(-1.0 / num_steps)

    def velocity(x_t, step, **kwargs):
        time_emb = jnp.broadcast_to(time_embeddings[step], (batch, time_embeddings.shape[1]))
        return module.apply(variables, kv_cache, prefix_mask, x_t, time_emb, method=SmolVLA.velocity, **kwargs)

    if capture:
        kv_cache, (prefix_residual,) = activations.apply_capturing(
            module, variables, prefix, prefix_mask, method=SmolVLA.fill_prefix_cache)
        v_first, state_vars = velocity(noise, 0, mutable=["intermediates"])
        start, x_t = 1, noise + dt * v_first
    else:
        kv_cache = module.apply(variables, prefix, prefix_mask, method=SmolVLA.fill_prefix_cache)
        start, x_t = 0, noise
    actions = jax.lax.fori_loop(start, num_steps, lambda step, x: x + dt * velocity(x, step), x_t)
    if not capture:
        return actions
    streams = activations.pool_prompt(prefix_residual[:, :, :-1], token_mask)  # the language tokens (the state is last)
    streams["action_mean"] = activations.pool_actions(expert_streams(state_vars["intermediates"], module.config),
                                                      module.config.chunk_size)
    return actions, streams


# One compiled sampler per (module config, input shapes, live-camera count, num_steps, capture).
sample_actions_jit = jax.jit(sample_actions_fn, static_argnums=0, static_argnames="capture")


def _score_options_fn(module: SmolVLA, params: Any, images: Sequence[jax.Array], image_masks: Sequence[jax.Array],
                      tokens: jax.Array, token_mask: jax.Array, option_tokens: jax.Array,
                      option_mask: jax.Array) -> jax.Array:
    """Log-likelihood `[b, K]` of each option's tokens `[b, K, m]` after the context (images + prompt, one
    bidirectional block as SmolVLA runs its VLM; no state token): per option one pass over [context, option] with
    the option's tokens causal (teacher forcing); token 0's log-probability comes from the context's last valid
    position, token j's from option token j - 1."""
    variables = {"params": params}
    context, mask = module.apply(variables, images, image_masks, tokens, token_mask, method=SmolVLA.embed_context)
    batch, context_len = mask.shape
    length = option_tokens.shape[2]
    last = jnp.max(jnp.where(mask, jnp.arange(context_len), 0), axis=1, keepdims=True)
    predictors = jnp.concatenate([last, jnp.broadcast_to(context_len + jnp.arange(length - 1), (batch, length - 1))], axis=1)
    ar_mask = jnp.arange(context_len + length) >= context_len
    scores = []
    for option in range(option_tokens.shape[1]):
        ids, valid = option_tokens[:, option], option_mask[:, option]
        embedded = module.apply(variables, ids, method=SmolVLA.embed_tokens).astype(context.dtype)
        hidden = module.apply(variables, jnp.concatenate([context, embedded], axis=1),
                              jnp.concatenate([mask, valid], axis=1), ar_mask, method=SmolVLA.hidden_states)
        picked = module.apply(variables, jnp.take_along_axis(hidden, predictors[:, :, None], axis=1), method=SmolVLA.logits)
        log_probs = jnp.take_along_axis(jax.nn.log_softmax(picked, axis=-1), ids[:, :, None], axis=2)[..., 0]
        scores.append(jnp.sum(jnp.where(valid, log_probs, 0.0), axis=1))
    return jnp.stack(scores, axis=1)


@functools.cache
def compiled_option_scorer(config: SmolVLAConfig, mesh: Mesh):
    return jax.jit(functools.partial(_score_options_fn, SmolVLA(config)), out_shardings=sharding.batch_sharding(mesh))


class SmolVLAModel:
    """A SmolVLA ready to act (an `interface.Model` of family "smolvla"): `.config`, `.params`, `.norm_stats`
    (`{"state", "actions": {"mean", "std"}}` from the processors, an entry absent where the checkpoint has none),
    `.tokenizer` (the backbone's), `.mesh`; `.sample_actions` (tokens and the normalized state, as LeRobot's
    `predict_action_chunk` takes them) and the evaluator's `.predict_actions` / `.score_options` / `.activations`
    (task texts and the raw state, as LeRobot's preprocessor takes them)."""

    family = "smolvla"
    multinet_actions = None  # MultiNet did not run SmolVLA: the default rules (first step, first dims)

    def __init__(self, config: SmolVLAConfig, params: Any, norm_stats: Mapping[str, Any], tokenizer: SmolVLATokenizer | None,
                 mesh: Mesh | None = None, source: str = "SmolVLA"):
        self.config = config
        self.norm_stats = dict(norm_stats)
        self.tokenizer = tokenizer
        self.source = source  # the checkpoint, named in errors
        self.mesh = sharding.make_mesh() if mesh is None else mesh
        self.module = SmolVLA(config)
        self.params = jax.device_put(params, sharding.param_shardings(params, self.mesh))

    def _place(self, array: Any, dtype: Any) -> jax.Array:
        return sharding.place_batch(array, dtype, mesh=self.mesh)

    # -- LeRobot's pre- and postprocessing -----------------------------------------------------------------------

    def _stats(self, name: str, files: str) -> dict[str, np.ndarray]:
        if name not in self.norm_stats:
            raise ValueError(f"{self.source}: has no mean/std for {name} in {files} (LeRobot then leaves it "
                             "unnormalized without a word); pass normalized values, or statistics of your own")
        return self.norm_stats[name]

    def normalized_state(self, state: Any, sample_index: Any = None) -> np.ndarray:
        """LeRobot's state preprocessing: `(x - mean) / (std + 1e-8)` with the checkpoint's statistics, zero-padded
        to `max_state_dim` (`prepare_state`): `[b, state_dim]` -> float32 `[b, max_state_dim]`. A NaN would make the
        whole chunk NaN (every action invalid, nothing failing): refused naming the row (`sample_index`'s, if given)."""
        state = np.asarray(state, np.float32)
        dims = self.config.state_dim
        if state.ndim != 2 or state.shape[1] != dims:
            raise ValueError(f"state: expected [batch, {dims}] (the checkpoint's observation.state), got shape {state.shape}")
        bad = np.argwhere(~np.isfinite(state))
        if bad.size:
            row, dim = (int(value) for value in bad[0])
            sample = "" if sample_index is None else f" (sample_index {int(np.asarray(sample_index)[row])})"
            raise ValueError(f"state: row {row}{sample} holds {state[row, dim]} at dim {dim}: NaN or infinite values, "
                             f"not a robot state")
        stats = self._stats("state", "policy_preprocessor.json's normalizer (observation.state)")
        normalized = (state - stats["mean"]) / (stats["std"] + np.float32(1e-8))
        return np.pad(normalized, ((0, 0), (0, self.config.max_state_dim - dims)))

    def unnormalize_actions(self, actions: Any) -> np.ndarray:
        """LeRobot's postprocessing: the first `action_dim` dims, `x * std + mean` with the checkpoint's
        statistics: `[b, chunk, >= action_dim]` -> float32 `[b, chunk, action_dim]`."""
        stats = self._stats("actions", "policy_postprocessor.json's unnormalizer (action)")
        values = np.asarray(actions, np.float32)[..., : self.config.action_dim]
        return domains.unnormalize(values, stats["mean"], stats["std"], epsilon=0.0).astype(np.float32)

    def _model_inputs(self, observation: Observation, prompts: Sequence[str]) -> dict[str, Any]:
        """The cameras, masks and sample indices of an evaluator observation, with the prompts tokenized here.

        Cameras named as the checkpoint's VISUAL input features (`image/top` for `observation.images.top`) map by name,
        in config.json's order (`config.cameras`, the image tokens' order), as LeRobot picks them. Others map by
        position: the observation's k-th camera (`image/<camera>` in sorted name order; the Open-X pipeline's
        `base_0_rgb`, `left_wrist_0_rgb`, `right_wrist_0_rgb`) is the checkpoint's k-th. A camera beyond the
        checkpoint's count must be masked in every row (it is dropped); a live one is refused rather than silently
        ignored."""
        named = [camera.removeprefix(CAMERA_PREFIX) for camera in self.config.cameras]
        cameras = observation_cameras(observation)
        if set(cameras) <= set(named):  # renamed so that sorted names (the token order) follow config.json's
            position = {f"image/{camera}": f"image/{named.index(camera):02d}_{camera}" for camera in cameras}
            position |= {f"image_mask/{camera}": f"image_mask/{named.index(camera):02d}_{camera}" for camera in cameras}
            observation = {position.get(key, key): value for key, value in observation.items()}
            cameras = observation_cameras(observation)
        for camera in cameras[len(self.config.cameras):]:
            if np.asarray(observation[f"image_mask/{camera}"]).any():
                raise ValueError(f"image/{camera}: a live camera, but {self.source}'s config.json input_features has "
                                 f"only {len(self.config.cameras)} VISUAL features {list(self.config.cameras)}")
        dropped = {f"{kind}/{camera}" for camera in cameras[len(self.config.cameras):] for kind in ("image", "image_mask")}
        tokens, mask = self.tokenizer.tokenize_tasks([str(prompt) for prompt in prompts])
        kept = {key: value for key, value in observation.items()
                if (key.startswith(("image/", "image_mask/")) and key not in dropped) or key == "sample_index"}
        return {**kept, "tokenized_prompt": tokens, "tokenized_prompt_mask": mask}

    def _action_inputs(self, observation: Observation) -> dict[str, Any]:
        if "prompt" not in observation or "state" not in observation:
            raise KeyError(f"SmolVLA reads `image/<camera>`, `prompt` (task texts) and `state`; the observation has "
                           f"{sorted(observation)}")
        state, dims = np.asarray(observation["state"], np.float32), self.config.state_dim
        if "state_dim" in observation:  # the pipeline's zero-padded state and each row's own dims
            # Rows without a state (state_dim 0: padding rows; Act2Answer's episodes, whose state is zeros by its
            # protocol) get the zero state, as the pipeline pads it for every family; an action domain whose samples
            # hold none is refused before the model loads (`eval.preflight.check_checkpoint_inputs`).
            own = sorted({int(count) for count in np.asarray(observation["state_dim"]).reshape(-1)} - {0})
            if own not in ([dims], []):
                raise ValueError(f"{self.source}/config.json: input_features observation.state has {dims} dims, the "
                                 f"data's states have {own}")
            state = state[:, :dims]
        return {**self._model_inputs(observation, observation["prompt"]),
                "state": self.normalized_state(state, observation.get("sample_index"))}

    # -- sampling ------------------------------------------------------------------------------------------------

    def make_noise(self, sample_index: np.ndarray, rng: jax.Array | None) -> jax.Array:
        """Per-sample standard normal `[b, chunk_size, max_action_dim]` from `rng` (default key 0) and the indices."""
        rng = jax.random.key(0) if rng is None else rng
        shape = (self.config.chunk_size, self.config.max_action_dim)
        return per_sample_noise(rng, self._place(sample_index, np.int32), shape)

    def _sampler_inputs(self, observation: Observation, rng: jax.Array | None, noise: Any,
                        num_steps: int | None) -> tuple[int, dict[str, Any]]:
        cfg = self.config
        steps = check_num_steps("num_steps", cfg.num_steps if num_steps is None else num_steps)
        observation = validate(observation, image_size=cfg.vision.image_size, vocab_size=cfg.vocab_size,
                               state_dim=cfg.max_state_dim, resize=resize_images)
        batch = observation["tokenized_prompt"].shape[0]
        expected = (batch, cfg.chunk_size, cfg.max_action_dim)
        if noise is not None and tuple(np.shape(noise)) != expected:
            raise ValueError(f"noise has shape {tuple(np.shape(noise))}, expected {expected} (batch, chunk_size, max_action_dim)")
        cameras = live_cameras(observation)
        table = time_embedding(flow_times(steps), cfg.expert.width, cfg.min_period, cfg.max_period)
        return batch, {
            "images": [self._place(observation[f"image/{camera}"], np.float32) for camera in cameras],
            "image_masks": [self._place(observation[f"image_mask/{camera}"], bool) for camera in cameras],
            "tokens": self._place(observation["tokenized_prompt"], np.int32),
            "token_mask": self._place(observation["tokenized_prompt_mask"], bool),
            "state": self._place(observation["state"], np.float32),
            "noise": self.make_noise(observation["sample_index"], rng) if noise is None else self._place(noise, np.float32),
            "time_embeddings": jnp.asarray(table),
        }

    def sample_actions(self, observation: Observation, *, rng: jax.Array | None = None, noise: Any = None,
                       num_steps: int | None = None) -> jax.Array:
        """Normalized action chunks `[b, chunk_size, max_action_dim]` from an observation holding SmolVLM2 tokens
        (`tokenized_prompt`, `tokenized_prompt_mask`) and the normalized state padded to `max_state_dim` (`state`).

        `noise` `[b, chunk_size, max_action_dim]` overrides the per-sample noise drawn from `rng` (default key 0) and
        `observation["sample_index"]`; `num_steps` defaults to the checkpoint's."""
        batch, inputs = self._sampler_inputs(observation, rng, noise, num_steps)
        return sample_actions_jit(self.module, self.params, **inputs)[:batch]

    def predict_actions(self, observation: Observation, *, rng: jax.Array | None, options: InferenceOptions) -> np.ndarray:
        """`interface.Model`: normalized chunks `[b, chunk_size, action_dim]` from task texts (`prompt`) and the
        raw state (its first `state_dim` dims, normalized with the checkpoint's statistics), with
        `options.num_flow_steps`. Only the checkpoint's `action_dim` dims, as LeRobot returns them: the rest of
        `max_action_dim` is padding no loss trained, which a domain with more action dims would score as predictions
        (such a domain fails instead: `runners.check_action_widths`)."""
        inputs = self._action_inputs(observation)
        actions = self.sample_actions(inputs, rng=rng, num_steps=options.num_flow_steps)
        return np.asarray(actions[..., : self.config.action_dim])

    def activations(self, observation: Observation, *, rng: jax.Array | None = None,
                    num_steps: int | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(the actions `predict_actions` gives, each layer's residual streams `{"prefix_last", "prefix_mean",
        "action_mean": [b, depth, width]}`) from one sampling pass: the VLM's over the task's tokens, the action
        expert's over the action tokens at the first flow step (float32; `models/activations.py`)."""
        batch, inputs = self._sampler_inputs(self._action_inputs(observation), rng, None, num_steps)
        actions, streams = sample_actions_jit(self.module, self.params, capture=True, **inputs)
        return actions[:batch, :, : self.config.action_dim], {name: value[:batch] for name, value in streams.items()}

    @property
    def num_flow_steps(self) -> int:
        """`interface.Model`: config.json's `num_steps` (LeRobot samples with it)."""
        return self.config.num_steps

    def prompt_lengths(self, observation: Observation, *, for_actions: bool) -> PromptLengths:
        """`interface.Model`: each task's tokens (actions and option scoring read the same prompt) and the cut at
        config.json's `tokenizer_max_length`."""
        del for_actions
        if "prompt" not in observation:
            raise KeyError(f"SmolVLA reads `prompt` texts; the observation has {sorted(observation)}")
        return PromptLengths(self.tokenizer.task_lengths([str(prompt) for prompt in observation["prompt"]]),
                             self.tokenizer.max_length)

    def score_options(self, observation: Observation, option_tokens: Any, option_mask: Any) -> jax.Array:
        """`interface.Model`: log-likelihood float32 `[b, K]` of K candidate answers (`option_tokens` int32 `[b, K, m]`,
        the tokenizer's `encode_continuation`, right-padded; `option_mask` bool) after the images and the prompt
        texts (`prompt`, formatted as LeRobot formats a task), under the kept text layers and the text model's
        `lm_head` (`_score_options_fn`)."""
        option_tokens, option_mask = np.asarray(option_tokens, np.int32), np.asarray(option_mask, bool)
        if "prompt" not in observation:
            raise KeyError(f"SmolVLA's score_options reads `prompt` texts; the observation has {sorted(observation)}")
        cfg = self.config
        inputs = validate(self._model_inputs(observation, observation["prompt"]), image_size=cfg.vision.image_size,
                          vocab_size=cfg.vocab_size, resize=resize_images)
        batch = inputs["tokenized_prompt"].shape[0]
        if option_tokens.ndim != 3 or option_tokens.shape[0] != batch or option_mask.shape != option_tokens.shape:
            raise ValueError(f"option_tokens / option_mask must both be [b={batch}, options, tokens], got "
                             f"{option_tokens.shape} and {option_mask.shape}")
        if not option_mask[..., 0].all():
            raise ValueError("every option needs at least one token (option_mask[..., 0] must be True)")
        cameras = live_cameras(inputs)
        scores = compiled_option_scorer(cfg, self.mesh)(
            self.params, [self._place(inputs[f"image/{camera}"], np.float32) for camera in cameras],
            [self._place(inputs[f"image_mask/{camera}"], bool) for camera in cameras],
            self._place(inputs["tokenized_prompt"], np.int32), self._place(inputs["tokenized_prompt_mask"], bool),
            self._place(option_tokens, np.int32), self._place(option_mask, bool))
        return scores[:batch]

    def sample_tokens(self, observation: Observation, **kwargs: Any) -> jax.Array:
        raise ValueError("SmolVLA decodes no text: it keeps only the first layers of its VLM (Act2Answer's text probe "
                         "scores options with them instead)")

    def checkpoint_action_stats(self, unnorm_key: str | None) -> dict[str, np.ndarray] | None:
        """`interface.Model`: the postprocessor's action mean/std (`action_dim` dims; one set per checkpoint)."""
        return self.norm_stats.get("actions")

    def action_prompts(self, prompt_tokenizer: Any, *, normalize_state: bool, source: str) -> None:
        """`interface.Model`: SmolVLA tokenizes the task texts and normalizes the state itself (`predict_actions`)."""
        return None

    # -- benchmarks --------------------------------------------------------------------------------------------

    def benchmark_call(self, batch: int, options: InferenceOptions, live_cameras: int) -> BenchmarkCall:
        """`interface.Model`: one action chunk per sample (`options.num_flow_steps` Euler steps after the prefix) on
        random images for `live_cameras` of the checkpoint's cameras, a full `tokenizer_max_length`-token prompt and
        a random normalized state."""
        cfg, rng = self.config, np.random.default_rng(0)
        size, cameras = cfg.vision.image_size, min(live_cameras, len(cfg.cameras))
        steps = check_num_steps("num_flow_steps", options.num_flow_steps)
        inputs = {
            "images": [self._place(rng.uniform(-1, 1, (batch, size, size, 3)), np.float32) for _ in range(cameras)],
            "image_masks": [self._place(np.ones(batch, bool), bool) for _ in range(cameras)],
            "tokens": self._place(rng.integers(0, cfg.vocab_size, (batch, cfg.tokenizer_max_length)), np.int32),
            "token_mask": self._place(np.ones((batch, cfg.tokenizer_max_length), bool), bool),
            "state": self._place(rng.standard_normal((batch, cfg.max_state_dim)), np.float32),
            "noise": self.make_noise(np.arange(batch), jax.random.key(0)),
            "time_embeddings": jnp.asarray(time_embedding(flow_times(steps), cfg.expert.width, cfg.min_period, cfg.max_period)),
        }
        return BenchmarkCall("flow", jax.jit(functools.partial(sample_actions_fn, self.module)), (self.params,), inputs,
                             loop_trips=steps)

    def parity_output(self, batch: int, options: InferenceOptions, live_cameras: int) -> jax.Array:
        """`interface.Model`: the actions of `benchmark_call`."""
        return self.benchmark_call(batch, options, live_cameras)()


def build_model(config: SmolVLAConfig, params: Any, *, mesh: Mesh | None = None) -> SmolVLAModel:
    """A SmolVLAModel of parameters alone (no tokenizer or statistics: benchmarks)."""
    return SmolVLAModel(config, params, {}, None, mesh)


def load(checkpoint: str | pathlib.Path, *, dtype: str = "float32", mesh: Mesh | None = None, **overrides: Any) -> SmolVLAModel:
    """A LeRobot SmolVLA directory -> SmolVLAModel, restored as `dtype` into `mesh`'s shardings."""
    from multinet_jax.models import smolvla_checkpoint
    from multinet_jax.weights import safetensors

    if overrides:
        raise ValueError(f"{checkpoint}: SmolVLA takes no config overrides (its config.json fixes them), got {sorted(overrides)}")
    directory = pathlib.Path(checkpoint)
    backbone = smolvla_checkpoint.backbone_of(directory)
    config = smolvla_checkpoint.read_config(directory, dtype, backbone)
    # The small files first: a bad one fails before any tensor is read.
    tokenizer = SmolVLATokenizer(backbone, config.tokenizer_max_length, config.pad_language_to)
    norm_stats = smolvla_checkpoint.read_norm_stats(directory, config)
    mesh = sharding.make_mesh() if mesh is None else mesh
    expected = param_shapes(config)
    params = safetensors.restore(directory, smolvla_checkpoint.tensor_sources(config), expected,
                                 sharding.param_shardings(expected, mesh), dtype=dtype)
    return SmolVLAModel(config, params, norm_stats, tokenizer, mesh, source=str(directory))
