"""Prefix-LM autoregressive decoding with a preallocated KV cache, shared by Pi0-FAST and the PaliGemma backbone of
Pi0 / Pi0.5.

One jitted function per batch shape and `DecodeSettings`: SigLIP + prompt embedding, one prefill pass over the
prefix (bidirectional among its valid tokens, per openpi's `token_ar_mask` semantics), then a single
`lax.while_loop` that feeds one token per step through expert 0 of the Gemma, writing its keys/values into a cache
preallocated for `prefix + max_decoding_steps` slots.

Ragged prompts: each row's prefix is right-aligned (as openpi does) so its last valid token sits at the last prefix
slot P - 1; the token generated at step i then goes into the same cache slot `P + i` for every row.

`openpi_exact` (default True) is the one switch between openpi's decoder and the corrected one:
- True reproduces openpi's Pi0-FAST `sample_actions` (at the reference fixtures' commit 15a9616) token for token
  when greedy (sampling draws per-row keys, below), including rows with a masked camera. The first generated token gets RoPE position `len(valid prefix) + 1`, one
  past contiguous. Each decode step attends to the window of cache slots `[P - len(valid prefix), P + i]`:
  when a camera is masked inside a row (after a valid one, as MultiNet's masked wrist cameras are), that window
  holds the masked camera's tokens and leaves out as many valid leading tokens. Those masked tokens' keys/values
  come from the prefill, where a token with no valid key attends uniformly over all P + max_decoding_steps cache
  slots (the unwritten ones zero), as openpi's prefill into its preallocated cache does. A camera masked in every
  row is therefore still encoded, unless no row has a masked token between valid ones (then the window is exactly
  the valid tokens, e.g. text domains with every camera masked, and dropping it is exact).
- False is the corrected decoder: contiguous positions (`len(valid prefix) + i`, as in training and in later
  openpi), decode steps attend to the valid tokens only, and cameras masked in every row are dropped before
  tracing (exact: masked tokens are never attended).
Rows whose valid prefix tokens are contiguous after right-alignment (no camera masked after a valid one) get the
same window both ways; they differ only by the position gap. False is also how Hugging Face's PaliGemma generates
(MultiNet's text runs: positions from the attention mask's cumulative sum, every valid token attended, masked
cameras never; `tests/test_decoding_hf.py` checks it against a cache-free transcription).

`logits_vocab_size` (default None) reproduces one more detail of MultiNet's text runs: Pi0's 257,152-row embedding
was zero-padded to Hugging Face PaliGemma's 257,216 rows (ManifoldRG/openpi `pi0_weight_injector.py`, lines
200-209), and the head is tied, so every step's argmax also saw 64 logits of exactly 0 (picked when every real logit
is negative) and such a token, fed back, embeds as zeros. Given, the logits are zero-padded to that size and ids past
the model's vocabulary embed as zeros.

Sampling: greedy at temperature 0, else categorical over temperature-scaled logits with optional top-k / top-p
filters. Temperature, top-k, top-p and the stop-token set are run-time arrays (`Sampling`), so one compiled
decoder serves every choice of them.

Stopping: each row stops at its first token in `stop_token_ids` (the stop token itself is emitted), then emits 0;
the loop exits once every row has stopped or `max_decoding_steps` tokens were produced. With
`per_row_stopping=False` the same loop uses openpi's exit rule instead (exit only when every row emits a stop token
at the same step; rows that stopped earlier keep the batch running), which is the baseline the decode benchmark
compares against. The emitted tokens are identical in both modes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from multinet_jax import sharding
from multinet_jax.models import activations, numerics
from multinet_jax.models.backbone import PaliGemma
from multinet_jax.models.configs import ModelConfig
from multinet_jax.models.gemma import KVCache
from multinet_jax.models.masks import make_attn_mask
from multinet_jax.models.interface import BenchmarkCall, InferenceOptions
from multinet_jax.models.observation import check_num_steps, live_cameras, observation_cameras, random_observation, validate

PALIGEMMA_EOS_ID = 1
Observation = Mapping[str, Any]


# Stop-token sets are padded to a multiple of this with -1 (never a token), so sets of up to this many share one
# compiled decoder.
STOP_TOKEN_BLOCK = 8


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    """Trace-time options (shapes and control flow); one compiled decoder per distinct value."""

    max_decoding_steps: int = 256
    per_row_stopping: bool = True
    openpi_exact: bool = True  # see the module docstring
    logits_vocab_size: int | None = None  # see the module docstring

    def __post_init__(self) -> None:
        check_num_steps("max_decoding_steps", self.max_decoding_steps)
        if self.logits_vocab_size is not None and self.logits_vocab_size < 1:
            raise ValueError(f"logits_vocab_size must be positive (or None), got {self.logits_vocab_size}")

    @property
    def position_gap(self) -> int:
        """RoPE position of the first generated token minus the valid prefix length."""
        return 1 if self.openpi_exact else 0


class Sampling(NamedTuple):
    """Run-time options (arrays): changing them never recompiles the decoder."""

    temperature: jax.Array  # float32 scalar; 0 = greedy
    top_k: jax.Array  # int32 scalar; 0 = no top-k filter
    top_p: jax.Array  # float32 scalar; 1 = no nucleus filter
    stop_token_ids: jax.Array  # int32 [n], padded with -1

    @classmethod
    def create(
        cls,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop_token_ids: tuple[int, ...] = (PALIGEMMA_EOS_ID,),
    ) -> Sampling:
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        padded = -np.ones(-(-max(len(stop_token_ids), 1) // STOP_TOKEN_BLOCK) * STOP_TOKEN_BLOCK, np.int32)
        padded[: len(stop_token_ids)] = stop_token_ids
        return cls(
            np.float32(temperature), np.int32(top_k or 0), np.float32(1.0 if top_p is None else top_p), padded
        )


def right_align(
    embeddings: jax.Array, input_mask: jax.Array, attn_mask: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Rotates each row so its last valid token is at index P-1 (trailing padding wraps around to the front)."""
    length = input_mask.shape[1]
    last_valid = jnp.max(jnp.where(input_mask, jnp.arange(length), -1), axis=1)
    order = (jnp.arange(length)[None, :] + last_valid[:, None] + 1) % length  # [b, P]: source index of slot j
    embeddings = jnp.take_along_axis(embeddings, order[:, :, None], axis=1)
    input_mask = jnp.take_along_axis(input_mask, order, axis=1)
    attn_mask = jnp.take_along_axis(attn_mask, order[:, :, None], axis=1)
    return embeddings, input_mask, jnp.take_along_axis(attn_mask, order[:, None, :], axis=2)


