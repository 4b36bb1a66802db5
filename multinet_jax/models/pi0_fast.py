"""Pi0-FAST: PaliGemma (SigLIP + a single-expert Gemma) that emits FAST action tokens autoregressively.

`Pi0Fast` is the Flax module whose parameter tree is openpi's Pi0-FAST tree (`PaliGemma/{img,llm}/...`, see
`../shared/openpi_reference/param_specs/pi0_fast_full_size.tsv`). `Pi0FastModel` is what `load_model` returns for a
Pi0-FAST checkpoint: `.sample_tokens` runs the prefix-LM decoder (`models/decoding.py`) and `.sample_actions` turns
the tokens into actions with openpi's FAST prompt format (`tokenizers.FastPromptTokenizer`). The published
checkpoints ship no tokenizer, so one must be attached (`action_tokenizer=` or the attribute) before
`sample_actions`; rows whose tokens hold no valid action chunk come back as NaN, never as an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh

from multinet_jax import sharding
from multinet_jax.models import decoding
from multinet_jax.models.backbone import PaliGemma
from multinet_jax.models.configs import Pi0FastConfig
from multinet_jax.models.interface import BenchmarkCall, InferenceOptions
from multinet_jax.models.state_prompts import StatePrompts
from multinet_jax.tokenizers import FastPromptTokenizer, FastTokenizer

Observation = Mapping[str, Any]


class Pi0Fast(nn.Module):
    """openpi's `Pi0FAST` parameter layout: everything lives under `PaliGemma` (no action head)."""

    config: Pi0FastConfig

    def setup(self) -> None:
        self.PaliGemma = PaliGemma(self.config)

    def init_all(self) -> None:
        """Touch every parameter (for `init`)."""
        self.PaliGemma.init_all(self.config.siglip.image_size)


