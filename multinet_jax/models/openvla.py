"""OpenVLA (openvla/openvla-7b: Prismatic `dinosiglip-vit-so-224px` + `no-align+fused-gelu-mlp` + Llama-2) in Flax,
loaded from its Hugging Face checkpoint, batched and sharded.

    model = multinet_jax.load_model("openvla-7b/", dtype="bfloat16")          # a local HF model directory
    actions = model.predict_action(images, instructions, unnorm_key="bridge_orig")   # float64 [b, 7]

Architecture: DINOv2 ViT-L/14 (4 registers, LayerScale) and SigLIP So400m/14, both the shared `vit.ViT`, each read
at the output of its second-to-last block without the final norm or prefix tokens; their patch features are
concatenated per patch (`[b, 256, 2176]`) and projected by the fused GELU MLP (fc1 -> GELU -> fc2 -> GELU -> fc3)
into the Llama width. The sequence is BOS, the 256 projected patches, then the rest of the prompt (with the empty
token), all causal (as OpenVLA's `predict_action`, whose attention mask is dropped, runs it); the Llama decoder is the
shared `gemma.Gemma` with Llama switches, and decoding is the shared prefix-LM loop (`decoding.generate`) with a
preallocated KV cache, contiguous positions and greedy `action_dim` steps.

Actions: token t maps to bin `clip(V - t - 1, 0, n_bins - 2)` of the centers of `linspace(-1, 1, n_bins)`, where
V = embedding rows - `pad_to_multiple_of` (the last n_bins ids of the unpadded vocabulary); unnormalized with the
checkpoint's `norm_stats[unnorm_key]["action"]`: `mask ? 0.5 (a + 1)(q99 - q01) + q01 : a`, in float64 as OpenVLA.

Batching: prompts of different lengths are right-padded and masked (each row's causal prefix is right-aligned by
the decoder), so a batch gives each row exactly what it gives alone.
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from multinet_jax import sharding
from multinet_jax.models import action_bins, activations, causal_lm, decoding, llama_checkpoint, numerics, openvla_actions
from multinet_jax.models.configs import shapes_once_per_config
from multinet_jax.models.gemma import Gemma
from multinet_jax.models.interface import BenchmarkCall, InferenceOptions, Observation, PromptLengths
from multinet_jax.models.masks import make_attn_mask
from multinet_jax.models.openvla_checkpoint import OpenVLAConfig
from multinet_jax.models.openvla_inputs import ImageProcessor, LlamaPromptTokenizer, action_prompt, pad_batch
from multinet_jax.models.vit import ViT
from multinet_jax.weights.trees import CheckpointError

LLAMA_EOS_ID = 2  # Llama-2's end of sequence, OpenVLA's stop token (what a model built without its tokenizer stops at)
BENCHMARK_PROMPT_TOKENS = 24  # BOS + "In: What action should the robot take to <instruction>?\nOut:" + the empty token


class Projector(nn.Module):
    """Prismatic's `fused-gelu-mlp`: fc1 (vision -> 4 * vision), GELU, fc2 (-> width), GELU, fc3 (erf GELUs)."""

    width: int
    dtype: str

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        dense = functools.partial(nn.Dense, dtype=self.dtype, dot_general=numerics.dot_general)
        x = numerics.gelu(dense(4 * features.shape[-1], name="fc1")(features), approximate=False)
        x = numerics.gelu(dense(self.width, name="fc2")(x), approximate=False)
        return dense(self.width, name="fc3")(x)