def filter_logits(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """Sets to -inf every logit outside the top-k (0: no limit), then outside the smallest nucleus holding mass top_p
    of what the top-k kept, renormalized: Hugging Face's `TopKLogitsWarper` then `TopPLogitsWarper`.

    One descending sort serves both filters (top_k is a run-time value); logits tied with the k-th are kept.
    """
    sorted_logits = -jnp.sort(-logits, axis=-1)
    rank = jnp.arange(logits.shape[-1])
    kth = jnp.min(jnp.where((top_k <= 0) | (rank < top_k), sorted_logits, jnp.inf), axis=-1, keepdims=True)
    in_top_k = sorted_logits >= kth
    probs = jax.nn.softmax(jnp.where(in_top_k, sorted_logits, -jnp.inf), axis=-1)
    # A token stays when it is in the top k and the mass strictly before it is below top_p (the first always stays).
    keep = in_top_k & (jnp.cumsum(probs, axis=-1) - probs < top_p)
    threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < threshold, -jnp.inf, logits)


def sample_next(logits: jax.Array, row_keys: jax.Array, step: jax.Array, sampling: Sampling) -> jax.Array:
    """Next token per row from float32 logits `[b, vocab]`: argmax at temperature 0, else filtered sampling.

    Row r's randomness is `fold_in(row_keys[r], step)`, so it never depends on the other rows of the batch. The
    sort behind the filters runs only when a filter is set.
    """

    def sample(logits):
        logits = logits / sampling.temperature
        needs_filter = (sampling.top_k > 0) | (sampling.top_p < 1)
        logits = jax.lax.cond(needs_filter, filter_logits, lambda x, *_: x, logits, sampling.top_k, sampling.top_p)
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, step)
        return jax.vmap(jax.random.categorical)(keys, logits).astype(jnp.int32)

    greedy = lambda logits: jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.lax.cond(sampling.temperature > 0, sample, greedy, logits)


