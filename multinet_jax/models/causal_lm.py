"""What the causal vision-language families (OpenVLA, Magma) share around their Flax modules: the jitted passes'
builders, and option scoring (a forced choice among candidate answers by their log-likelihood after the prompt, with
teacher forcing and no cache).

The family's Flax module provides `embed_tokens(ids)` and `forward(prefix, mask) -> (logits, hidden)` (a causal pass
over valid tokens with contiguous positions, as `OpenVLA.forward` and `Magma.forward` are). Flax modules hash by
their config, so the builders below compile once per function, config, setting and mesh.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from multinet_jax import sharding


@functools.cache
def compiled_pass(function: Callable[..., Any], module: nn.Module, mesh: Mesh) -> Callable[..., Any]:
    """`function(module, params, ...)` jitted, its outputs batch-sharded over `mesh`."""
    return jax.jit(functools.partial(function, module), out_shardings=sharding.batch_sharding(mesh))


@functools.cache
def compiled_decoder(function: Callable[..., Any], module: nn.Module, settings: Any, mesh: Mesh) -> Callable[..., Any]:
    """`function(module, settings, params, ...) -> (tokens, steps)` jitted: tokens batch-sharded, steps replicated."""
    return jax.jit(functools.partial(function, module, settings),
                   out_shardings=(sharding.batch_sharding(mesh), sharding.replicated(mesh)))


def check_options(option_tokens: Any, option_mask: Any, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(int32 ids, bool mask) `[batch, K, m]`; a one-line error for a wrong shape or an empty option."""
    option_tokens, option_mask = np.asarray(option_tokens, np.int32), np.asarray(option_mask, bool)
    if option_tokens.ndim != 3 or option_tokens.shape[0] != batch or option_mask.shape != option_tokens.shape:
        raise ValueError(f"option_tokens / option_mask must both be [b={batch}, options, tokens], got "
                         f"{option_tokens.shape} and {option_mask.shape}")
    if not option_mask[..., 0].all():
        raise ValueError("every option needs at least one token (option_mask[..., 0] must be True)")
    return option_tokens, option_mask


def score_continuations(module: nn.Module, variables: Any, prefix: jax.Array, mask: jax.Array, option_tokens: jax.Array,
                        option_mask: jax.Array) -> jax.Array:
    """Log-likelihood `[b, K]` of each option's tokens `[b, K, m]` after the embedded prompt `prefix` `[b, P, width]`
    (valid where `mask`, a prefix of each row): per option one causal pass over [prefix, option]. The prompt's right
    padding is masked and positions stay contiguous, so token 0's log-probability comes from the prompt's last valid
    position, token j's from option token j - 1."""
    batch, prefix_len = mask.shape
    length = option_tokens.shape[2]
    predictors = jnp.concatenate([jnp.sum(mask, axis=1, keepdims=True) - 1,
                                  jnp.broadcast_to(prefix_len + jnp.arange(length - 1), (batch, length - 1))], axis=1)
    scores = []
    for option in range(option_tokens.shape[1]):
        ids, valid = option_tokens[:, option], option_mask[:, option]
        embedded = module.apply(variables, ids, method=type(module).embed_tokens).astype(prefix.dtype)
        logits, _ = module.apply(variables, jnp.concatenate([prefix, embedded], axis=1),
                                 jnp.concatenate([mask, valid], axis=1), method=type(module).forward)
        picked = jnp.take_along_axis(logits, predictors[:, :, None], axis=1)  # [b, m, vocab]
        log_probs = jnp.take_along_axis(jax.nn.log_softmax(picked, axis=-1), ids[:, :, None], axis=2)[..., 0]
        scores.append(jnp.sum(jnp.where(valid, log_probs, 0.0), axis=1))
    return jnp.stack(scores, axis=1)
