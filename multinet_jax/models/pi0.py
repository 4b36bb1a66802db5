"""Pi0 and Pi0.5 in Flax (openpi numerics and parameter names) and their batched, sharded flow-matching sampler.

`Pi0` is the Flax module: `PaliGemma/{img,llm}` (SigLIP + the two-expert Gemma) plus the flow-matching head:
Pi0's `state_proj`, `action_in_proj`, `action_time_mlp_{in,out}`, `action_out_proj`, or with `config.pi05`
Pi0.5's `action_in_proj`, `time_mlp_{in,out}`, `action_out_proj`. `Pi0Model` is what `load_model` returns:
parameters on a mesh, norm stats, and `sample_actions`.

Sampling (as openpi's `Pi0.sample_actions`): the prefix (image tokens of every camera, then the prompt tokens) is
run through expert 0 once per batch to fill a KV cache; then `num_steps` Euler steps from t = 1 (noise) to t = 0
(dt = -1/num_steps) run only the action expert on the suffix, attending to the cached prefix. Masks follow openpi's
`make_attn_mask`: the prefix attends bidirectionally; Pi0's suffix is one state token (attending to the prefix and
itself) + `action_horizon` action tokens (attending to everything valid), the flow time mixed into the action
tokens by `action_time_mlp_*`; Pi0.5's suffix is the action tokens alone, the flow time entering every norm of the
action expert through `time_mlp_*` (adaRMSNorm, see `gemma.py`), and the state only through the prompt's text.

Speed without changing outputs: each live camera goes through SigLIP in its own pass, as in openpi (on CPU one
pass over all cameras' images was measured slower, `benchmarks/pi0_throughput`), and a camera whose mask is
False for the whole batch is dropped before tracing (its tokens would be masked out of every attention anyway, so
removing them is exact). Noise is per sample: `normal(fold_in(rng, sample_index))`, independent of batch makeup.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from multinet_jax import sharding
from multinet_jax.models import activations, decoding, numerics
from multinet_jax.models.backbone import PaliGemma
from multinet_jax.models.configs import Pi0Config, family_name
from multinet_jax.models.gemma import KVCache
from multinet_jax.models.interface import BenchmarkCall, InferenceOptions
from multinet_jax.models.masks import make_attn_mask
from multinet_jax.models.observation import (OPENPI_CAMERAS, check_num_steps, live_cameras, observation_cameras,
                                             random_observation, validate)
from multinet_jax.models.state_prompts import StatePrompts

Observation = Mapping[str, Any]


def posemb_sincos(pos: jax.Array, dim: int, min_period: float, max_period: float) -> jax.Array:
    """Sine-cosine embedding `[b, dim]` of scalar positions `[b]` (periods geometric in [min, max])."""
    fraction = jnp.linspace(0.0, 1.0, dim // 2)
    period = min_period * (max_period / min_period) ** fraction
    # openpi's operation order (1 / period * 2 * pi): angles reach ~1600 rad, where one float32 ulp of the
    # frequency moves sin/cos by ~1e-4, which Pi0.5's time-conditioned norms amplify.
    angles = jnp.einsum("i,j->ij", pos, 1.0 / period * 2 * jnp.pi, precision=jax.lax.Precision.HIGHEST)
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class Pi0(nn.Module):
    config: Pi0Config

    def setup(self) -> None:
        width = self.config.action_expert.width
        self.PaliGemma = PaliGemma(self.config)
        dense = functools.partial(nn.Dense, dot_general=numerics.dot_general)
        self.action_in_proj = dense(width)
        if self.config.pi05:
            self.time_mlp_in = dense(width)
            self.time_mlp_out = dense(width)
        else:
            self.state_proj = dense(width)
            self.action_time_mlp_in = dense(width)
            self.action_time_mlp_out = dense(width)
        self.action_out_proj = dense(self.config.action_dim)

    def embed_prefix(self, images, image_masks, tokens, token_mask) -> tuple[jax.Array, jax.Array]:
        return self.PaliGemma.embed_prefix(images, image_masks, tokens, token_mask)

    def fill_prefix_cache(self, prefix_tokens: jax.Array, prefix_mask: jax.Array) -> KVCache:
        """Run the prefix through expert 0 (bidirectional among valid tokens) and keep its keys/values."""
        attn_mask = make_attn_mask(prefix_mask, jnp.zeros(prefix_mask.shape[1], bool))
        positions = jnp.cumsum(prefix_mask, axis=1) - 1
        _, kv_cache = self.PaliGemma.llm([prefix_tokens, None], positions, attn_mask)
        return kv_cache

    def embed_suffix(
        self, state: jax.Array, noisy_actions: jax.Array, time: jax.Array
    ) -> tuple[jax.Array, jax.Array | None]:
        """(suffix tokens, adaRMS conditioning): Pi0: state token + action tokens mixed with the sin/cos time
        embedding `[b, 1 + horizon, width]`, no conditioning; Pi0.5: the action tokens `[b, horizon, width]` and
        the time MLP's output `[b, width]` for the action expert's adaptive norms (`state` unused)."""
        action_tokens = self.action_in_proj(noisy_actions)
        time_emb = posemb_sincos(time, action_tokens.shape[-1], min_period=4e-3, max_period=4.0)
        if self.config.pi05:
            return action_tokens, nn.swish(self.time_mlp_out(nn.swish(self.time_mlp_in(time_emb))))
        state_token = self.state_proj(state)[:, None, :]
        time_tokens = jnp.broadcast_to(time_emb[:, None, :], action_tokens.shape[:2] + time_emb.shape[-1:])
        mixed = self.action_time_mlp_in(jnp.concatenate([action_tokens, time_tokens], axis=-1))
        mixed = self.action_time_mlp_out(nn.swish(mixed))
        return jnp.concatenate([state_token, mixed], axis=1), None

    def velocity(
        self, kv_cache: KVCache, prefix_mask: jax.Array, state: jax.Array, noisy_actions: jax.Array, time: jax.Array
    ) -> jax.Array:
        """The flow field v_t `[b, horizon, action_dim]` at `noisy_actions` and time `time` `[b]`."""
        suffix, adarms_cond = self.embed_suffix(state, noisy_actions, time)
        batch, suffix_len = suffix.shape[:2]
        horizon = self.config.action_horizon
        # A new causal block starts at the state token (Pi0 only) and at the first action token.
        suffix_ar = jnp.arange(suffix_len) < suffix_len - horizon + 1
        suffix_attn = make_attn_mask(jnp.ones((batch, suffix_len), bool), suffix_ar)
        prefix_attn = jnp.broadcast_to(prefix_mask[:, None, :], (batch, suffix_len, prefix_mask.shape[1]))
        attn_mask = jnp.concatenate([prefix_attn, suffix_attn], axis=-1)
        positions = jnp.sum(prefix_mask, axis=-1)[:, None] + jnp.arange(suffix_len)[None, :]
        (_, suffix_out), _ = self.PaliGemma.llm(
            [None, suffix], positions, attn_mask, kv_cache=kv_cache, adarms_cond=[None, adarms_cond]
        )
        return self.action_out_proj(suffix_out[:, -horizon:])

    def init_all(self) -> None:
        """Touch every parameter (for `init`)."""
        cfg = self.config
        self.PaliGemma.init_all(cfg.siglip.image_size)
        actions = jnp.zeros((1, cfg.action_horizon, cfg.action_dim), jnp.float32)
        suffix, _ = self.embed_suffix(jnp.zeros((1, cfg.action_dim)), actions, jnp.ones((1,)))
        self.action_out_proj(suffix)


def sample_actions_fn(
    module: Pi0,
    params: Any,
    images: Sequence[jax.Array],
    image_masks: Sequence[jax.Array],
    tokens: jax.Array,
    token_mask: jax.Array,
    state: jax.Array,
    noise: jax.Array,
    num_steps: jax.Array,
    capture: bool = False,
) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
    """Pure flow-matching sampler: prefix KV cache once, then `num_steps` Euler steps of the action expert.

    `num_steps` is traced (int32 scalar), so changing it does not recompile. `capture` (static) also returns the
    per-layer residual streams of the prefix and of the first Euler step's action expert, pooled
    (`models/activations.py`): `(actions, {"prefix_last", "prefix_mean", "action_mean": [b, depth, width]})`.
    """
    variables = {"params": params}
    prefix_tokens, prefix_mask = module.apply(variables, images, image_masks, tokens, token_mask, method=Pi0.embed_prefix)
    dt = -1.0 / num_steps.astype(jnp.float32)
    first_time = jnp.ones(state.shape[:1], jnp.float32)
    if capture:
        kv_cache, (prefix_streams, _) = activations.apply_capturing(
            module, variables, prefix_tokens, prefix_mask, method=Pi0.fill_prefix_cache)
        v_first, (_, action_streams) = activations.apply_capturing(
            module, variables, kv_cache, prefix_mask, state, noise, first_time, method=Pi0.velocity)
        start, carry = 1, (noise + dt * v_first, jnp.float32(1.0) + dt)
    else:
        kv_cache = module.apply(variables, prefix_tokens, prefix_mask, method=Pi0.fill_prefix_cache)
        start, carry = 0, (noise, jnp.float32(1.0))

    def euler_step(_, carry):
        x_t, time = carry
        times = jnp.broadcast_to(time, state.shape[:1])
        v_t = module.apply(variables, kv_cache, prefix_mask, state, x_t, times, method=Pi0.velocity)
        return x_t + dt * v_t, time + dt

    x_0, _ = jax.lax.fori_loop(start, num_steps, euler_step, carry)
    if not capture:
        return x_0
    streams = activations.pool_prompt(prefix_streams, token_mask)
    streams["action_mean"] = activations.pool_actions(action_streams, module.config.action_horizon)
    return x_0, streams


# One compiled sampler per (module config, input shapes, live-camera count), shared by every Pi0Model instance.
sample_actions_jit = jax.jit(sample_actions_fn, static_argnums=0, static_argnames="capture")


def per_sample_noise(rng: jax.Array, sample_index: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """Standard normal `[b, *shape]`, row i from `fold_in(rng, sample_index[i])`: independent of batch makeup."""
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(rng, i), shape))(sample_index)


_per_sample_noise_jit = jax.jit(per_sample_noise, static_argnames=("shape",))


def check_noise(shape: tuple[int, ...], batch: int, config: Pi0Config) -> None:
    """Explicit noise must be `[batch, action_horizon, action_dim]`; a wrong horizon or dim names the override."""
    expected = (batch, config.action_horizon, config.action_dim)
    if tuple(shape) == expected:
        return
    if len(shape) == 3 and shape[0] == batch and shape[2] == config.action_dim:
        raise ValueError(
            f"noise has shape {tuple(shape)} but the model samples {expected}: its action_horizon is "
            f"{config.action_horizon}; load the model with action_horizon={shape[1]} (load_model(..., "
            f"action_horizon={shape[1]}), eval --action_horizon={shape[1]}) or pass noise of horizon {config.action_horizon}"
        )
    if len(shape) == 3 and shape[0] == batch:
        raise ValueError(
            f"noise has shape {tuple(shape)} but the model samples {expected}: its action_dim is "
            f"{config.action_dim} (fixed by the checkpoint's action projections)"
        )
    raise ValueError(f"noise has shape {tuple(shape)}, expected {expected} (batch, action_horizon, action_dim)")


# openpi's `Pi0.sample_actions` default (`num_steps=10`), which its policies and MultiNet ran: no checkpoint holds one.
OPENPI_FLOW_STEPS = 10


def checkpoint_flow_steps(checkpoint: str) -> int:
    """`registry.Family.flow_steps`: an openpi checkpoint holds no step count, so its sampler's default is its own."""
    del checkpoint
    return OPENPI_FLOW_STEPS