def _is_stop(tokens: jax.Array, stop_token_ids: jax.Array) -> jax.Array:
    return jnp.any(tokens[:, None] == stop_token_ids[None, :], axis=1)


class Prefill(NamedTuple):
    """The decoder state after the prefix pass."""

    first_logits: jax.Array  # float32 [b, vocab]: picks the first generated token
    cache: KVCache  # (k, v), each [depth, b, P + steps, kv_heads, head_dim]
    prefix_keys: jax.Array  # bool [b, P], right-aligned: the prefix slots decode steps attend to
    valid_len: jax.Array  # int32 [b]: valid prefix tokens per row


def _llm(module: PaliGemma, embedded: jax.Array, *args: Any, **kwargs: Any):
    """Expert 0 of the Gemma alone (a Pi0's action expert, if any, is skipped)."""
    return module.llm([embedded] + [None] * (len(module.config.experts) - 1), *args, **kwargs)


def _embed(module: PaliGemma, tokens: jax.Array) -> jax.Array:
    return module.llm.embed(tokens)


def _logits(module: PaliGemma, hidden: jax.Array) -> jax.Array:
    return module.llm.logits(hidden)


def pad_logits(logits: jax.Array, settings: DecodeSettings) -> jax.Array:
    """`[b, vocab]` logits zero-padded to `settings.logits_vocab_size` (module docstring); as is when None."""
    extra = (settings.logits_vocab_size or 0) - logits.shape[-1]
    return jnp.pad(logits, ((0, 0), (0, extra))) if extra > 0 else logits


def _embed_generated(module: PaliGemma, variables: Any, tokens: jax.Array, settings: DecodeSettings) -> jax.Array:
    """Embeddings `[b, 1, width]` of generated tokens `[b]`; with `logits_vocab_size`, ids past the vocabulary are zeros."""
    if settings.logits_vocab_size is None:
        return module.apply(variables, tokens[:, None], method=_embed)
    vocab = module.config.vocab_size
    embedded = module.apply(variables, jnp.minimum(tokens, vocab - 1)[:, None], method=_embed)
    return jnp.where((tokens < vocab)[:, None, None], embedded, 0)


def prefill(
    module: PaliGemma,
    variables: Any,
    prefix: jax.Array,
    prefix_mask: jax.Array,
    prefix_ar_mask: jax.Array,
    settings: DecodeSettings,
) -> Prefill:
    """Right-align the embedded prefix `[b, P, width]`, run it once into a cache preallocated for decoding.

    `prefix_mask` bool `[b, P]` marks valid tokens, `prefix_ar_mask` `[b, P]` is openpi's autoregressive mask.
    """
    attn_mask = make_attn_mask(prefix_mask, prefix_ar_mask)
    prefix, prefix_mask, attn_mask = right_align(prefix, prefix_mask, attn_mask)
    batch, prefix_len = prefix_mask.shape
    positions = jnp.cumsum(prefix_mask, axis=1).astype(jnp.int32) - 1
    valid_len = jnp.sum(prefix_mask, axis=1).astype(jnp.int32)
    steps = settings.max_decoding_steps
    if settings.openpi_exact:
        # openpi prefills into its preallocated cache: a query without valid keys attends uniformly over every slot.
        cfg = module.config.paligemma
        empty = jnp.zeros((cfg.depth, batch, prefix_len + steps, cfg.num_kv_heads, cfg.head_dim), module.config.dtype)
        attn_mask = jnp.pad(attn_mask, ((0, 0), (0, 0), (0, steps)))
        (hidden, *_), cache = module.apply(
            variables, prefix, positions, attn_mask, kv_cache=(empty, empty), cache_write_index=jnp.int32(0), method=_llm
        )
        prefix_keys = jnp.arange(prefix_len)[None, :] >= prefix_len - valid_len[:, None]
    else:
        (hidden, *_), (k, v) = module.apply(variables, prefix, positions, attn_mask, method=_llm)
        cache_pad = ((0, 0), (0, 0), (0, steps), (0, 0), (0, 0))
        cache = (jnp.pad(k, cache_pad), jnp.pad(v, cache_pad))
        prefix_keys = prefix_mask
    first_logits = module.apply(variables, hidden[:, -1:], method=_logits)[:, 0]
    return Prefill(first_logits, cache, prefix_keys, valid_len)


