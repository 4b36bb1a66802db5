"""Magma (microsoft/Magma-8B: CLIP ConvNeXt-XXLarge + `mlp2x_gelu` projector + Llama-3-8B) in Flax, loaded from its
Hugging Face checkpoint, batched and sharded.

    model = multinet_jax.load_model("magma-8b", dtype="bfloat16")                  # or a local HF model directory
    actions = model.predict_action(images, instructions, unnorm_key=stats)          # float64 [b, 7]
    text = model.generate_text(images, questions, max_decoding_steps=64)

Architecture: every image is cut into a grid of crops by the processor (`models/magma_inputs.py`); all crops go
through the ConvNeXt trunk (`models/convnext.py`, `clip_vis_dense`: stem + stages, no head), the projector
(fc1 -> exact GELU -> fc2) maps each feature-map position to the decoder's width, the crops' maps are tiled back into
the image's grid with a learned row separator after each grid row, and these tokens replace the image's one `<image>`
id in the prompt. The decoder is the shared `gemma.Gemma` with Llama switches (Llama-3: GQA, RoPE base 500000),
causal over the valid merged tokens with positions 0..n-1; decoding is the shared prefix-LM loop (`decoding.generate`)
with a preallocated KV cache, contiguous positions and per-row stopping at the checkpoint's EOS ids, as HF's
`generate` runs Magma.

Actions (OpenVLA's scheme, Magma's `ActionTokenizer`): token t maps to bin `clip(V - t - 1, 0, n_bins - 2)` of the
centers of `linspace(-1, 1, 256)`, V the tokenizer's base vocabulary (its last 256 ids are the action tokens), read as
SimplerEnv's and MultiNet's scripts read them: the 7 ids before the last generated one (`output_ids[-8:-1]`);
unnormalized with q01/q99 (and the statistics' mask) in float64.

Batching: prompts and images of different sizes are right-padded and masked (each row's causal prefix is
right-aligned by the decoder), so a batch gives each row what it gives alone.
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from multinet_jax import sharding
from multinet_jax.models import action_bins, activations, causal_lm, decoding, magma_protocol, numerics
from multinet_jax.models.configs import shapes_once_per_config
from multinet_jax.models.convnext import ConvNeXt
from multinet_jax.models.gemma import Gemma
from multinet_jax.models.interface import BenchmarkCall, InferenceOptions, Observation, PromptLengths
from multinet_jax.models import llama_checkpoint
from multinet_jax.models.magma_checkpoint import MagmaConfig
from multinet_jax.models.magma_inputs import (IMAGE_TOKEN, Batch, ImageProcessor, MagmaTokenizer, action_prompt, chat_prompt,
                                              chat_text, merge_plan)
from multinet_jax.models.masks import make_attn_mask

ACTION_DIM = magma_protocol.ACTION_DIM  # SimplerEnv / MultiNet read 7 action tokens
# Text ids of the benchmarks' random prompt: the order of a chat-formatted action prompt's (two BOS, the Llama-3 headers,
# "<image>\nWhat action should the robot take to <instruction>?"); a chosen length, not a measured one.
BENCHMARK_PROMPT_TOKENS = 48
# SimplerEnv's statistics (microsoft/Magma `tools/simplerenv-magma/simpler_env/policies/magma/magma_model.py`,
# `action_norm_stats`: the fields Magma's decoding reads), in OpenVLA's `norm_stats[key]["action"]` layout.
SIMPLERENV_NORM_STATS = {
    "bridge_orig": {"action": {
        "q01": [-0.02872725307941437, -0.04170349963009357, -0.026093858778476715, -0.08092105075716972,
                -0.09288699507713317, -0.20718276381492615, 0.0],
        "q99": [0.028309678435325586, 0.040855254605412394, 0.040161586627364146, 0.08192047759890528,
                0.07792850524187081, 0.20382574498653397, 1.0],
        "mask": [True, True, True, True, True, True, False]}},
    "google_robot": {"action": {
        "q01": [-0.22453527510166169, -0.14820013284683228, -0.231589707583189, -0.3517994859814644,
                -0.4193011274933815, -0.43643461108207704, 0.0],
        "q99": [0.17824687153100965, 0.14938379630446405, 0.21842354819178575, 0.5892666035890578,
                0.35272657424211445, 0.44796681255102094, 1.0],
        "mask": [True, True, True, True, True, True, False]}},
}


class Projector(nn.Module):
    """Magma's `mlp2x_gelu` projector (fc1, exact GELU, fc2) and the learned row separator."""

    width: int
    dtype: str

    @nn.compact
    def __call__(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(projected features, the row separator `[width]`), both in `dtype`."""
        dense = functools.partial(nn.Dense, self.width, dtype=self.dtype, dot_general=numerics.dot_general)
        x = dense(name="fc2")(numerics.gelu(dense(name="fc1")(features), approximate=False))
        separator = self.param("row_separator", nn.initializers.zeros_init(), (self.width,))
        return x, separator.astype(self.dtype)


class Magma(nn.Module):
    """Parameter tree: `vision/...` (ConvNeXt), `projector/{fc1,fc2,row_separator}`, `llm/...` (decoder-LM)."""

    config: MagmaConfig

    def setup(self) -> None:
        cfg = self.config
        self.vision = ConvNeXt(cfg.vision, cfg.dtype)
        self.projector = Projector(cfg.llm.width, cfg.dtype)
        self.llm = Gemma((cfg.llm,), cfg.vocab_size, cfg.dtype)

    def vision_features(self, crops: jax.Array) -> jax.Array:
        """Crops NHWC `[n, S, S, 3]` -> ConvNeXt feature maps `[n, S/32, S/32, channels]` (`clip_vis_dense`)."""
        return self.vision(crops)

    def embed_images(self, crops: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Crops `[n, S, S, 3]` -> (projected maps `[n, h, w, width]`, the row separator `[width]`)."""
        return self.projector(self.vision_features(crops))

    def embed_tokens(self, tokens: jax.Array) -> jax.Array:
        return self.llm.embed(tokens)

    def embed_prefix(self, crops: jax.Array, tokens: jax.Array, gather: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The merged sequence `[b, L, width]` (`magma_inputs.merge_plan`'s gather over [text | crops | separator])
        and its validity mask."""
        batch, num_crops = crops.shape[:2]
        maps, separator = self.embed_images(crops.reshape(batch * num_crops, *crops.shape[2:]))
        maps = maps.reshape(batch, -1, maps.shape[-1])
        text = self.llm.embed(tokens)
        pool = jnp.concatenate([text, maps.astype(text.dtype), jnp.broadcast_to(separator.astype(text.dtype), (batch, 1, text.shape[-1]))], axis=1)
        return jnp.take_along_axis(pool, gather[:, :, None], axis=1), mask

    def forward(self, prefix: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The whole causal sequence without a cache: (logits float32 `[b, n, vocab]`, final-normed hidden states).

        Apply with `mutable=["intermediates"]` to also get every layer's output (`models.activations`).
        """
        attn_mask = make_attn_mask(mask, jnp.ones(mask.shape, bool))
        positions = jnp.cumsum(mask, axis=1) - 1
        (hidden,), _ = self.llm([prefix], positions, attn_mask)
        return self.llm.logits(hidden), hidden

    def init_all(self) -> None:
        """Touch every parameter (for `init` / `eval_shape`)."""
        size = self.config.vision.stride
        prefix, mask = self.embed_prefix(jnp.zeros((1, 1, size, size, 3)), jnp.zeros((1, 2), jnp.int32),
                                         jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2), bool))
        self.forward(prefix, mask)


@shapes_once_per_config
def param_shapes(config: MagmaConfig) -> dict[str, Any]:
    """The parameter tree of `config` as ShapeDtypeStructs in the config's dtype (no memory: `jax.eval_shape`)."""
    variables = jax.eval_shape(lambda: Magma(config).init(jax.random.key(0), method=Magma.init_all))
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, jnp.dtype(config.dtype)), variables["params"])


