"""The one interface every model family implements; the evaluator, probing, the demo and the benchmarks use only this
(and, before a checkpoint is loaded, the family's entry in `models/registry.py`).

    model = multinet_jax.load_model(path)                      # the registry picks the family from the checkpoint
    actions = model.predict_actions(observation, rng=key, options=InferenceOptions(num_flow_steps=10))
    tokens = model.sample_tokens(observation, rng=key, max_decoding_steps=32)

`observation` is the dict of batched arrays a domain's Grain pipeline yields (see the README's "Library API");
each family documents which keys it reads. `predict_actions` returns actions in the family's own normalized space
(`registry.Family.action_normalization` says which rule undoes it), `[b, horizon, action_dim]`, NaN rows where a
family's decoding failed. Families add their own richer methods (Pi0's `sample_actions(noise=...)`, OpenVLA's
`predict_action(images, instructions)`); the shared code never needs them. A family without a capability (PaliGemma
has no action head) still has the member and raises ValueError naming what it lacks; the registry's `Family` lets
the evaluator refuse such a run before loading anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import jax

    from multinet_jax import domains

Observation = Mapping[str, Any]
# How a family's action outputs are normalized: openpi's z-score (x * std + mean) or OpenVLA's bounds
# (0.5 * (x + 1) * (q99 - q01) + q01, where the statistics' mask allows).


@dataclasses.dataclass(frozen=True)
class InferenceOptions:
    """Settings of one prediction call that change outputs; each family reads the ones it has."""

    num_flow_steps: int = 10  # flow-matching families (Pi0)
    max_decoding_steps: int = 32  # token-decoding families (Pi0-FAST actions, every family's text)
    temperature: float = 0.0  # text decoding; actions are greedy unless the domain's protocol samples them (Magma's Open-X)
    openpi_exact: bool = True  # Pi0-FAST: openpi's decode window (`models.decoding`)
    action_dim: int | None = None  # one-token-per-dim families (OpenVLA): dims to decode; None: the family's own
    center_crop: bool = False  # OpenVLA: its evaluation scripts' center crop before the processor (MultiNet ran it so)

    def __post_init__(self) -> None:
        if self.action_dim is not None and self.action_dim < 1:
            raise ValueError(f"InferenceOptions.action_dim must be positive (or None), got {self.action_dim}")


@dataclasses.dataclass(frozen=True)
class PromptLengths:
    """Each row's prompt length in the tokens its model reads, before any cut, and the cut applied: what the
    evaluator counts per row and per domain, since MultiNet cut some protocols' prompts silently."""

    tokens: np.ndarray  # int [b]: the whole prompt's length
    limit: int | None  # the most tokens kept (None: never cut)

    def cut(self, row: int) -> int:
        """How many tokens row `row` lost to the limit (0: none)."""
        return 0 if self.limit is None else max(int(self.tokens[row]) - self.limit, 0)