class Pi0Model:
    """A Pi0 or Pi0.5 ready to sample: `.config`, `.params` (openpi's tree), `.norm_stats`, `.mesh`, `.sample_actions`
    (an `interface.Model` of family "pi0" or "pi05")."""

    num_flow_steps = OPENPI_FLOW_STEPS
    tokenizer = None  # prompts come tokenized with PaliGemma's (`--tokenizer`)
    multinet_actions = None  # MultiNet scored Pi0 by the default rules (the first step's first dims, unnormalized)

    @property
    def family(self) -> str:
        """"pi0" or "pi05" (`configs.family_name`)."""
        return family_name(self.config)

    def __init__(self, config: Pi0Config, params: Any, norm_stats: dict | None, mesh: Mesh | None = None):
        self.config = config
        self.norm_stats = norm_stats
        self.mesh = sharding.make_mesh() if mesh is None else mesh
        self.module = Pi0(config)
        self.params = jax.device_put(params, sharding.param_shardings(params, self.mesh))

    def _place_batch(self, array: Any, dtype: Any) -> jax.Array:
        return sharding.place_batch(array, dtype, mesh=self.mesh)

    def validate_observation(self, observation: Observation) -> dict[str, np.ndarray]:
        """The observation checked and converted at the boundary (`models/observation.py`)."""
        config = self.config
        return validate(observation, image_size=config.siglip.image_size, vocab_size=config.vocab_size,
                        state_dim=config.action_dim, cameras=OPENPI_CAMERAS)

    def _place_inputs(self, observation: dict[str, np.ndarray], skip_absent_cameras: bool) -> dict[str, Any]:
        cameras = live_cameras(observation) if skip_absent_cameras else observation_cameras(observation)
        return {
            "images": [self._place_batch(observation[f"image/{c}"], np.float32) for c in cameras],
            "image_masks": [self._place_batch(observation[f"image_mask/{c}"], bool) for c in cameras],
            "tokens": self._place_batch(observation["tokenized_prompt"], np.int32),
            "token_mask": self._place_batch(observation["tokenized_prompt_mask"], bool),
            "state": self._place_batch(observation["state"], np.float32),
        }

    def prepare_inputs(self, observation: Observation, *, skip_absent_cameras: bool = True) -> dict[str, Any]:
        """Host-side: validate, choose the live cameras, and place arrays batch-sharded on the mesh."""
        return self._place_inputs(self.validate_observation(observation), skip_absent_cameras)

    def make_noise(self, observation: Observation, rng: jax.Array | None) -> jax.Array:
        """Per-sample noise from `rng` (default key 0) and `observation["sample_index"]` (default arange(b))."""
        batch = np.shape(observation["tokenized_prompt"])[0]
        sample_index = observation.get("sample_index", np.arange(batch))
        rng = jax.random.key(0) if rng is None else rng
        shape = (self.config.action_horizon, self.config.action_dim)
        return _per_sample_noise_jit(rng, self._place_batch(sample_index, np.int32), shape)

    def sample_actions(
        self,
        observation: Observation,
        *,
        rng: jax.Array | None = None,
        noise: jax.Array | None = None,
        num_steps: int = OPENPI_FLOW_STEPS,
        skip_absent_cameras: bool = True,
    ) -> jax.Array:
        """Actions `[b, horizon, action_dim]` (normalized space, as openpi's model outputs).

        `noise` (`[b, horizon, action_dim]`) overrides the per-sample noise drawn from `rng` (default key 0) and
        `observation["sample_index"]` (default arange(b)); another shape raises ValueError naming both shapes. `skip_absent_cameras=False` encodes every camera even
        when masked for the whole batch (openpi's behaviour; same outputs, for benchmarks).
        """
        steps = jnp.int32(check_num_steps("num_steps", num_steps))
        batch, inputs = self._sampler_inputs(observation, rng, noise, skip_absent_cameras)
        return sample_actions_jit(self.module, self.params, num_steps=steps, **inputs)[:batch]

    def activations(
        self, observation: Observation, *, rng: jax.Array | None = None, num_steps: int = OPENPI_FLOW_STEPS
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(actions, streams) from one sampling pass: the actions `sample_actions` gives for the same inputs and
        each layer's residual streams `{"prefix_last", "prefix_mean", "action_mean": [b, depth, width]}` (float32;
        see `models/activations.py`)."""
        steps = jnp.int32(check_num_steps("num_steps", num_steps))
        batch, inputs = self._sampler_inputs(observation, rng, None, True)
        actions, streams = sample_actions_jit(self.module, self.params, num_steps=steps, capture=True, **inputs)
        return actions[:batch], {name: value[:batch] for name, value in streams.items()}

    def _sampler_inputs(self, observation: Observation, rng: jax.Array | None, noise: Any, skip_absent_cameras: bool):
        """(batch size, the sampler's inputs) with the observation validated once (`models/observation.py`)."""
        observation = self.validate_observation(observation)
        batch = observation["tokenized_prompt"].shape[0]
        if noise is not None:
            check_noise(np.shape(noise), batch, self.config)
            if not np.isfinite(np.asarray(noise, np.float32)).all():  # would come back as NaN actions, silently
                raise ValueError("noise holds NaN or infinite values")
        inputs = self._place_inputs(observation, skip_absent_cameras)
        inputs["noise"] = self.make_noise(observation, rng) if noise is None else self._place_batch(noise, np.float32)
        return batch, inputs

    def predict_actions(self, observation: Observation, *, rng: jax.Array | None, options: InferenceOptions) -> np.ndarray:
        """`interface.Model`: `sample_actions` with `options.num_flow_steps`."""
        return np.asarray(self.sample_actions(observation, rng=rng, num_steps=options.num_flow_steps))

    def sample_tokens(self, observation: Observation, **kwargs: Any) -> jax.Array:
        """Greedy/sampled text from the PaliGemma backbone (implemented in `multinet_jax.models.decoding`)."""
        return decoding.sample_tokens(self, observation, **kwargs)

    def checkpoint_action_stats(self, unnorm_key: str | None) -> dict[str, Any] | None:
        """`interface.Model`: openpi's `actions` norm stats (the asset id was chosen at load; no `unnorm_key`)."""
        return (self.norm_stats or {}).get("actions")

    def action_prompts(self, prompt_tokenizer: Any, *, normalize_state: bool, source: str) -> StatePrompts | None:
        """`interface.Model`: Pi0.5's prompts hold the discretized state (`state_prompts`); Pi0's, and those of a Pi0.5
        trained without the state in its prompt (`discrete_state_input=False`, openpi's pi05_libero), are the
        pipeline's."""
        if not self.config.discrete_state_input:
            return None
        return StatePrompts(paligemma=prompt_tokenizer, fast_prompt=None, max_token_len=self.config.max_token_len,
                            norm_stats=self.norm_stats, normalize=normalize_state, source=source)

    def benchmark_call(self, batch: int, options: InferenceOptions, live_cameras: int) -> BenchmarkCall:
        """`interface.Model`: one action chunk per sample, `options.num_flow_steps` Euler steps after the prefix."""
        observation = random_observation(self.config, batch, live_cameras)
        kwargs = {**self.prepare_inputs(observation), "noise": self.make_noise(observation, jax.random.key(0)),
                  "num_steps": jnp.int32(options.num_flow_steps)}
        return BenchmarkCall("flow", jax.jit(functools.partial(sample_actions_fn, self.module)), (self.params,), kwargs,
                             loop_trips=options.num_flow_steps)

    def parity_output(self, batch: int, options: InferenceOptions, live_cameras: int) -> jax.Array:
        """`interface.Model`: the actions of `benchmark_call`."""
        return self.benchmark_call(batch, options, live_cameras)()

    def prompt_lengths(self, observation: Observation, *, for_actions: bool) -> None:
        """`interface.Model`: prompts arrive tokenized with PaliGemma's (the pipeline counts them)."""
        del observation, for_actions

    def score_options(self, observation: Observation, option_tokens: Any, option_mask: Any) -> jax.Array:
        """Log-likelihood `[b, K]` of candidate answers under the PaliGemma backbone (`decoding.score_options`)."""
        return decoding.score_options(self, observation, option_tokens, option_mask)