class Pi0FastModel:
    """A Pi0-FAST ready to sample: `.config`, `.params`, `.norm_stats`, `.mesh`, `.sample_tokens`, `.sample_actions`
    (an `interface.Model` of family "pi0_fast")."""

    family = "pi0_fast"
    num_flow_steps = None  # token-decoded actions, or none
    tokenizer = None  # prompts come tokenized with PaliGemma's (`--tokenizer`)
    multinet_actions = None  # the default rules (the first step's first dims, unnormalized)

    def __init__(
        self,
        config: Pi0FastConfig,
        params: Any,
        norm_stats: dict | None,
        mesh: Mesh | None = None,
        action_tokenizer: FastPromptTokenizer | None = None,
    ):
        self.config = config
        self.norm_stats = norm_stats
        self.mesh = sharding.make_mesh() if mesh is None else mesh
        self.params = jax.device_put(params, sharding.param_shardings(params, self.mesh))
        self.action_tokenizer = action_tokenizer

    def sample_tokens(
        self,
        observation: Observation,
        *,
        rng: jax.Array | None = None,
        max_decoding_steps: int = 256,
        temperature: float = 0.0,
        **decode_options: Any,
    ) -> jax.Array:
        """Tokens int32 `[b, max_decoding_steps]`, 0 after each row's EOS (see `decoding.sample_tokens`)."""
        return decoding.sample_tokens(
            self,
            observation,
            rng=rng,
            max_decoding_steps=max_decoding_steps,
            temperature=temperature,
            **decode_options,
        )

    def prompt_lengths(self, observation: Observation, *, for_actions: bool) -> None:
        """`interface.Model`: prompts arrive tokenized with PaliGemma's (the pipeline counts them)."""
        del observation, for_actions

    def score_options(self, observation: Observation, option_tokens: Any, option_mask: Any) -> jax.Array:
        """Log-likelihood `[b, K]` of candidate answers given the observation (`decoding.score_options`)."""
        return decoding.score_options(self, observation, option_tokens, option_mask)

    def activations(self, observation: Observation, *, rng: jax.Array | None = None,
                    num_steps: int | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(first-token logits, `{"prefix_last", "prefix_mean"}`) from the decoder's prefix pass
        (`decoding.prefix_activations`). No action expert, so no `action_mean`; `rng` and `num_steps` (flow sampling)
        do not apply, and are accepted so that probing calls every family alike."""
        return decoding.prefix_activations(self, observation)

    def decode_actions(self, tokens: jax.Array | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(actions float32 `[b, horizon, action_dim]`, valid bool `[b]`); invalid rows are NaN."""
        if self.action_tokenizer is None:
            raise ValueError(
                "Pi0FastModel has no action tokenizer: set model.action_tokenizer = FastPromptTokenizer("
                "PaliGemmaTokenizer(path), FastTokenizer.from_pretrained(fast_dir))"
            )
        shape = (self.config.action_horizon, self.config.action_dim)
        tokens = np.asarray(tokens)
        actions = np.full((tokens.shape[0], *shape), np.nan, np.float32)
        valid = np.zeros(tokens.shape[0], bool)
        for row, row_tokens in enumerate(tokens):
            decoded = self.action_tokenizer.extract_actions(row_tokens, *shape)
            if decoded is not None:
                actions[row], valid[row] = decoded, True
        return actions, valid

    def sample_actions(
        self,
        observation: Observation,
        *,
        rng: jax.Array | None = None,
        max_decoding_steps: int = 256,
        temperature: float = 0.0,
        openpi_exact: bool = True,
    ) -> np.ndarray:
        """Actions `[b, horizon, action_dim]` in the model's normalized space; NaN rows where decoding failed.

        `openpi_exact` picks openpi's decoder or the corrected masking (`models.decoding`)."""
        tokens = self.sample_tokens(
            observation, rng=rng, max_decoding_steps=max_decoding_steps, temperature=temperature, openpi_exact=openpi_exact
        )
        actions, _ = self.decode_actions(tokens)
        return actions

    def predict_actions(self, observation: Observation, *, rng: jax.Array | None, options: InferenceOptions) -> np.ndarray:
        """`interface.Model`: greedy `sample_actions` with `options.max_decoding_steps` (the temperature is for text)."""
        return self.sample_actions(observation, rng=rng, max_decoding_steps=options.max_decoding_steps,
                                   openpi_exact=options.openpi_exact)

    def checkpoint_action_stats(self, unnorm_key: str | None) -> dict[str, Any] | None:
        """`interface.Model`: openpi's `actions` norm stats (the asset id was chosen at load; no `unnorm_key`)."""
        return (self.norm_stats or {}).get("actions")

    def action_prompts(self, prompt_tokenizer: Any, *, normalize_state: bool, source: str) -> StatePrompts:
        """`interface.Model`: openpi's FAST prompt, which holds the discretized state (`state_prompts`), cut at the
        model's `max_token_len` as openpi's data config builds it (`FASTTokenizer(model_config.max_token_len)`)."""
        if self.action_tokenizer is None:
            raise ValueError(f"{source}: Pi0FastModel has no action tokenizer to build its state prompts with: set "
                             "model.action_tokenizer = FastPromptTokenizer(PaliGemmaTokenizer(path), FastTokenizer.from_pretrained(fast_dir))")
        return StatePrompts(paligemma=prompt_tokenizer, fast_prompt=self.action_tokenizer.with_max_len(self.config.max_token_len),
                            max_token_len=self.config.max_token_len, norm_stats=self.norm_stats,
                            normalize=normalize_state, source=source)

    def benchmark_call(self, batch: int, options: InferenceOptions, live_cameras: int) -> BenchmarkCall:
        """`interface.Model`: `options.max_decoding_steps` action tokens per sample (`decoding.benchmark_call`)."""
        return decoding.benchmark_call(self, batch, options, live_cameras)

    def parity_output(self, batch: int, options: InferenceOptions, live_cameras: int) -> jax.Array:
        """`interface.Model`: the prefill's first-token logits (`decoding.parity_output`)."""
        return decoding.parity_output(self, batch, options, live_cameras)


def load_action_tokenizer(paths: Mapping[str, Any], prompt_tokenizer: Any) -> FastPromptTokenizer:
    """The action tokenizer a Pi0-FAST is loaded with (`registry.Family.action_tokenizer`): openpi's FAST prompt over
    the PaliGemma tokenizer and the FAST tokenizer at `paths["fast_tokenizer"]` (openpi checkpoints ship none)."""
    return FastPromptTokenizer(prompt_tokenizer, FastTokenizer.from_pretrained(paths["fast_tokenizer"]))
