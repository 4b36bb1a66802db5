"""Per-layer residual streams for probing, taken from the same jitted pass that makes the prediction.

The Gemma blocks `sow` each expert's residual stream after every layer into the "intermediates" collection (a no-op
unless a caller makes that collection mutable); the layer scan stacks them to `[depth, b, tokens, width]`. Here
they are pooled to one vector per sample and layer, `[b, depth, width]`:

- `prefix_last`: the VLM prefix (expert 0) at the last valid prompt token;
- `prefix_mean`: the VLM prefix averaged over the valid prompt tokens;
- `action_mean`: the action expert averaged over the action tokens, at the first flow step (t = 1, the sample's
  own fixed noise).

Only pooled vectors leave the jitted function; the full streams exist only inside it (for a full-size Pi0, 18
layers x ~300 prefix tokens x 2048 per sample).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

STREAMS = ("prefix_last", "prefix_mean", "action_mean")
PREFIX_STREAMS = STREAMS[:2]


def apply_capturing(module: nn.Module, variables: Any, *args: Any, method: Any, **kwargs: Any) -> tuple[Any, tuple]:
    """`module.apply(...)` that also returns the per-expert residual streams `([depth, b, t, width] | None, ...)`."""
    output, state = module.apply(variables, *args, method=method, mutable=["intermediates"], **kwargs)
    (streams,) = _find(state["intermediates"], "residual")
    return output, streams


def _find(tree: Any, name: str) -> Any:
    """The sown value called `name`, wherever the module nesting put it."""
    if isinstance(tree, dict):
        if name in tree:
            return tree[name]
        found = [value for value in (_find(child, name) for child in tree.values()) if value is not None]
        return found[0] if found else None
    return None


def pool_prompt(residual: jax.Array, token_mask: jax.Array) -> dict[str, jax.Array]:
    """`prefix_last` / `prefix_mean` `[b, depth, width]` from the prefix streams `[depth, b, t, width]`.

    The prompt tokens are the prefix's last `token_mask.shape[1]` positions (images come first).
    """
    prompt = residual[:, :, -token_mask.shape[1] :].astype(jnp.float32)  # [depth, b, P, width]
    positions = jnp.arange(token_mask.shape[1])
    last = jnp.max(jnp.where(token_mask, positions, 0), axis=1)  # [b]
    weights = token_mask.astype(jnp.float32) / jnp.maximum(token_mask.sum(1, keepdims=True), 1)
    return {
        "prefix_last": jnp.swapaxes(jnp.take_along_axis(prompt, last[None, :, None, None], axis=2)[:, :, 0], 0, 1),
        "prefix_mean": jnp.einsum("dbpw,bp->bdw", prompt, weights),
    }


def pool_actions(residual: jax.Array, horizon: int) -> jax.Array:
    """`action_mean` `[b, depth, width]`: the action expert's streams `[depth, b, t, width]` over its last `horizon`
    tokens (the action tokens; Pi0's state token comes before them)."""
    return jnp.swapaxes(residual[:, :, -horizon:].astype(jnp.float32).mean(2), 0, 1)
