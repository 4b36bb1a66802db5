"""Shared inputs for the decoding tests: openpi's tiny Pi0-FAST fixture, its checkpoints, and loaded models."""

from __future__ import annotations

import atexit
import functools
import pathlib
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from conftest import openpi_io, openpi_observation, shared_path
from multinet_jax import sharding, weights
from multinet_jax.models import configs, load_model, param_shapes
from multinet_jax.weights import big_vision
from multinet_jax.models.backbone import PaliGemma
from multinet_jax.models.masks import make_attn_mask

# What the fixture's README.json says shapes cannot tell: Pi0FASTConfig(action_dim=8, action_horizon=10, ...).
FAST_OVERRIDES = {"action_dim": 8, "action_horizon": 10, "max_token_len": 64}


def fast_io() -> dict[str, np.ndarray]:
    """openpi's inputs and greedy outputs for the tiny Pi0-FAST (a fresh dict of the cached arrays)."""
    return openpi_io("fast")


def fast_observation() -> dict[str, np.ndarray]:
    """The fixture's observation (keys without `obs/`, in the file's camera order: base_0, base_1, wrist_0)."""
    return openpi_observation("fast")


@functools.cache
def fast_model():
    """The fixture's Pi0-FAST checkpoint loaded in float32 through `load_model` (cached: loading is slow)."""
    return load_model(str(shared_path("openpi_reference", "fast", "ckpt", "0")), **FAST_OVERRIDES)


@functools.cache
def pi0_model():
    """The fixture's Pi0 checkpoint (its PaliGemma backbone decodes text) loaded in float32."""
    return load_model(str(shared_path("openpi_reference", "pi0", "ckpt", "0")))


def openpi_greedy_tokens(model, observation: dict[str, np.ndarray], steps: int) -> np.ndarray:
    """openpi's greedy Pi0-FAST decoder, transcribed statement by statement onto this project's layers: the
    reference for inputs the golden fixture does not cover (rows with a masked camera).

    Transcribed from openpi's source (15a9616, the fixtures' commit): `Pi0FAST.sample_actions` and gemma_fast's
    cache. Every camera is embedded (none skipped); `make_attn_mask(prefix_mask, ar_mask)`; `left_to_right_align`
    rolls each row left by its last valid index + 1; `prefill_len = sum(mask)`, `prefix_start = prefill_size -
    prefill_len`; the attention mask is padded by `steps` and the prefix is written into a zero cache of
    `prefill_size + steps` slots that its queries attend over (gemma_fast's `_init_cache`), positions
    `cumsum(mask) - 1`; the token of step s (argmax of the last logits) is fed at position `prefill_len + s + 1`
    into slot `prefill_size + s` and attends to the slots j with `prefix_start <= j < prefill_size + s + 1`. Every
    row runs all `steps` (openpi exits early only when every row emits EOS at the same step). Ours: the layers
    (SigLIP, Gemma, embedding, logits), which the fixture's prefill logits and tokens verify.
    """
    config = model.config
    module = PaliGemma(config)
    variables = {"params": model.params["PaliGemma"]}
    cameras = [key.removeprefix("image/") for key in observation if key.startswith("image/")]
    tokens = np.asarray(observation["tokenized_prompt"], np.int32)
    batch = tokens.shape[0]
    embedded, input_mask = module.apply(
        variables,
        [jnp.asarray(observation[f"image/{c}"]) for c in cameras],
        [jnp.asarray(observation[f"image_mask/{c}"], bool) for c in cameras],
        jnp.asarray(tokens),
        jnp.asarray(observation["tokenized_prompt_mask"], bool),
        method=PaliGemma.embed_prefix,
    )
    embedded, input_mask = np.array(embedded), np.array(input_mask)
    prefill_size = input_mask.shape[1]
    token_ar = np.asarray(observation.get("token_ar_mask", np.zeros_like(tokens)), np.int32)
    ar_mask = np.concatenate([np.zeros((batch, prefill_size - tokens.shape[1]), np.int32), token_ar], axis=1)
    attn_mask = np.array(make_attn_mask(jnp.asarray(input_mask), jnp.asarray(ar_mask)))
    for row in range(batch):  # left_to_right_align
        seqlen = int(np.max(input_mask[row] * np.arange(prefill_size))) + 1
        embedded[row] = np.roll(embedded[row], -seqlen, axis=0)
        input_mask[row] = np.roll(input_mask[row], -seqlen, axis=0)
        attn_mask[row] = np.roll(attn_mask[row], -seqlen, axis=(0, 1))
    prefill_len = input_mask.sum(axis=1)
    prefix_start = prefill_size - prefill_len
    experts = len(config.experts)
    cfg = config.paligemma
    empty = jnp.zeros((cfg.depth, batch, prefill_size + steps, cfg.num_kv_heads, cfg.head_dim), config.dtype)

    @jax.jit
    def forward(x, positions, mask, cache, write_index):
        def call(m, *args, **kwargs):
            (hidden, *_), new_cache = m.llm([x] + [None] * (experts - 1), *args, **kwargs)
            return m.llm.logits(hidden[:, -1:])[:, 0], new_cache

        return module.apply(variables, positions, mask, kv_cache=cache, cache_write_index=write_index, method=call)

    positions = np.cumsum(input_mask, axis=1) - 1
    padded_mask = np.pad(attn_mask, ((0, 0), (0, 0), (0, steps)))
    last_logit, cache = forward(jnp.asarray(embedded), positions, padded_mask, (empty, empty), 0)
    output = np.zeros((batch, steps), np.int32)
    slots = np.arange(prefill_size + steps)
    for step in range(steps):
        token = np.asarray(jnp.argmax(last_logit, axis=-1), np.int32)
        output[:, step] = token
        token_embedding = module.apply(variables, jnp.asarray(token[:, None]), method=lambda m, t: m.llm.embed(t))
        mask = (slots[None, None, :] >= prefix_start[:, None, None]) & (slots[None, None, :] < prefill_size + step + 1)
        last_logit, cache = forward(token_embedding, (prefill_len + step + 1)[:, None], mask, cache, prefill_size + step)
    return output


@functools.cache
def pi0_backbone_npz() -> pathlib.Path:
    """The PaliGemma weights of `pi0/ckpt/0` (every action-expert `*_1` leaf and the action head dropped), written in
    big_vision's layout by `save_npz` (equal to the shared `paligemma_npz/pt_tiny.npz`)."""
    reference = pi0_model()
    config = configs.PaliGemmaConfig(reference.config.paligemma, reference.config.siglip, reference.config.vocab_size)
    expected = param_shapes(config)
    params = weights.restore_params(str(shared_path("openpi_reference", "pi0", "ckpt", "0")), expected,
                                    sharding.param_shardings(expected, sharding.make_mesh()), skip=weights.is_pi0_only)
    root = tempfile.mkdtemp(prefix="big_vision_")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return big_vision.save_npz(params, pathlib.Path(root) / "pt_tiny.npz")