def decode_loop(
    module: PaliGemma,
    variables: Any,
    state: Prefill,
    row_keys: jax.Array,
    settings: DecodeSettings,
    sampling: Sampling,
) -> tuple[jax.Array, jax.Array]:
    """The token loop after `prefill`; returns (tokens int32 `[b, steps]`, number of tokens it produced)."""
    batch, prefix_len = state.prefix_keys.shape
    steps = settings.max_decoding_steps
    first = sample_next(pad_logits(state.first_logits, settings), row_keys, jnp.int32(0), sampling)
    done = _is_stop(first, sampling.stop_token_ids)
    tokens = jnp.zeros((batch, steps), jnp.int32).at[:, 0].set(first)
    # Each key slot's generated index (`steps` for the prefix, never below `step`), so a step's key mask `[b, 1, S]`
    # is one elementwise op; concatenating the prefix mask with the generated slots', then adding the query axis,
    # cost XLA's CPU backend a concatenation and (batch 8) a relayout copy per step.
    generated_slot = jnp.concatenate([jnp.full(prefix_len, steps), jnp.arange(steps)])
    prefix_keys = jnp.pad(state.prefix_keys, ((0, 0), (0, steps)))[:, None, :]

    def keep_going(carry):
        step, last, done, _, _ = carry
        exit_now = jnp.all(done) if settings.per_row_stopping else jnp.all(_is_stop(last, sampling.stop_token_ids))
        return (step < steps) & ~exit_now

    def decode_step(carry):
        step, last, done, tokens, cache = carry
        # Feed token step-1 at cache slot P+step-1; it attends the prefix keys and every token generated so far.
        key_valid = prefix_keys | (generated_slot < step)
        (hidden, *_), cache = module.apply(
            variables,
            _embed_generated(module, variables, last, settings),
            (state.valid_len + step - 1 + settings.position_gap)[:, None],
            key_valid,
            kv_cache=cache,
            cache_write_index=prefix_len + step - 1,
            method=_llm,
        )
        logits = pad_logits(module.apply(variables, hidden, method=_logits)[:, 0], settings)
        token = jnp.where(done, 0, sample_next(logits, row_keys, step, sampling))
        done = done | _is_stop(token, sampling.stop_token_ids)
        tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, step))
        return step + 1, token, done, tokens, cache

    # The cache as uint16 bits through the loop: each step's write is in place, no step converts it (gemma's API).
    initial = (jnp.int32(1), first, done, tokens, numerics.bfloat16_as_bits(state.cache))
    step, _, _, tokens, _ = jax.lax.while_loop(keep_going, decode_step, initial)
    return tokens, step


def generate(
    module: Any,
    variables: Any,
    prefix: jax.Array,
    prefix_mask: jax.Array,
    prefix_ar_mask: jax.Array,
    sample_index: jax.Array,
    rng: jax.Array,
    settings: DecodeSettings,
    sampling: Sampling,
) -> tuple[jax.Array, jax.Array]:
    """`prefill` an embedded prefix, then `decode_loop`; row r's randomness is `fold_in(rng, sample_index[r])`.

    `module` is any Flax module with an `llm` (the decoder-LM of `models/gemma.py`) and `config.experts`: PaliGemma
    here, OpenVLA in `models/openvla.py`.
    """
    state = prefill(module, variables, prefix, prefix_mask, prefix_ar_mask, settings)
    row_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, sample_index)
    return decode_loop(module, variables, state, row_keys, settings, sampling)