class ActionPrompts(Protocol):
    """A family whose action prompts hold the robot's state (openpi's Pi0.5 and Pi0-FAST formats) builds them per batch."""

    limit: int  # the most tokens a prompt keeps (longer ones are cut, and counted)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """A data batch (`prompt`, `state`, `state_dim`) -> `tokenized_prompt` and its masks, and `prompt_tokens`
        (int32 `[b]`: each prompt's whole length, before the cut at `limit`)."""
        ...


class MultiNetActions(Protocol):
    """How MultiNet scored a family's actions where that differs from the default (the first step's first dims,
    unnormalized with the split's statistics): OpenVLA's dims, mask and per-dataset conversion (`openvla_actions`)."""

    def split_statistics(self, domain: str, stats: dict[str, Any]) -> dict[str, Any]:
        """The family's unnormalization statistics on `domain`, from the evaluated split's raw action statistics
        (before `ground_truth`'s transform)."""
        ...

    def ground_truth(self, domain: str, values: np.ndarray) -> np.ndarray:
        """MultiNet's transform of the Open-X ground truth it scored the family against, over the last axis (the
        identity where it scored the split's own): applied to each record's ground truth and to each per-dim statistic
        of the split (`domains.transformed_stats`), which then score."""
        ...

    def options(self, domain: str, continuous: bool, stats: dict[str, Any], options: InferenceOptions) -> InferenceOptions:
        """One action domain's prediction settings, given the statistics that will unnormalize its actions; refuses a
        domain it cannot score (before any model time)."""
        ...

    def predictions(self, actions: np.ndarray, norm: domains.ActionNorm, domain: str) -> list[list[float] | None]:
        """Continuous actions `[b, 1, dims]` (normalized) -> one prediction per row (None: invalid); `norm` unnormalizes
        with the statistics it holds (`norm.stats`)."""
        ...

    def note(self, domain: str, options: InferenceOptions) -> dict[str, Any]:
        """What was applied, for the domain's metrics file (e.g. `{"openvla_actions": {...}}`)."""
        ...


@dataclasses.dataclass(frozen=True)
class BenchmarkCall:
    """One prediction as its jitted function and placed inputs (`function(*args, **kwargs)`), so a benchmark can
    AOT-compile it, time it and count its FLOPs."""

    kind: str  # what one call makes, recorded beside its figures: "flow" (an action chunk), "decode" (tokens), ...
    function: Any  # jitted: has `.lower`
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    loop_trips: int  # trips of its while loops (flow steps; decode steps after the first), which a jaxpr does not hold
    counts_tokens: bool = False  # its output's [1] is the number of decode steps the loop ran (tokens/s)

    def __call__(self) -> Any:
        return self.function(*self.args, **self.kwargs)


@runtime_checkable
class Model(Protocol):
    """A loaded model: what `eval`, `probe`, the runners and `benchmarks/suite.py` use of it, and nothing else."""

    family: str  # what `eval --model` names (`registry.family_names()`)
    config: Any  # read: `vocab_size` (the prompt tokenizer must match), `action_horizon`
    params: Any  # the parameter tree on the mesh
    # The text tokenizer the checkpoint bundles (`decode(ids)`, `eos_id`, `encode_continuation`; the model then reads
    # `observation["prompt"]` texts), or None: prompts arrive tokenized with PaliGemma's (`tokenized_prompt`).
    tokenizer: Any
    multinet_actions: MultiNetActions | None  # MultiNet's rules for this family's actions; None: the default ones
    # The Euler steps the checkpoint samples its actions with when none are asked for (SmolVLA: config.json
    # `num_steps`; openpi's Pi0 / Pi0.5: `sample_actions`' 10, its checkpoints hold none); None: no flow head.
    num_flow_steps: int | None

    def predict_actions(self, observation: Observation, *, rng: jax.Array | None, options: InferenceOptions) -> np.ndarray:
        """Actions `[b, horizon, action_dim]` in the family's normalized space."""
        ...

    def sample_tokens(
        self, observation: Observation, *, rng: jax.Array | None = None, max_decoding_steps: int = 32,
        temperature: float = 0.0, openpi_exact: bool = True, logits_vocab_size: int | None = None,
    ) -> jax.Array:
        """Generated token ids int32 `[b, max_decoding_steps]`, 0 after each row's stop token; `openpi_exact`:
        openpi's decode window where the family decodes as openpi does; `logits_vocab_size`: MultiNet's zero-padded
        vocabulary, for families reading the prompt tokenizer's (`models.decoding`)."""
        ...

    def prompt_lengths(self, observation: Observation, *, for_actions: bool) -> PromptLengths | None:
        """Each row's prompt length as the model tokenizes `observation` itself (a bundled `tokenizer`; `for_actions`:
        the action prompt, else the text one) and the cut it applies; None: prompts arrive tokenized (the pipeline
        counts them, `prompt_tokens`)."""
        ...

    def score_options(self, observation: Observation, option_tokens: Any, option_mask: Any) -> jax.Array:
        """Log-likelihood float32 `[b, K]` of K candidate answers (`option_tokens` int32 `[b, K, m]`, no BOS)."""
        ...

    def activations(self, observation: Observation, *, rng: jax.Array | None = None,
                    num_steps: int | None = None) -> tuple[Any, dict[str, jax.Array]]:
        """(the call's output, per-layer residual streams `{"prefix_last", "prefix_mean"[, "action_mean"]}`
        `[b, depth, width]`) from one jitted pass (`models/activations.py`)."""
        ...

    def checkpoint_action_stats(self, unnorm_key: str | None) -> dict[str, Any] | None:
        """The checkpoint's statistics that undo the family's `action_normalization` (`unnorm_key`: OpenVLA's dataset key);
        None when the checkpoint has none."""
        ...

    def action_prompts(self, prompt_tokenizer: Any, *, normalize_state: bool, source: str) -> ActionPrompts | None:
        """The builder of action prompts holding the state (`normalize_state`: quantile-normalized with the
        checkpoint's statistics; `source` names the checkpoint in errors), or None: the pipeline's prompts serve."""
        ...

    def benchmark_call(self, batch: int, options: InferenceOptions, live_cameras: int) -> BenchmarkCall:
        """One prediction on random inputs of `batch` rows (`live_cameras` cameras unmasked where the family reads
        several; `options.num_flow_steps` / `options.max_decoding_steps` as the family decodes), every row run to the
        end."""
        ...

    def parity_output(self, batch: int, options: InferenceOptions, live_cameras: int) -> jax.Array:
        """A float output of one pass on random inputs that every attention call shapes (actions, logits or
        streams): what the benchmarks compare between attention implementations."""
        ...