def _generate_fn(module: Magma, settings: decoding.DecodeSettings, params: Any, crops: jax.Array, tokens: jax.Array,
                 gather: jax.Array, mask: jax.Array, sample_index: jax.Array, rng: jax.Array, sampling: decoding.Sampling):
    variables = {"params": params}
    prefix, mask = module.apply(variables, crops, tokens, gather, mask, method=Magma.embed_prefix)
    return decoding.generate(module, variables, prefix, mask, jnp.ones(mask.shape, bool), sample_index, rng, settings, sampling)


def _score_options_fn(module: Magma, params: Any, crops: jax.Array, tokens: jax.Array, gather: jax.Array,
                      mask: jax.Array, option_tokens: jax.Array, option_mask: jax.Array) -> jax.Array:
    """Log-likelihood `[b, K]` of each option's tokens `[b, K, m]` after the prompt: per option one causal pass over
    [prompt, option] (`causal_lm.score_continuations`)."""
    variables = {"params": params}
    prefix, mask = module.apply(variables, crops, tokens, gather, mask, method=Magma.embed_prefix)
    return causal_lm.score_continuations(module, variables, prefix, mask, option_tokens, option_mask)


def _prompt_streams_fn(module: Magma, params: Any, crops: jax.Array, tokens: jax.Array, gather: jax.Array,
                       mask: jax.Array, prompt_mask: jax.Array) -> dict[str, jax.Array]:
    """`prefix_last` / `prefix_mean` `[b, depth, width]` over the prompt's text after the last image, from one causal
    pass over the merged sequence (`models.activations.pool_prompt`)."""
    variables = {"params": params}
    prefix, mask = module.apply(variables, crops, tokens, gather, mask, method=Magma.embed_prefix)
    _, (residual,) = activations.apply_capturing(module, variables, prefix, mask, method=Magma.forward)
    return activations.pool_prompt(residual, prompt_mask)


