"""Attention masks in openpi's (big_vision's) prefix-LM convention, shared by every decoder-LM in `models/`."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def make_attn_mask(input_mask: jax.Array, ar_mask: jax.Array) -> jax.Array:
    """openpi's (big_vision's) mask: token i attends valid token j iff cumsum(ar)[j] <= cumsum(ar)[i].

    `input_mask` bool `[b, n]` (False = padding), `ar_mask` bool `[n]` or `[b, n]` (True starts a new causal
    block; all True is a plain causal mask). Returns bool `[b, n, n]` (query, key).
    """
    ar_mask = jnp.broadcast_to(ar_mask, input_mask.shape)
    cumsum = jnp.cumsum(ar_mask, axis=1)
    causal = cumsum[:, None, :] <= cumsum[:, :, None]
    valid = input_mask[:, None, :] & input_mask[:, :, None]
    return causal & valid