class OpenVLA(nn.Module):
    """Parameter tree: `dino/...`, `siglip/...` (ViT), `projector/fc{1,2,3}`, `llm/...` (decoder-LM)."""

    config: OpenVLAConfig

    def setup(self) -> None:
        cfg = self.config
        self.dino = ViT(cfg.dino, None, cfg.dtype)
        self.siglip = ViT(cfg.siglip, None, cfg.dtype)
        self.projector = Projector(cfg.llm.width, cfg.dtype)
        self.llm = Gemma((cfg.llm,), cfg.vocab_size, cfg.dtype)

    def vision_features(self, pixels: jax.Array) -> jax.Array:
        """Fused pixels `[b, H, W, 6]` -> per-patch DINOv2 | SigLIP features `[b, patches, dino + siglip]`."""
        return jnp.concatenate([self.dino(pixels[..., :3]), self.siglip(pixels[..., 3:])], axis=-1)

    def embed_images(self, pixels: jax.Array) -> jax.Array:
        return self.projector(self.vision_features(pixels))

    def embed_tokens(self, tokens: jax.Array) -> jax.Array:
        return self.llm.embed(tokens)

    def embed_prefix(self, pixels: jax.Array, tokens: jax.Array, token_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[BOS, patches, tokens[1:]] embedded `[b, 1 + patches + T - 1, width]` and its validity mask."""
        images = self.embed_images(pixels)
        embedded = self.llm.embed(tokens)
        prefix = jnp.concatenate([embedded[:, :1], images.astype(embedded.dtype), embedded[:, 1:]], axis=1)
        image_mask = jnp.ones(images.shape[:2], bool)
        return prefix, jnp.concatenate([token_mask[:, :1], image_mask, token_mask[:, 1:]], axis=1)

    def forward(self, prefix: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The whole causal sequence without a cache: (logits float32 `[b, n, vocab]`, final-normed hidden states).

        Apply with `mutable=["intermediates"]` to also get every layer's output (`intermediates/llm/layers/residual`,
        read by `models.activations`).
        """
        attn_mask = make_attn_mask(mask, jnp.ones(mask.shape, bool))
        positions = jnp.cumsum(mask, axis=1) - 1
        (hidden,), _ = self.llm([prefix], positions, attn_mask)
        return self.llm.logits(hidden), hidden

    def init_all(self) -> None:
        """Touch every parameter (for `init` / `eval_shape`)."""
        size = self.config.dino.image_size
        prefix, mask = self.embed_prefix(jnp.zeros((1, size, size, 6)), jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2), bool))
        self.forward(prefix, mask)


@shapes_once_per_config
def param_shapes(config: OpenVLAConfig) -> dict[str, Any]:
    """The parameter tree of `config` as ShapeDtypeStructs in the config's dtype (no memory: `jax.eval_shape`)."""
    variables = jax.eval_shape(lambda: OpenVLA(config).init(jax.random.key(0), method=OpenVLA.init_all))
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, jnp.dtype(config.dtype)), variables["params"])


def _generate_fn(module: OpenVLA, settings: decoding.DecodeSettings, params: Any, pixels: jax.Array, tokens: jax.Array,
                 token_mask: jax.Array, sample_index: jax.Array, rng: jax.Array, sampling: decoding.Sampling):
    variables = {"params": params}
    prefix, mask = module.apply(variables, pixels, tokens, token_mask, method=OpenVLA.embed_prefix)
    causal = jnp.ones(mask.shape, bool)
    return decoding.generate(module, variables, prefix, mask, causal, sample_index, rng, settings, sampling)


def _score_options_fn(module: OpenVLA, params: Any, pixels: jax.Array, tokens: jax.Array, token_mask: jax.Array,
                      option_tokens: jax.Array, option_mask: jax.Array) -> jax.Array:
    """Log-likelihood `[b, K]` of each option's tokens `[b, K, m]` after the prompt (`causal_lm.score_continuations`)."""
    variables = {"params": params}
    prefix, mask = module.apply(variables, pixels, tokens, token_mask, method=OpenVLA.embed_prefix)
    return causal_lm.score_continuations(module, variables, prefix, mask, option_tokens, option_mask)


def _prompt_streams_fn(module: OpenVLA, params: Any, pixels: jax.Array, tokens: jax.Array,
                       token_mask: jax.Array) -> dict[str, jax.Array]:
    """`prefix_last` / `prefix_mean` `[b, depth, width]` of the prompt's tokens after the image (BOS comes before it)
    from one causal pass over the prompt (`models.activations.pool_prompt`)."""
    variables = {"params": params}
    prefix, mask = module.apply(variables, pixels, tokens, token_mask, method=OpenVLA.embed_prefix)
    _, (residual,) = activations.apply_capturing(module, variables, prefix, mask, method=OpenVLA.forward)
    return activations.pool_prompt(residual, token_mask[:, 1:])


def compiled_prompt_fn(name: str, config: OpenVLAConfig, mesh: Mesh):
    """The jitted `score_options` ("score_options") or activations ("streams") pass for one config."""
    function = {"score_options": _score_options_fn, "streams": _prompt_streams_fn}[name]
    return causal_lm.compiled_pass(function, OpenVLA(config), mesh)


