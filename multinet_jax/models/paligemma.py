"""PaliGemma, the VLM Pi0 / Pi0.5 / Pi0-FAST were tuned from, loaded from big_vision's `.npz` checkpoints.

    model = multinet_jax.load_model("paligemma_pt_224")          # gs://vertex-model-garden-paligemma-us/.../pt_224.npz
    tokens = model.sample_tokens(observation, max_decoding_steps=32)
    scores = model.score_options(observation, option_tokens, option_mask)      # [b, K] log-likelihoods

The source-VLM baseline of Act2Answer: the same modules as Pi0's backbone (`backbone.PaliGemma`: SigLIP + Gemma expert 0),
the same prefix-LM decoder and option scorer (`models/decoding.py`), so a PaliGemma and a Pi0 backbone holding the
same weights give the same logits. It has no action head: `predict_actions` refuses, and `eval` gives it text
domains and Act2Answer's text probe only (its action probe is reported as not applicable).
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from multinet_jax import sharding
from multinet_jax.models import decoding
from multinet_jax.models.openpi_checkpoint import named_config, param_shapes, random_params
from multinet_jax.models.configs import PaliGemmaConfig, infer_paligemma_config
from multinet_jax.models.interface import BenchmarkCall, InferenceOptions, Observation
from multinet_jax.weights import big_vision
from multinet_jax.weights.trees import CheckpointError


class PaliGemmaModel:
    """A PaliGemma ready to decode: `.config`, `.params` (`{"PaliGemma": ...}`, openpi's tree), `.mesh`,
    `.sample_tokens`, `.score_options` (an `interface.Model` of family "paligemma" without actions)."""

    family = "paligemma"
    num_flow_steps = None  # token-decoded actions, or none
    tokenizer = None  # prompts come tokenized with PaliGemma's (`--tokenizer`)
    norm_stats = None
    multinet_actions = None  # no actions

    def __init__(self, config: PaliGemmaConfig, params: Any, mesh: Mesh | None = None):
        self.config = config
        self.mesh = sharding.make_mesh() if mesh is None else mesh
        self.params = jax.device_put(params, sharding.param_shardings(params, self.mesh))

    def sample_tokens(self, observation: Observation, **kwargs: Any) -> jax.Array:
        """Greedy/sampled text (`decoding.sample_tokens`)."""
        return decoding.sample_tokens(self, observation, **kwargs)

    def prompt_lengths(self, observation: Observation, *, for_actions: bool) -> None:
        """`interface.Model`: prompts arrive tokenized with PaliGemma's (the pipeline counts them)."""
        del observation, for_actions

    def score_options(self, observation: Observation, option_tokens: Any, option_mask: Any) -> jax.Array:
        """Log-likelihood `[b, K]` of candidate answers given the observation (`decoding.score_options`)."""
        return decoding.score_options(self, observation, option_tokens, option_mask)

    def activations(self, observation: Observation, *, rng: jax.Array | None = None,
                    num_steps: int | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(first-token logits, `{"prefix_last", "prefix_mean"}`) from the decoder's prefix pass, as Pi0-FAST's
        (`decoding.prefix_activations`); `rng` and `num_steps` do not apply (no flow sampling, no action expert)."""
        return decoding.prefix_activations(self, observation)

    def predict_actions(self, observation: Observation, *, rng: jax.Array | None, options: InferenceOptions) -> np.ndarray:
        raise ValueError("PaliGemma has no action head: it predicts text only (text domains, Act2Answer's text probe)")

    def checkpoint_action_stats(self, unnorm_key: str | None) -> None:
        """`interface.Model`: a PaliGemma npz has no action statistics (no actions)."""
        return None

    def action_prompts(self, prompt_tokenizer: Any, *, normalize_state: bool, source: str) -> None:
        """`interface.Model`: the pipeline's prompts (no state in them)."""
        return None

    def benchmark_call(self, batch: int, options: InferenceOptions, live_cameras: int) -> BenchmarkCall:
        """`interface.Model`: `options.max_decoding_steps` text tokens per sample (`decoding.benchmark_call`)."""
        return decoding.benchmark_call(self, batch, options, live_cameras)

    def parity_output(self, batch: int, options: InferenceOptions, live_cameras: int) -> jax.Array:
        """`interface.Model`: the prefill's first-token logits (`decoding.parity_output`)."""
        return decoding.parity_output(self, batch, options, live_cameras)


def read_config(checkpoint: str | pathlib.Path, **overrides: Any) -> PaliGemmaConfig:
    """PaliGemma's sizes from the npz's array headers (no array read); `overrides`: dtype, max_token_len."""
    try:
        return infer_paligemma_config(big_vision.checkpoint_shapes(checkpoint), **overrides)
    except KeyError as error:  # a key the sizes are read from
        raise CheckpointError(f"{checkpoint}: lacks {big_vision.npz_key(error.args[0])}, which PaliGemma's sizes are read from")
    except ValueError as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{checkpoint}: {error}")


def processor_image_size(source: Any) -> int:
    """`Family.processor_image_size`: the SigLIP's input size of a checkpoint (from the npz's headers) or an in-memory
    model, which its Hugging Face processor resizes to (pt_448: 448)."""
    config = read_config(source) if isinstance(source, (str, pathlib.Path)) else source.config
    return config.siglip.image_size


def family(checkpoint: str) -> str:
    """"paligemma", once the npz's headers show PaliGemma's sizes (a torn or foreign npz fails here, naming it)."""
    read_config(checkpoint)
    return "paligemma"


def build_model(config: PaliGemmaConfig, params: Any, *, mesh: Mesh | None = None) -> PaliGemmaModel:
    return PaliGemmaModel(config, params, mesh)


def write_random(path: pathlib.Path, config_name: str, *, corpus: Any, seed: int, scale: float) -> pathlib.Path:
    """A random PaliGemma of a named config as a big_vision npz at `path` (the demo's; `corpus` is unused: the npz
    bundles no tokenizer)."""
    del corpus
    return big_vision.save_npz(random_params(named_config(config_name), seed, scale), path)


def load(checkpoint: str | pathlib.Path, *, dtype: str = "float32", mesh: Mesh | None = None, **overrides: Any) -> PaliGemmaModel:
    """A big_vision PaliGemma npz -> PaliGemmaModel, restored as `dtype` into `mesh`'s shardings (default: all devices
    on "data"); sizes from the arrays' shapes, `overrides` for max_token_len."""
    config = read_config(checkpoint, dtype=dtype, **overrides)
    mesh = sharding.make_mesh() if mesh is None else mesh
    expected = param_shapes(config)
    params = big_vision.restore_params(checkpoint, expected, sharding.param_shardings(expected, mesh), dtype=dtype)
    return PaliGemmaModel(config, params, mesh)