def embed_observation(
    module: PaliGemma,
    variables: Any,
    images: list[jax.Array],
    image_masks: list[jax.Array],
    tokens: jax.Array,
    token_mask: jax.Array,
    token_ar_mask: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Embedded images (ar 0: bidirectional) and prompt (its own ar mask) -> (prefix, mask, ar mask)."""
    prefix, prefix_mask = module.apply(
        variables, images, image_masks, tokens, token_mask, method=PaliGemma.embed_prefix
    )
    image_ar = jnp.zeros((tokens.shape[0], prefix.shape[1] - tokens.shape[1]), bool)
    return prefix, prefix_mask, jnp.concatenate([image_ar, token_ar_mask.astype(bool)], axis=1)


def prefill_observation(
    module: PaliGemma,
    settings: DecodeSettings,
    params: Any,
    images: list[jax.Array],
    image_masks: list[jax.Array],
    tokens: jax.Array,
    token_mask: jax.Array,
    token_ar_mask: jax.Array,
) -> Prefill:
    """Embed images (ar 0: bidirectional) and the prompt (its own ar mask), then `prefill`."""
    variables = {"params": params["PaliGemma"]}
    prefix, prefix_mask, ar_mask = embed_observation(
        module, variables, images, image_masks, tokens, token_mask, token_ar_mask
    )
    return prefill(module, variables, prefix, prefix_mask, ar_mask, settings)


def _decode_fn(
    module: PaliGemma,
    settings: DecodeSettings,
    params: Any,
    images: list[jax.Array],
    image_masks: list[jax.Array],
    tokens: jax.Array,
    token_mask: jax.Array,
    token_ar_mask: jax.Array,
    sample_index: jax.Array,
    rng: jax.Array,
    sampling: Sampling,
) -> tuple[jax.Array, jax.Array]:
    """The whole sampler as one pure function: embed images + prompt, prefill, decode loop."""
    variables = {"params": params["PaliGemma"]}
    prefix, prefix_mask, ar_mask = embed_observation(
        module, variables, images, image_masks, tokens, token_mask, token_ar_mask
    )
    return generate(module, variables, prefix, prefix_mask, ar_mask, sample_index, rng, settings, sampling)


@functools.cache
def compiled_decoder(config: ModelConfig, settings: DecodeSettings, mesh: jax.sharding.Mesh | None):
    """The jitted sampler for one config and setting (traced once per input shape)."""
    out_shardings = None if mesh is None else (sharding.batch_sharding(mesh), sharding.replicated(mesh))
    return jax.jit(functools.partial(_decode_fn, PaliGemma(config), settings), out_shardings=out_shardings)


def window_needs_masked_cameras(observation: Observation, batch: int) -> bool:
    """Whether openpi's decode window reads masked tokens in some row: a masked camera after a valid token.

    Right-aligned, a row's window is its last `len(valid prefix)` slots; it equals the valid tokens exactly when no
    invalid token lies between the row's first and last valid token (prompt padding is always trailing).
    """
    flags = [
        np.broadcast_to(np.asarray(observation.get(f"image_mask/{camera}", True), bool), (batch,))
        for camera in observation_cameras(observation)
    ]
    flags.append(np.asarray(observation["tokenized_prompt_mask"], bool).any(axis=1))
    valid = np.stack(flags, axis=1)
    after_first_valid = np.cumsum(valid, axis=1) > 0
    before_last_valid = np.cumsum(valid[:, ::-1], axis=1)[:, ::-1] > 0
    return bool(np.any(~valid & after_first_valid & before_last_valid))


def decoder_inputs(
    config: ModelConfig,
    observation: Observation,
    rng: jax.Array | None,
    mesh: jax.sharding.Mesh | None,
    *,
    skip_absent_cameras: bool = True,
) -> dict[str, Any]:
    """Host-side: validate the observation, pick cameras, default optional keys, place arrays on the mesh.

    `skip_absent_cameras` drops the cameras masked in every row (see `DecodeSettings.openpi_exact` for when that is
    exact); False encodes every camera.
    """
    return _place_decoder_inputs(validate_for(config, observation), rng, mesh, skip_absent_cameras)


def validate_for(config: ModelConfig, observation: Observation) -> dict[str, np.ndarray]:
    """The observation checked and converted for a decoder of `config` (`models/observation.py`; no state read)."""
    return validate(observation, image_size=config.siglip.image_size, vocab_size=config.vocab_size)


def _place_decoder_inputs(
    observation: dict[str, np.ndarray], rng: jax.Array | None, mesh: jax.sharding.Mesh | None, skip_absent_cameras: bool
) -> dict[str, Any]:
    batch = observation["tokenized_prompt"].shape[0]
    if mesh is not None and batch % mesh.shape["data"]:  # jax's IndivisibleError would name only an array's shape
        raise ValueError(f"a batch of {batch} rows does not split over the mesh's data axis (size {mesh.shape['data']}): "
                         "pass a multiple of it (eval pads its last batch so)")
    cameras = live_cameras(observation) if skip_absent_cameras else observation_cameras(observation)
    batch_sharded = None if mesh is None else sharding.batch_sharding(mesh)
    place = lambda value: jax.device_put(value, batch_sharded)
    return {
        "images": [place(observation[f"image/{c}"]) for c in cameras],
        "image_masks": [place(observation[f"image_mask/{c}"]) for c in cameras],
        "tokens": place(observation["tokenized_prompt"]),
        "token_mask": place(observation["tokenized_prompt_mask"]),
        "token_ar_mask": place(observation["token_ar_mask"]),
        "sample_index": place(observation["sample_index"]),
        "rng": jax.random.key(0) if rng is None else rng,
    }


def sample_tokens(
    model: Any,
    observation: Observation,
    *,
    rng: jax.Array | None = None,
    max_decoding_steps: int = 256,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_token_ids: tuple[int, ...] = (PALIGEMMA_EOS_ID,),
    per_row_stopping: bool = True,
    openpi_exact: bool = True,
    logits_vocab_size: int | None = None,
) -> jax.Array:
    """Tokens int32 `[b, max_decoding_steps]` from the PaliGemma part of `model` (a Pi0Model or Pi0FastModel).

    Each row ends with its first stop token and is 0 afterwards. `rng` (default key 0) is folded with
    `observation["sample_index"]` (default arange(b)) per row; greedy decoding (temperature 0) ignores it.
    `openpi_exact` (default) reproduces openpi's tokens; False is the corrected masking with contiguous positions,
    Hugging Face's (module docstring). `logits_vocab_size`: MultiNet's zero-padded vocabulary (module docstring);
    tokens past the model's vocabulary can then appear. Only `max_decoding_steps`, `per_row_stopping`,
    `openpi_exact` and `logits_vocab_size` (and input shapes) trigger a new compile.
    """
    settings = DecodeSettings(max_decoding_steps, per_row_stopping, openpi_exact, logits_vocab_size)
    sampling = Sampling.create(temperature, top_k, top_p, tuple(stop_token_ids))
    mesh = getattr(model, "mesh", None)
    inputs = _inputs_as_decoded(model.config, observation, rng, mesh, openpi_exact)
    tokens, _ = compiled_decoder(model.config, settings, mesh)(model.params, **inputs, sampling=sampling)
    return tokens


def _inputs_as_decoded(config: ModelConfig, observation: Observation, rng: jax.Array | None,
                       mesh: jax.sharding.Mesh | None, openpi_exact: bool) -> dict[str, Any]:
    """`sample_tokens`' placed inputs: every camera encoded where openpi's window reads a masked one, else only the
    live ones (what eval's decoder runs, and so what the benchmark times)."""
    observation = validate_for(config, observation)
    batch = observation["tokenized_prompt"].shape[0]
    return _place_decoder_inputs(observation, rng, mesh, not (openpi_exact and window_needs_masked_cameras(observation, batch)))


def _score_options_fn(
    module: PaliGemma,
    params: Any,
    images: list[jax.Array],
    image_masks: list[jax.Array],
    tokens: jax.Array,
    token_mask: jax.Array,
    token_ar_mask: jax.Array,
    option_tokens: jax.Array,
    option_mask: jax.Array,
) -> jax.Array:
    """Log-likelihood `[b, K]` of each option's tokens `[b, K, m]` (masked by `option_mask`) after the prefix.

    Teacher forcing: the prefix is run once; each option's tokens but the last are fed together at the cache slots
    after it (contiguous RoPE positions, as in training), each attending the valid prefix and the option's earlier
    tokens; token j's log-probability comes from the logits after token j - 1 (token 0's from the prefix's last).
    """
    length = option_tokens.shape[2]
    settings = DecodeSettings(max_decoding_steps=length, openpi_exact=False)  # valid prefix keys, contiguous positions
    state = prefill_observation(module, settings, params, images, image_masks, tokens, token_mask, token_ar_mask)
    variables = {"params": params["PaliGemma"]}
    batch, prefix_len = state.prefix_keys.shape
    first = jax.nn.log_softmax(state.first_logits, axis=-1)  # [b, vocab]
    fed = length - 1
    causal = jnp.arange(fed)[None, :] <= jnp.arange(fed)[:, None]  # [fed (query), fed (key)]
    attn_mask = jnp.concatenate(
        [jnp.broadcast_to(state.prefix_keys[:, None, :], (batch, fed, prefix_len)), jnp.broadcast_to(causal, (batch, fed, fed)),
         jnp.zeros((batch, fed, 1), bool)],  # the cache's last slot stays unwritten
        axis=2,
    )
    positions = state.valid_len[:, None] + jnp.arange(fed)[None, :]
    scores = []
    for option in range(option_tokens.shape[1]):
        ids, mask = option_tokens[:, option], option_mask[:, option]
        log_probs = jnp.take_along_axis(first, ids[:, :1], axis=1)  # [b, 1]
        if fed:
            embedded = module.apply(variables, ids[:, :-1], method=_embed)
            (hidden, *_), _ = module.apply(variables, embedded, positions, attn_mask, kv_cache=state.cache,
                                           cache_write_index=jnp.int32(prefix_len), method=_llm)
            later = jax.nn.log_softmax(module.apply(variables, hidden, method=_logits), axis=-1)  # [b, fed, vocab]
            log_probs = jnp.concatenate([log_probs, jnp.take_along_axis(later, ids[:, 1:, None], axis=2)[..., 0]], axis=1)
        scores.append(jnp.sum(jnp.where(mask, log_probs, 0.0), axis=1))
    return jnp.stack(scores, axis=1)


@functools.cache
def compiled_option_scorer(config: ModelConfig, mesh: jax.sharding.Mesh | None):
    out_shardings = None if mesh is None else sharding.batch_sharding(mesh)
    return jax.jit(functools.partial(_score_options_fn, PaliGemma(config)), out_shardings=out_shardings)


def score_options(model: Any, observation: Observation, option_tokens: np.ndarray, option_mask: np.ndarray) -> jax.Array:
    """Log-likelihood float32 `[b, K]` of K candidate answers per row given the observation (image + prompt).

    `option_tokens` int32 `[b, K, m]` (each option's token ids, no BOS, right-padded) and `option_mask` bool
    `[b, K, m]`. A forced choice over the options can never produce an invalid answer: the prediction is the argmax.
    """
    option_tokens, option_mask = np.asarray(option_tokens, np.int32), np.asarray(option_mask, bool)
    batch = np.shape(observation["state"])[0]
    if option_tokens.ndim != 3 or option_tokens.shape[0] != batch or option_mask.shape != option_tokens.shape:
        raise ValueError(f"option_tokens / option_mask must both be [b={batch}, options, tokens], got "
                         f"{option_tokens.shape} and {option_mask.shape}")
    if not option_mask[..., 0].all():
        raise ValueError("every option needs at least one token (option_mask[..., 0] must be True)")
    mesh = getattr(model, "mesh", None)
    inputs = decoder_inputs(model.config, observation, None, mesh)
    place = lambda value: jax.device_put(value, None if mesh is None else sharding.batch_sharding(mesh))
    del inputs["sample_index"], inputs["rng"]
    return compiled_option_scorer(model.config, mesh)(model.params, **inputs, option_tokens=place(option_tokens),
                                                      option_mask=place(option_mask))


def _prefix_activations_fn(
    module: PaliGemma,
    params: Any,
    images: list[jax.Array],
    image_masks: list[jax.Array],
    tokens: jax.Array,
    token_mask: jax.Array,
    token_ar_mask: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The decoder's prefix pass, capturing: (first-token logits float32 `[b, vocab]`, pooled prefix streams).

    The prefix runs as `prefill` runs it (the same attention mask and positions; every valid token's stream is the
    prefill's), in place rather than right-aligned so the prompt tokens stay the last positions for pooling.
    """
    variables = {"params": params["PaliGemma"]}
    prefix, prefix_mask, ar_mask = embed_observation(module, variables, images, image_masks, tokens, token_mask, token_ar_mask)
    positions = jnp.cumsum(prefix_mask, axis=1) - 1
    ((hidden, *_), _), (streams, *_) = activations.apply_capturing(
        module, variables, prefix, positions, make_attn_mask(prefix_mask, ar_mask), method=_llm)
    last = jnp.max(jnp.where(prefix_mask, jnp.arange(prefix_mask.shape[1]), 0), axis=1)
    last_hidden = jnp.take_along_axis(hidden, last[:, None, None], axis=1)
    first_logits = module.apply(variables, last_hidden, method=_logits)[:, 0].astype(jnp.float32)
    return first_logits, activations.pool_prompt(streams, token_mask)


@functools.cache
def compiled_prefix_activations(config: ModelConfig, mesh: jax.sharding.Mesh | None):
    out_shardings = None if mesh is None else sharding.batch_sharding(mesh)
    return jax.jit(functools.partial(_prefix_activations_fn, PaliGemma(config)), out_shardings=out_shardings)


def prefix_activations(model: Any, observation: Observation) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(first-token logits `[b, vocab]`, `{"prefix_last", "prefix_mean": [b, depth, width]}`) of a PaliGemma-only
    model (Pi0-FAST, PaliGemma), from one jitted, batch-sharded prefix pass (`models/activations.py` pools)."""
    mesh = getattr(model, "mesh", None)
    inputs = decoder_inputs(model.config, observation, None, mesh)
    del inputs["sample_index"], inputs["rng"]
    return compiled_prefix_activations(model.config, mesh)(model.params, **inputs)


def benchmark_call(model: Any, batch: int, options: InferenceOptions, live_cameras: int) -> BenchmarkCall:
    """A PaliGemma-backbone token model's `interface.Model.benchmark_call`: `options.max_decoding_steps` greedy tokens
    per sample on random inputs, every row run to the end (no per-row stopping).

    The program is the one `sample_tokens` (eval's decoder) runs with its default `openpi_exact`: the same cameras
    encoded (all of them where openpi's window reads a masked one, as with MultiNet's one live camera of three), so
    the suite never times a shorter prefix than eval's. `kind` names the decoder timed ("decode (openpi-exact)" or
    "decode (corrected)"), recorded as the case's `call`.
    """
    settings = DecodeSettings(max_decoding_steps=options.max_decoding_steps, per_row_stopping=False)
    inputs = _inputs_as_decoded(model.config, random_observation(model.config, batch, live_cameras), None, model.mesh,
                                settings.openpi_exact)
    kind = f"decode ({'openpi-exact' if settings.openpi_exact else 'corrected'})"
    return BenchmarkCall(kind, compiled_decoder(model.config, settings, model.mesh), (model.params,),
                         {**inputs, "sampling": Sampling.create()}, loop_trips=options.max_decoding_steps - 1,
                         counts_tokens=True)


def parity_output(model: Any, batch: int, options: InferenceOptions, live_cameras: int) -> jax.Array:
    """A PaliGemma-backbone token model's `interface.Model.parity_output`: the first-token logits of openpi-exact
    decoding's prefill with every camera encoded, so the masked cameras' tokens are query rows without a valid key."""
    settings = DecodeSettings(max_decoding_steps=options.max_decoding_steps)
    observation = random_observation(model.config, batch, live_cameras)
    inputs = decoder_inputs(model.config, observation, None, model.mesh, skip_absent_cameras=False)
    del inputs["sample_index"], inputs["rng"]
    prefill = jax.jit(functools.partial(prefill_observation, PaliGemma(model.config), settings))
    return prefill(model.params, **inputs).first_logits