def compiled_generate(config: OpenVLAConfig, settings: decoding.DecodeSettings, mesh: Mesh):
    """The jitted OpenVLA sampler for one config and setting (traced once per input shape)."""
    return causal_lm.compiled_decoder(_generate_fn, OpenVLA(config), settings, mesh)


class OpenVLAModel:
    """An OpenVLA ready to act (an `interface.Model` of family "openvla"): `.predict_action` (OpenVLA's API,
    batched), `.predict_actions` / `.sample_tokens` (the evaluator's), `.config`, `.params`, `.norm_stats`."""

    family = "openvla"
    num_flow_steps = None  # token-decoded actions, or none
    multinet_actions = openvla_actions.MultiNetActions()

    def __init__(self, config: OpenVLAConfig, params: Any, norm_stats: Mapping[str, Any] | None,
                 tokenizer: LlamaPromptTokenizer | None, image_processor: ImageProcessor | None, mesh: Mesh | None = None,
                 sampling_filters: tuple[int | None, float] = (llama_checkpoint.HF_DEFAULT_TOP_K, 1.0)):
        """`tokenizer` and `image_processor` None: a model of parameters alone (`build_model`, for benchmarks), which
        takes no texts or images. `sampling_filters`: the (top_k, top_p) sampling keeps to, as HF's `generate` (from
        generation_config.json: `llama_checkpoint.sampling_filters`)."""
        self.config = config
        self.sampling_filters = sampling_filters
        self.norm_stats = dict(norm_stats or {})
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.mesh = sharding.make_mesh() if mesh is None else mesh
        self.params = jax.device_put(params, sharding.param_shardings(params, self.mesh))

    # -- inputs ------------------------------------------------------------------------------------

    def pixels(self, images: Sequence[np.ndarray], center_crop: bool = False) -> np.ndarray:
        """uint8 images of any size -> fused float32 pixels `[b, H, W, 6]` (OpenVLA's processor, after OpenVLA's
        evaluation-time center crop when `center_crop`; `openvla_inputs`)."""
        return np.stack([self.image_processor(image, center_crop) for image in images])

    def action_tokens(self, instructions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """OpenVLA's action prompts tokenized with the empty token appended: (ids, mask), right-padded."""
        return pad_batch([self.tokenizer.encode_for_actions(action_prompt(text)) for text in instructions])

    # -- decoding ----------------------------------------------------------------------------------

    def generate(self, pixels: np.ndarray, tokens: np.ndarray, token_mask: np.ndarray, *, max_decoding_steps: int,
                 rng: jax.Array | None = None, temperature: float = 0.0, sample_index: np.ndarray | None = None) -> np.ndarray:
        """Token ids int32 `[b, max_decoding_steps]`; after a row's EOS, the pad id (as HF `generate` pads)."""
        batch = len(tokens)
        sample_index = np.arange(batch) if sample_index is None else sample_index
        settings = decoding.DecodeSettings(max_decoding_steps, per_row_stopping=True, openpi_exact=False)  # HF: contiguous positions
        top_k, top_p = self.sampling_filters
        sampling = decoding.Sampling.create(temperature, top_k=top_k, top_p=top_p, stop_token_ids=(self.tokenizer.eos_id,))
        generated, _ = compiled_generate(self.config, settings, self.mesh)(
            self.params, *self._placed_inputs(pixels, tokens, token_mask),
            sharding.place_batch(sample_index, np.int32, mesh=self.mesh), jax.random.key(0) if rng is None else rng, sampling)
        generated = np.asarray(generated)[:batch]
        after_stop = np.cumsum(generated == self.tokenizer.eos_id, axis=1) - (generated == self.tokenizer.eos_id) > 0
        return np.where(after_stop, self.tokenizer.pad_id, generated)

    def normalized_actions(self, token_ids: np.ndarray) -> np.ndarray:
        """Action token ids -> bin centers in [-1, 1] (float64, as OpenVLA's numpy decoding)."""
        return action_bins.normalized_actions(token_ids, self.config.unpadded_vocab_size, self.config.n_action_bins)

    def action_stats(self, unnorm_key: str | None) -> dict[str, np.ndarray]:
        """`norm_stats[unnorm_key]["action"]` as arrays (q01, q99, mask); the only key when `unnorm_key` is None."""
        return action_bins.select_stats(self.norm_stats, unnorm_key, "the checkpoint's")

    @property
    def action_dim(self) -> int:
        """Tokens per action: the dimension every norm-stats entry shares (7 for openvla-7b)."""
        dims = {len(entry["action"]["q01"]) for entry in self.norm_stats.values()}
        if len(dims) != 1:
            raise ValueError(f"this OpenVLA's norm stats have action dims {sorted(dims)}: pass unnorm_key")
        return dims.pop()

    # -- the APIs ----------------------------------------------------------------------------------

    def predict_action(self, images: Sequence[np.ndarray] | np.ndarray, instructions: Sequence[str],
                       unnorm_key: str | None = None, center_crop: bool = False) -> np.ndarray:
        """OpenVLA's `predict_action` for a batch: `images`, b uint8 `[H, W, 3]` images of any size (a sequence, or
        one stacked `[b, H, W, 3]` array), and b instructions -> unnormalized actions float64 `[b, action_dim]`, each
        row what the sample gives alone (greedy).
        `center_crop`: OpenVLA's evaluation scripts' crop (`get_vla_action(center_crop=True)`) first."""
        if getattr(images, "ndim", 4) != 4:  # one array: its rows are the images (a [H, W, 3] one would split by rows)
            raise ValueError(f"predict_action's images: one uint8 [b, H, W, 3] array or a sequence of b [H, W, 3] "
                             f"arrays, got an array of shape {tuple(images.shape)}")
        if len(images) != len(instructions) or len(images) == 0:
            raise ValueError(f"predict_action needs as many images as instructions (>= 1), got {len(images)} and {len(instructions)}")
        stats = self.action_stats(unnorm_key)
        tokens, mask = self.action_tokens(instructions)
        generated = self.generate(self.pixels(images, center_crop), tokens, mask, max_decoding_steps=len(stats["q01"]))
        return action_bins.unnormalize(self.normalized_actions(generated), stats)

    def _observation_inputs(self, observation: Observation, for_actions: bool,
                            center_crop: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The evaluator's batch -> (pixels, tokens, mask): its first camera's image (uint8, or the pipeline's [-1, 1]
        float32) and its `prompt` texts."""
        cameras = [key for key in observation if key.startswith("image/")]
        if not cameras or "prompt" not in observation:
            raise KeyError(f"OpenVLA reads `image/<camera>` (uint8) and `prompt`; the observation has {sorted(observation)}")
        tokens, mask = pad_batch(self._prompt_rows(observation, for_actions))
        images = [np.asarray(image) for image in observation[cameras[0]]]  # one array, or rows of different sizes
        # [-1, 1] floats: back to the uint8 values they came from, exactly
        images = [image if image.dtype == np.uint8 else np.rint((image.astype(np.float32) + 1) * 127.5).astype(np.uint8)
                  for image in images]
        return self.pixels(images, center_crop), tokens, mask

    def _prompt_rows(self, observation: Observation, for_actions: bool) -> list[list[int]]:
        """Each row's prompt ids: the action prompt with the empty token, or OpenVLA's `In: ...\nOut:` question."""
        prompts = [str(prompt) for prompt in observation["prompt"]]
        return [self.tokenizer.encode_for_actions(action_prompt(p)) if for_actions else self.tokenizer.encode(f"In: {p}\nOut:")
                for p in prompts]

    def prompt_lengths(self, observation: Observation, *, for_actions: bool) -> PromptLengths:
        """`interface.Model`: OpenVLA's prompts are never cut (padded to a multiple of 16)."""
        return PromptLengths(np.array([len(row) for row in self._prompt_rows(observation, for_actions)]), None)

    def _placed_inputs(self, pixels: np.ndarray, tokens: np.ndarray, mask: np.ndarray) -> tuple[jax.Array, ...]:
        place = functools.partial(sharding.place_batch, mesh=self.mesh)
        return place(pixels, np.float32), place(tokens, np.int32), place(mask, bool)

    def score_options(self, observation: Observation, option_tokens: Any, option_mask: Any) -> jax.Array:
        """`interface.Model`: log-likelihood float32 `[b, K]` of K candidate answers (`option_tokens` int32
        `[b, K, m]`, no BOS, right-padded; `option_mask` bool) after the text prompt `In: {prompt}\nOut:`."""
        pixels, tokens, mask = self._observation_inputs(observation, for_actions=False)
        option_tokens, option_mask = causal_lm.check_options(option_tokens, option_mask, len(tokens))
        place = functools.partial(sharding.place_batch, mesh=self.mesh)
        scores = compiled_prompt_fn("score_options", self.config, self.mesh)(
            self.params, *self._placed_inputs(pixels, tokens, mask), place(option_tokens, np.int32), place(option_mask, bool))
        return scores[: len(tokens)]

    def activations(self, observation: Observation, *, rng: jax.Array | None = None,
                    num_steps: int | None = None) -> tuple[np.ndarray, dict[str, jax.Array]]:
        """`interface.Model` (probing): (the greedy normalized actions `predict_actions` gives, the residual streams
        `{"prefix_last", "prefix_mean": [b, depth, width]}` of its action prompt after the image, float32). OpenVLA
        has no action expert, so there is no `action_mean`; `num_steps` (flow steps) does not apply."""
        del num_steps
        actions = self.predict_actions(observation, rng=rng, options=InferenceOptions())
        pixels, tokens, mask = self._observation_inputs(observation, for_actions=True)
        streams = compiled_prompt_fn("streams", self.config, self.mesh)(self.params, *self._placed_inputs(pixels, tokens, mask))
        return actions, {name: value[: len(tokens)] for name, value in streams.items()}

    def predict_actions(self, observation: Observation, *, rng: jax.Array | None, options: InferenceOptions) -> np.ndarray:
        """`interface.Model`: greedy action tokens -> normalized actions `[b, 1, dims]` in [-1, 1]: `options.action_dim`
        tokens (MultiNet decoded as many as the dataset's statistics have dims; default the norm stats' dim), read
        as MultiNet read them (`openvla_actions.multinet_window`: a decode ending early reads prompt ids), the image
        center-cropped first when `options.center_crop`."""
        pixels, tokens, mask = self._observation_inputs(observation, for_actions=True, center_crop=options.center_crop)
        dims = self.action_dim if options.action_dim is None else options.action_dim
        generated = self.generate(pixels, tokens, mask, max_decoding_steps=dims,
                                  sample_index=observation.get("sample_index"))
        window = openvla_actions.multinet_window(tokens, mask, generated, dims, self.tokenizer.eos_id)
        return self.normalized_actions(window)[:, None, :]

    def sample_tokens(self, observation: Observation, *, rng: jax.Array | None = None, max_decoding_steps: int = 32,
                      temperature: float = 0.0, openpi_exact: bool = True, logits_vocab_size: int | None = None) -> jax.Array:
        """`interface.Model`: text after `In: {prompt}\\nOut:`, int32 `[b, max_decoding_steps]`, 0 after EOS.

        `openpi_exact` is openpi's decode window for PaliGemma families; OpenVLA always decodes as HF's `generate`
        (contiguous positions, valid keys only), so it does not apply. Its logits are over its own vocabulary:
        `logits_vocab_size` (MultiNet's padding of PaliGemma's) is refused."""
        if logits_vocab_size is not None:
            raise ValueError("logits_vocab_size pads PaliGemma's vocabulary; OpenVLA decodes over its own")
        pixels, tokens, mask = self._observation_inputs(observation, for_actions=False)
        generated = self.generate(pixels, tokens, mask, max_decoding_steps=max_decoding_steps, rng=rng,
                                  temperature=temperature, sample_index=observation.get("sample_index"))
        return np.where(generated == self.tokenizer.pad_id, 0, generated)

    def checkpoint_action_stats(self, unnorm_key: str | None) -> dict[str, np.ndarray]:
        """`interface.Model`: `action_stats(unnorm_key)`."""
        return self.action_stats(unnorm_key)

    def action_prompts(self, prompt_tokenizer: Any, *, normalize_state: bool, source: str) -> None:
        """`interface.Model`: OpenVLA reads no state; it formats its own prompts (`action_prompt`)."""
        return None

    # -- benchmarks --------------------------------------------------------------------------------

    def _random_prompt(self, batch: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Random fused pixels and a random `BENCHMARK_PROMPT_TOKENS`-token prompt padded as `pad_batch` pads, placed."""
        rng = np.random.default_rng(0)
        size, length = self.config.dino.image_size, -(-BENCHMARK_PROMPT_TOKENS // 16) * 16
        return self._placed_inputs(rng.standard_normal((batch, size, size, 6)),
                                   rng.integers(3, self.config.unpadded_vocab_size, (batch, length)),
                                   np.arange(length)[None, :].repeat(batch, 0) < BENCHMARK_PROMPT_TOKENS)

    def benchmark_call(self, batch: int, options: InferenceOptions, live_cameras: int) -> BenchmarkCall:
        """`interface.Model`: one action per sample as `predict_action` makes it (random fused pixels, a padded
        prompt, `options.action_dim` greedy tokens, openvla-7b's 7 by default); OpenVLA reads one camera."""
        dims = options.action_dim or openvla_actions.OPENVLA_ACTION_DIM
        args = (self.params, *self._random_prompt(batch), sharding.place_batch(np.arange(batch), np.int32, mesh=self.mesh),
                jax.random.key(0), decoding.Sampling.create(stop_token_ids=(LLAMA_EOS_ID,)))
        settings = decoding.DecodeSettings(dims, per_row_stopping=False, openpi_exact=False)
        return BenchmarkCall("openvla", compiled_generate(self.config, settings, self.mesh), args, {},
                             loop_trips=dims - 1, counts_tokens=True)

    def parity_output(self, batch: int, options: InferenceOptions, live_cameras: int) -> jax.Array:
        """`interface.Model`: the pooled residual streams of the prompt pass (both ViTs, the projector, the Llama)."""
        return compiled_prompt_fn("streams", self.config, self.mesh)(self.params, *self._random_prompt(batch))



def build_model(config: OpenVLAConfig, params: Any, *, mesh: Mesh | None = None) -> OpenVLAModel:
    """An OpenVLAModel of parameters alone (no tokenizer, processor or statistics: benchmarks)."""
    return OpenVLAModel(config, params, None, None, None, mesh)


def _check_tokenizer(tokenizer: LlamaPromptTokenizer, config: OpenVLAConfig, config_path: pathlib.Path) -> None:
    """The bundled tokenizer.model must be the embedding's: its pieces fill exactly the rows before the padding
    (`pad_to_multiple_of`), whose last `n_action_bins` ids are the action bins; another tokenizer's ids would reach
    past the embedding (clamped silently) or into the bins."""
    pieces = tokenizer.processor.vocab_size()
    if pieces != config.unpadded_vocab_size:
        raise CheckpointError(
            f"{tokenizer.path}: {pieces} pieces, but {config_path} gives {config.unpadded_vocab_size} "
            f"(text_config.vocab_size {config.vocab_size} less pad_to_multiple_of {config.pad_to_multiple_of}); "
            "the tokenizer is not this checkpoint's")


def load(checkpoint: str | pathlib.Path, *, dtype: str = "float32", mesh: Mesh | None = None, **overrides: Any) -> OpenVLAModel:
    """A Hugging Face OpenVLA directory -> OpenVLAModel, restored as `dtype` into `mesh`'s shardings."""
    from multinet_jax.models import openvla_checkpoint
    from multinet_jax.weights import safetensors, trees

    if overrides:
        raise ValueError(f"{checkpoint}: OpenVLA takes no config overrides (its config.json fixes them), got {sorted(overrides)}")
    directory = pathlib.Path(checkpoint)
    config_path = directory / openvla_checkpoint.CONFIG_FILE
    config = openvla_checkpoint.read_config(directory, dtype)
    raw = openvla_checkpoint.read_json(config_path)
    trees.check_norm_stats(config_path, raw.get("norm_stats"))
    # Every entry, not only the one a run picks: the action dimension is read across all of them (`action_dim`).
    for key in raw.get("norm_stats") or {}:
        problem = openvla_checkpoint.action_stats_error(config_path, raw["norm_stats"], key)
        if problem is not None:
            raise trees.CheckpointError(problem)
    # The small files first: a bad one fails before any tensor is read.
    tokenizer = LlamaPromptTokenizer(directory / "tokenizer.model", pad_id=openvla_checkpoint.pad_token_id(raw, config, config_path))
    _check_tokenizer(tokenizer, config, config_path)
    _, filters = llama_checkpoint.read_generation_config(directory)
    image_processor = ImageProcessor.from_pretrained(directory)
    mesh = sharding.make_mesh() if mesh is None else mesh
    expected = param_shapes(config)
    params = safetensors.restore(
        directory, openvla_checkpoint.tensor_sources(config), expected, sharding.param_shardings(expected, mesh),
        dtype=dtype, unused=functools.partial(openvla_checkpoint.unused_tensors, config),
    )
    return OpenVLAModel(config, params, raw.get("norm_stats"), tokenizer, image_processor, mesh, sampling_filters=filters)