class MagmaModel:
    """A Magma ready to act and talk (an `interface.Model` of family "magma"): `.predict_action` (SimplerEnv's
    step, batched), `.generate_text`, `.predict_actions` / `.sample_tokens` / `.score_options` / `.activations` (the
    evaluator's), `.config`, `.params`, `.tokenizer`, `.image_processor`."""

    family = "magma"
    num_flow_steps = None  # token-decoded actions, or none
    norm_stats = SIMPLERENV_NORM_STATS  # Magma-8B ships none: SimplerEnv's, which its evaluation code hard-codes
    multinet_actions = magma_protocol.MultiNetActions()  # MultiNet's Magma script's Open-X rules

    def __init__(self, config: MagmaConfig, params: Any, tokenizer: MagmaTokenizer | None,
                 image_processor: ImageProcessor | None, image_start_end: bool, mesh: Mesh | None = None,
                 sampling_filters: tuple[int | None, float] = (llama_checkpoint.HF_DEFAULT_TOP_K, 1.0)):
        """`tokenizer` and `image_processor` None: a model of parameters alone (`build_model`, for benchmarks), which
        takes no texts or images. `sampling_filters`: the (top_k, top_p) sampling keeps to, as HF's `generate` (from
        generation_config.json: `llama_checkpoint.sampling_filters`)."""
        self.config = config
        self.sampling_filters = sampling_filters
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_start_end = image_start_end
        self.mesh = sharding.make_mesh() if mesh is None else mesh
        self.params = jax.device_put(params, sharding.param_shardings(params, self.mesh))

    # -- inputs ------------------------------------------------------------------------------------

    def prompt(self, user: str) -> str:
        """Magma's chat prompt around one user turn (`magma_inputs.chat_prompt`)."""
        return chat_prompt(user, self.tokenizer.bos_token, self.image_start_end)

    def batch(self, prompts: Sequence[str], images: Sequence[Sequence[np.ndarray]], tokenizer_bos: bool = True,
              max_tokens: int | None = None) -> Batch:
        """Full prompts (each `<image>` once per image) and each row's RGB uint8 images -> the model's batch.
        `tokenizer_bos`: the tokenizer adds its BOS before the template's (Magma's processor) or not
        (`apply_chat_template(tokenize=True)`); `max_tokens`: each row's ids cut there (right side), None: never."""
        if len(prompts) != len(images) or not prompts:
            raise ValueError(f"Magma needs one image list per prompt (>= 1), got {len(prompts)} prompts and {len(images)}")
        processed = [[self.image_processor(image) for image in row] for row in images]
        encode = self.tokenizer.encode if tokenizer_bos else self.tokenizer.encode_continuation
        rows = [encode(prompt)[:max_tokens] for prompt in prompts]
        feature_size = self.image_processor.crop_size // self.config.vision.stride
        return merge_plan(rows, processed, self.config.image_token_id, feature_size)

    def _placed(self, batch: Batch, *extra: np.ndarray) -> tuple[jax.Array, ...]:
        place = functools.partial(sharding.place_batch, mesh=self.mesh)
        return (place(batch.crops, np.float32), place(batch.tokens, np.int32), place(batch.gather, np.int32),
                place(batch.mask, bool), *(place(array, array.dtype) for array in extra))

    # -- decoding ----------------------------------------------------------------------------------

    def generate(self, batch: Batch, *, max_decoding_steps: int, rng: jax.Array | None = None, temperature: float = 0.0,
                 sample_index: np.ndarray | None = None) -> np.ndarray:
        """Token ids int32 `[b, max_decoding_steps]`; after a row's EOS, the pad id (as HF `generate` pads)."""
        rows = len(batch.tokens)
        sample_index = np.arange(rows) if sample_index is None else np.asarray(sample_index)
        settings = decoding.DecodeSettings(max_decoding_steps, per_row_stopping=True, openpi_exact=False)
        top_k, top_p = self.sampling_filters
        sampling = decoding.Sampling.create(temperature, top_k=top_k, top_p=top_p, stop_token_ids=self.tokenizer.eos_ids)
        generated, _ = causal_lm.compiled_decoder(_generate_fn, Magma(self.config), settings, self.mesh)(
            self.params, *self._placed(batch, sample_index.astype(np.int32)),
            jax.random.key(0) if rng is None else rng, sampling)
        generated = np.asarray(generated)[:rows]
        return np.where(self._after_stop(generated), self.tokenizer.pad_id, generated)

    def _after_stop(self, generated: np.ndarray) -> np.ndarray:
        """Where a row's ids follow its first stop token (padding, not what the model emitted)."""
        stops = np.isin(generated, self.tokenizer.eos_ids)
        return np.cumsum(stops, axis=1) - stops > 0

    def generate_text(self, images: Sequence[np.ndarray], questions: Sequence[str], *, max_decoding_steps: int,
                      rng: jax.Array | None = None, temperature: float = 0.0) -> list[str]:
        """One image and one question per row (`<image>\\n{question}`) -> the decoded answers."""
        batch = self.batch([self.prompt(f"<image>\n{question}") for question in questions], [[image] for image in images])
        generated = self.generate(batch, max_decoding_steps=max_decoding_steps, rng=rng, temperature=temperature)
        return [self.tokenizer.decode(row) for row in generated]

    def action_token_ids(self, generated: np.ndarray, dims: int = ACTION_DIM) -> tuple[np.ndarray, np.ndarray]:
        """(the `dims` ids before each row's last generated token (its EOS), as `output_ids[-8:-1]` reads them, int64
        `[b, dims]`; whether the row has them: False where it ended before `dims` ids were generated)."""
        generated = np.asarray(generated)
        ended = np.isin(generated, self.tokenizer.eos_ids)
        last = np.where(ended.any(axis=1), ended.argmax(axis=1), generated.shape[1] - 1)  # the row's final token
        columns = last[:, None] - dims + np.arange(dims)[None, :]
        return np.take_along_axis(generated, np.maximum(columns, 0), axis=1).astype(np.int64), columns[:, 0] >= 0

    def normalized_actions(self, token_ids: np.ndarray) -> np.ndarray:
        """Action token ids -> bin centers in [-1, 1] (float64; the last 256 ids of the tokenizer's base vocabulary)."""
        return action_bins.normalized_actions(token_ids, self.tokenizer.vocab_size)

    def decoded_actions(self, generated: np.ndarray, dims: int = ACTION_DIM) -> np.ndarray:
        """Generated ids -> normalized actions float64 `[b, dims]`; NaN rows where the decode ended before `dims` ids."""
        token_ids, complete = self.action_token_ids(generated, dims)
        return np.where(complete[:, None], self.normalized_actions(token_ids), np.nan)

    def action_stats(self, unnorm_key: str | None) -> dict[str, np.ndarray]:
        """SimplerEnv's `action_norm_stats[unnorm_key]` as arrays (q01, q99, mask)."""
        return action_bins.select_stats(self.norm_stats, unnorm_key, "Magma's (SimplerEnv's)")

    # -- the APIs ----------------------------------------------------------------------------------

    def predict_action(self, images: Sequence[np.ndarray], instructions: Sequence[str], unnorm_key: str, *,
                       max_decoding_steps: int = ACTION_DIM + 1) -> np.ndarray:
        """SimplerEnv's `MagmaInference.step` for a batch, greedy: RGB uint8 images (SimplerEnv resizes its frames to
        256 x 256 first) and instructions -> unnormalized actions float64 `[b, 7]` with the statistics of
        `unnorm_key` ("bridge_orig" or "google_robot"); NaN rows where the decode ended before 7 action ids."""
        stats = self.action_stats(unnorm_key)
        batch = self.batch([self.prompt(action_prompt(text)) for text in instructions], [[image] for image in images])
        generated = self.generate(batch, max_decoding_steps=max_decoding_steps)
        return action_bins.unnormalize(self.decoded_actions(generated), stats)

    def _prompt_texts(self, observation: Observation, for_actions: bool) -> tuple[list[str], bool, int | None]:
        """The evaluator's batch -> (each row's full prompt, whether the tokenizer adds its BOS, the cut): its
        conversation `chat` (per row the protocol's messages, cut at `chat_max_tokens`), else its `prompt` texts as
        the action question or a plain question after Magma's system prompt."""
        cameras = [key for key in observation if key.startswith("image/")]
        if not cameras or "prompt" not in observation:
            raise KeyError(f"Magma reads `image/<camera>` (uint8) and `prompt`; the observation has {sorted(observation)}")
        if "chat" in observation:
            rows = len(observation[cameras[0]])
            if len(observation["chat"]) != rows or "chat_tokenizer_bos" not in observation:
                raise ValueError(f"chat: Magma reads one conversation per row and `chat_tokenizer_bos`, got "
                                 f"{len(observation['chat'])} for {rows} rows")
            texts = [chat_text(messages, self.tokenizer.bos_token, self.image_start_end) for messages in observation["chat"]]
            return texts, bool(observation["chat_tokenizer_bos"]), observation.get("chat_max_tokens")
        users = [action_prompt(str(text)) if for_actions else f"<image>\n{text}" for text in observation["prompt"]]
        return [self.prompt(user) for user in users], True, None

    def prompt_lengths(self, observation: Observation, *, for_actions: bool) -> PromptLengths:
        """`interface.Model`: each row's prompt ids as `batch` encodes them, and the protocol's cut (PIQA's and BFCL's
        chats at 1024 tokens; none elsewhere)."""
        texts, tokenizer_bos, max_tokens = self._prompt_texts(observation, for_actions)
        encode = self.tokenizer.encode if tokenizer_bos else self.tokenizer.encode_continuation
        return PromptLengths(np.array([len(encode(text)) for text in texts]), max_tokens)

    def _observation_batch(self, observation: Observation, for_actions: bool) -> Batch:
        """The evaluator's batch -> Magma's: its first camera's image (uint8, or the pipeline's [-1, 1] float32) and
        its prompts (`_prompt_texts`; in a chat the image goes where it says `<image>`)."""
        texts, tokenizer_bos, max_tokens = self._prompt_texts(observation, for_actions)
        camera = next(key for key in observation if key.startswith("image/"))
        images = [np.asarray(image) for image in observation[camera]]
        images = [image if image.dtype == np.uint8 else np.rint((image.astype(np.float32) + 1) * 127.5).astype(np.uint8)
                  for image in images]
        if "chat" in observation:
            return self.batch(texts, [[image] if IMAGE_TOKEN in text else [] for text, image in zip(texts, images)],
                              tokenizer_bos=tokenizer_bos, max_tokens=max_tokens)
        return self.batch(texts, [[image] for image in images])

    def predict_actions(self, observation: Observation, *, rng: jax.Array | None, options: InferenceOptions) -> np.ndarray:
        """`interface.Model`: up to `options.max_decoding_steps` action tokens (sampled at `options.temperature`, from
        `rng` folded with each row's `sample_index`) -> normalized actions `[b, 1, dims]` in [-1, 1]
        (`options.action_dim` dims, default 7), read as `output_ids[-(dims + 1):-1]`; NaN rows where the decode ended
        before `dims` ids (invalid predictions)."""
        dims = ACTION_DIM if options.action_dim is None else options.action_dim
        generated = self.generate(self._observation_batch(observation, for_actions=True), rng=rng,
                                  max_decoding_steps=options.max_decoding_steps, temperature=options.temperature,
                                  sample_index=observation.get("sample_index"))
        return self.decoded_actions(generated, dims)[:, None, :]

    def sample_tokens(self, observation: Observation, *, rng: jax.Array | None = None, max_decoding_steps: int = 32,
                      temperature: float = 0.0, openpi_exact: bool = True, logits_vocab_size: int | None = None) -> jax.Array:
        """`interface.Model`: the answer to `<image>\\n{prompt}`, int32 `[b, max_decoding_steps]`, 0 after EOS
        (`openpi_exact` is PaliGemma's decode window; Magma decodes as HF's `generate`). `logits_vocab_size` is for
        families reading PaliGemma's tokenizer: Magma's bundled one has none, so it is refused."""
        if logits_vocab_size is not None:
            raise ValueError(f"Magma decodes over its own vocabulary; logits_vocab_size={logits_vocab_size} does not apply")
        generated = self.generate(self._observation_batch(observation, for_actions=False),
                                  max_decoding_steps=max_decoding_steps, rng=rng, temperature=temperature,
                                  sample_index=observation.get("sample_index"))
        return np.where(self._after_stop(generated), 0, generated)  # a <pad> the model emits stays (decode skips it)

    def score_options(self, observation: Observation, option_tokens: Any, option_mask: Any) -> jax.Array:
        """`interface.Model`: log-likelihood float32 `[b, K]` of K candidate answers (`option_tokens` int32
        `[b, K, m]`, no BOS, right-padded; `option_mask` bool) after the question `<image>\\n{prompt}`."""
        batch = self._observation_batch(observation, for_actions=False)
        option_tokens, option_mask = causal_lm.check_options(option_tokens, option_mask, len(batch.tokens))
        scores = causal_lm.compiled_pass(_score_options_fn, Magma(self.config), self.mesh)(
            self.params, *self._placed(batch, option_tokens, option_mask))
        return scores[: len(batch.tokens)]

    def activations(self, observation: Observation, *, rng: jax.Array | None = None,
                    num_steps: int | None = None) -> tuple[np.ndarray, dict[str, jax.Array]]:
        """`interface.Model` (probing): (the greedy normalized actions `predict_actions` gives, the residual streams
        `{"prefix_last", "prefix_mean": [b, depth, width]}` of its action prompt's text after the image, float32).
        Magma has no action expert (no `action_mean`); `num_steps` does not apply."""
        del num_steps
        actions = self.predict_actions(observation, rng=rng, options=InferenceOptions(max_decoding_steps=ACTION_DIM + 1))
        batch = self._observation_batch(observation, for_actions=True)
        streams = causal_lm.compiled_pass(_prompt_streams_fn, Magma(self.config), self.mesh)(
            self.params, *self._placed(batch, batch.prompt_mask))
        return actions, {name: value[: len(batch.tokens)] for name, value in streams.items()}

    def checkpoint_action_stats(self, unnorm_key: str | None) -> dict[str, np.ndarray]:
        """`interface.Model`: `action_stats(unnorm_key)` (SimplerEnv's "bridge_orig" / "google_robot")."""
        return self.action_stats(unnorm_key)

    def action_prompts(self, prompt_tokenizer: Any, *, normalize_state: bool, source: str) -> None:
        """`interface.Model`: Magma reads no state; it formats its own prompts (`action_prompt`, `prompt`)."""
        return None

    # -- benchmarks --------------------------------------------------------------------------------

    def _random_batch(self, batch: int) -> tuple[jax.Array, ...]:
        """Random crops (one `crop_size` crop per row: a SimplerEnv frame's 1x1 grid) and `BENCHMARK_PROMPT_TOKENS`
        random text ids with one `<image>` after the two BOS, merged as `batch` merges them, placed."""
        rng = np.random.default_rng(0)
        image_id, size = self.config.image_token_id, self.config.crop_size
        rows = [[*rng.integers(0, image_id, 2), image_id, *rng.integers(0, image_id, BENCHMARK_PROMPT_TOKENS - 3)]
                for _ in range(batch)]
        images = [[(rng.standard_normal((1, size, size, 3)).astype(np.float32), (1, 1))] for _ in range(batch)]
        return self._placed(merge_plan(rows, images, image_id, size // self.config.vision.stride))

    def benchmark_call(self, batch: int, options: InferenceOptions, live_cameras: int) -> BenchmarkCall:
        """`interface.Model`: one action per sample as `predict_actions` makes it (`options.action_dim` greedy tokens,
        7 by default, and the EOS after them), every row decoded to the end; Magma reads one camera."""
        steps = (options.action_dim or ACTION_DIM) + 1
        settings = decoding.DecodeSettings(steps, per_row_stopping=False, openpi_exact=False)
        args = (self.params, *self._random_batch(batch), sharding.place_batch(np.arange(batch), np.int32, mesh=self.mesh),
                jax.random.key(0), decoding.Sampling.create(stop_token_ids=()))
        return BenchmarkCall("magma", causal_lm.compiled_decoder(_generate_fn, Magma(self.config), settings, self.mesh),
                             args, {}, loop_trips=steps - 1, counts_tokens=True)

    def parity_output(self, batch: int, options: InferenceOptions, live_cameras: int) -> jax.Array:
        """`interface.Model`: the pooled residual streams of the prompt pass (the ConvNeXt, the projector, the Llama)."""
        crops, tokens, gather, mask = self._random_batch(batch)
        prompt_mask = sharding.place_batch(np.asarray(mask), bool, mesh=self.mesh)
        return causal_lm.compiled_pass(_prompt_streams_fn, Magma(self.config), self.mesh)(
            self.params, crops, tokens, gather, mask, prompt_mask)["prefix_mean"]


def unnorm_keys(directory: str) -> tuple[str, ...]:
    """`--unnorm_key`'s choices (the registry's preflight question): SimplerEnv's keys, whatever the checkpoint, since
    Magma-8B ships no statistics."""
    del directory
    return tuple(sorted(SIMPLERENV_NORM_STATS))


def build_model(config: MagmaConfig, params: Any, *, mesh: Mesh | None = None) -> MagmaModel:
    """A MagmaModel of parameters alone (no tokenizer or processor: benchmarks)."""
    return MagmaModel(config, params, None, None, False, mesh)


def load(checkpoint: str | pathlib.Path, *, dtype: str = "float32", mesh: Mesh | None = None, **overrides: Any) -> MagmaModel:
    """A Hugging Face Magma directory -> MagmaModel, restored as `dtype` into `mesh`'s shardings."""
    from multinet_jax.models import magma_checkpoint
    from multinet_jax.models.llama_checkpoint import CONFIG_FILE, read_json
    from multinet_jax.weights import safetensors

    if overrides:
        raise ValueError(f"{checkpoint}: Magma takes no config overrides (its config.json fixes them), got {sorted(overrides)}")
    directory = pathlib.Path(checkpoint)
    specs = safetensors.read_tensor_specs(directory)
    config = magma_checkpoint.read_config(directory, {name: spec.shape for name, spec in specs.items()}, dtype)
    raw = read_json(directory / CONFIG_FILE)
    # The small files first: a bad one fails before any tensor is read.
    generation, filters = llama_checkpoint.read_generation_config(directory)
    eos = (raw if generation is None else generation).get("eos_token_id")
    tokenizer = magma_checkpoint.check_tokenizer(MagmaTokenizer(directory, [eos] if isinstance(eos, int) else eos),
                                                 config, raw, directory / CONFIG_FILE)
    image_processor = ImageProcessor.from_pretrained(directory)
    mesh = sharding.make_mesh() if mesh is None else mesh
    expected = param_shapes(config)
    sources = magma_checkpoint.tensor_sources(config, magma_checkpoint.layer_scale_name(specs))
    params = safetensors.restore(directory, sources, expected, sharding.param_shardings(expected, mesh), dtype=dtype,
                                 unused=magma_checkpoint.unused_tensors)
    return MagmaModel(config, params, tokenizer, image_processor, bool(raw.get("mm_use_image_start_end", False)), mesh,
                      sampling_filters=filters)
