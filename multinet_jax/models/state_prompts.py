"""The Pi0.5 and Pi0-FAST prompts as openpi builds them: the state normalized, unpadded, then discretized.

openpi's input transforms run in this order (`training/config.py` `ModelTransformFactory`, `policies/policy_config.py`):
the robot's data transform, then `Normalize`, quantile normalization for every model but Pi0,
`(x - q01) / (q99 - q01 + 1e-6) * 2 - 1` with the checkpoint's `norm_stats["state"]` (their first `len(state)`
entries), then the model's tokenizer (`TokenizePrompt` for Pi0.5, `TokenizeFASTInputs` for Pi0-FAST), which
discretizes that state into 256 bins over [-1, 1], and only after it `PadStatesAndActions` (Pi0.5; FAST never
pads). So the prompt holds one bin per dimension the state really has: the pipeline carries that count
(`state_dim`) beside the zero-padded `state` that Pi0's state projection reads.

A sample without a state (Overcooked, Act2Answer's composites) gets an empty state text, `State: ;`.
`normalize=False` (`eval --nonormalize_state`) discretizes the state as the data gives it (values beyond [-1, 1]
land in the first or last bin), for checkpoints without state quantiles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from multinet_jax import tokenizers
from multinet_jax.tokenizers.paligemma import pad_to_length

QUANTILE_EPSILON = 1e-6  # openpi's `Normalize._normalize_quantile`


class StatePrompts:
    """Batch -> `tokenized_prompt` (+ masks) with each row's state in openpi's Pi0.5 or Pi0-FAST format.

    `fast_prompt` given: Pi0-FAST's prompt (its own length); else Pi0.5's, `max_token_len` tokens with `paligemma`.
    `norm_stats`: the checkpoint's (`model.norm_stats`), whose `state` q01/q99 normalize the state when
    `normalize`; `source` names the checkpoint in errors.
    """

    def __init__(self, *, paligemma: tokenizers.PaliGemmaTokenizer | None, fast_prompt: tokenizers.FastPromptTokenizer | None,
                 max_token_len: int, norm_stats: Mapping[str, Any] | None, normalize: bool, source: str):
        self.paligemma, self.fast_prompt, self.max_token_len = paligemma, fast_prompt, max_token_len
        self.source = source
        self.quantiles = _state_quantiles(norm_stats, source) if normalize else None

    def normalized_state(self, state: np.ndarray, state_dim: int) -> np.ndarray:
        """The sample's own `state_dim` dims of its zero-padded `state`, quantile-normalized when asked."""
        state = np.asarray(state)[:state_dim]
        if self.quantiles is None:
            return state
        q01, q99 = self.quantiles
        if state_dim > len(q01):
            raise ValueError(f"{self.source}: the state has {state_dim} dims but the checkpoint's state norm stats "
                             f"only {len(q01)}; --nonormalize_state discretizes the state as the data gives it")
        q01, q99 = q01[:state_dim], q99[:state_dim]
        # float64, as openpi's float32 state meets its float64 statistics
        return (state.astype(np.float64) - q01) / (q99 - q01 + QUANTILE_EPSILON) * 2.0 - 1.0

    @property
    def limit(self) -> int:
        """The most prompt tokens kept: Pi0-FAST's prompt tokenizer's own `max_len`, else `max_token_len`."""
        return self.fast_prompt.max_len if self.fast_prompt is not None else self.max_token_len

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """`interface.ActionPrompts`: the model inputs, and `prompt_tokens` (each row's length before the cut at
        `limit`), counted here where the cut happens since the evaluator never sees these prompts uncut."""
        rows = [(prompt or "", self.normalized_state(state, int(dim)))
                for prompt, state, dim in zip(batch["prompt"], batch["state"], batch["state_dim"])]
        if self.fast_prompt is not None:
            tokenized = [self.fast_prompt.tokenize(prompt, state) for prompt, state in rows]
            return {key: np.stack([row[key] for row in tokenized]) for key in tokenized[0]}
        whole = [self.paligemma.state_prompt_ids(prompt, state) for prompt, state in rows]
        ids, masks = zip(*(pad_to_length(row, self.max_token_len) for row in whole))
        return {"tokenized_prompt": np.stack(ids), "tokenized_prompt_mask": np.stack(masks),
                "prompt_tokens": np.array([len(row) for row in whole], np.int32)}


def _state_quantiles(norm_stats: Mapping[str, Any] | None, source: str) -> tuple[np.ndarray, np.ndarray]:
    entry = (norm_stats or {}).get("state") or {}
    if entry.get("q01") is None or entry.get("q99") is None:
        raise ValueError(f"{source}: the Pi0.5 / Pi0-FAST prompt holds the state quantile-normalized with the "
                         "checkpoint's norm stats (assets/<asset id>/norm_stats.json, state q01/q99), as openpi does, "
                         "but it has none; --nonormalize_state discretizes the state as the data gives it")
    return np.asarray(entry["q01"], np.float64), np.asarray(entry["q99"], np.float64)
