"""The one small interface every model family implements; the evaluator, probing and benchmarks use only this.

    model = multinet_jax.load_model(path)                      # the registry picks the family from the checkpoint
    actions = model.predict_actions(observation, rng=key, options=InferenceOptions(num_flow_steps=10))
    tokens = model.sample_tokens(observation, rng=key, max_decoding_steps=32)

`observation` is the dict of batched arrays a domain's Grain pipeline yields (see the README's "Library API");
each family documents which keys it reads. `predict_actions` returns actions in the family's own normalized space
(`action_normalization` says which statistics undo it), `[b, horizon, action_dim]`, NaN rows where a family's
decoding failed. Families add their own richer methods (Pi0's `sample_actions(noise=...)`, OpenVLA's
`predict_action(images, instructions)`); the shared code never needs them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import jax
import numpy as np
from jax.sharding import Mesh

Observation = Mapping[str, Any]
# How a family's action outputs are normalized: openpi's z-score (x * std + mean) or OpenVLA's bounds
# (0.5 * (x + 1) * (q99 - q01) + q01, where the statistics' mask allows).
ACTION_NORMALIZATIONS = ("mean_std", "quantiles")


@dataclasses.dataclass(frozen=True)
class InferenceOptions:
    """Settings of one prediction call that change outputs; each family reads the ones it has."""

    num_flow_steps: int = 10  # flow-matching families (Pi0)
    max_decoding_steps: int = 32  # token-decoding families (Pi0-FAST actions, every family's text)
    temperature: float = 0.0  # text decoding; action decoding is greedy
    openpi_exact: bool = True  # Pi0-FAST: openpi's decode window (`models.decoding`)
    action_dim: int | None = None  # one-token-per-dim families (OpenVLA): dims to decode; None: the family's own
    center_crop: bool = False  # OpenVLA: its evaluation scripts' center crop before the processor (MultiNet ran it so)

    def __post_init__(self) -> None:
        if self.action_dim is not None and self.action_dim < 1:
            raise ValueError(f"InferenceOptions.action_dim must be positive (or None), got {self.action_dim}")


@runtime_checkable
class Model(Protocol):
    """A loaded model: parameters on a mesh plus the calls an evaluation makes."""

    family: str  # what `eval --model` names (`registry.family_names()`), e.g. "pi0", "pi05", "pi0_fast", "openvla"
    action_normalization: ClassVar[str]  # one of ACTION_NORMALIZATIONS
    config: Any
    params: Any
    mesh: Mesh
    norm_stats: dict | None
    # The text tokenizer the checkpoint bundles (`decode(ids)`, `eos_id`; the model then reads `observation["prompt"]`
    # texts), or None: prompts arrive tokenized with PaliGemma's (`tokenized_prompt`).
    tokenizer: Any

    def predict_actions(self, observation: Observation, *, rng: jax.Array | None, options: InferenceOptions) -> np.ndarray:
        """Actions `[b, horizon, action_dim]` in the family's normalized space."""
        ...

    def sample_tokens(
        self, observation: Observation, *, rng: jax.Array | None = None, max_decoding_steps: int = 32,
        temperature: float = 0.0,
    ) -> jax.Array:
        """Generated token ids int32 `[b, max_decoding_steps]`, 0 after each row's stop token."""
        ...
