"""A Hugging Face `LlamaForCausalLM` held under `language_model.` (OpenVLA's Llama-2, Magma's Llama-3): its config,
the map from its tensor names to the shared decoder-LM's Flax tree (`models/gemma.py` with Llama switches, under
`llm/`), and its tensor shapes. The families' own checkpoint modules add their vision towers around it.

Config: `text_config` over `transformers.LlamaConfig`'s defaults (what `from_pretrained` does when the file leaves a
field out). Llama rotates split halves as `gemma.apply_rope` does, so only the head layout of q/k/v/o differs from
Gemma's (transposes below); RoPE scaling (Llama-3.1's "llama3" and the others) is not implemented and is refused.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Mapping
from typing import Any

from multinet_jax.models.configs import GemmaConfig
from multinet_jax.weights.safetensors import Source, llama_layer_sources
from multinet_jax.weights.trees import CheckpointError

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
PREFIX = "language_model.model"
LM_HEAD = "language_model.lm_head.weight"
# transformers.LlamaConfig defaults (4.40.1 .. 4.49.0) that config.json may leave out.
LLAMA_DEFAULTS = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                  "num_key_value_heads": None, "head_dim": None, "rms_norm_eps": 1e-6, "rope_theta": 10_000.0,
                  "rope_scaling": None, "hidden_act": "silu", "tie_word_embeddings": False, "attention_bias": False,
                  "mlp_bias": False}


def config_model_type(path: str) -> str | None:
    """`model_type` of a local directory's config.json, or None (no file, a remote path): the families' cheap layout
    test, which reads no tensor. A config.json that is not a JSON object is a CheckpointError naming it (else the
    directory would be reported as no checkpoint at all)."""
    config_path = pathlib.Path(path) / CONFIG_FILE
    if "://" in path or not config_path.is_file():
        return None
    return read_json(config_path).get("model_type")


def read_json(path: pathlib.Path) -> dict[str, Any]:
    """A JSON object from `path`; a one-line CheckpointError naming the file otherwise."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # missing, not UTF-8, not JSON
        raise CheckpointError(f"{path}: unreadable JSON ({type(error).__name__}: {error})")
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return value


def config_integer(path: pathlib.Path, field: str, value: Any, low: int, high: int | None = None) -> int:
    """A config.json integer in [low, high]; anything else (a string, a float, null, out of range) names the field."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise CheckpointError(f"{path}: {field}: expected an integer in [{low}, {'...' if high is None else high}], "
                              f"got {value!r}")
    return value


def _positive_number(path: pathlib.Path, field: str, value: Any) -> float:
    """A config.json number > 0: a negative epsilon or RoPE base gives a model of NaNs (rsqrt of a negative variance,
    a negative power), a string would be read by `float()` silently."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise CheckpointError(f"{path}: {field}: expected a positive number, got {value!r}")
    return float(value)


def parse_text_config(raw: Any, path: pathlib.Path) -> tuple[GemmaConfig, int]:
    """(the decoder's GemmaConfig, embedding rows) from config.json's `text_config` (`path` names the file)."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: text_config: expected a JSON object, got {type(raw).__name__}")
    text = {**LLAMA_DEFAULTS, **raw}
    if "vocab_size" not in raw:
        raise CheckpointError(f"{path}: text_config: missing field 'vocab_size'")
    if text["hidden_act"] != "silu" or text["tie_word_embeddings"]:
        raise CheckpointError(f"{path}: text_config: expected Llama's silu MLP and an untied lm_head")
    if text["rope_scaling"] is not None:
        raise CheckpointError(f"{path}: text_config: rope_scaling {text['rope_scaling']!r} is not supported (plain RoPE only)")
    if text["attention_bias"] or text["mlp_bias"]:
        raise CheckpointError(f"{path}: text_config: attention_bias / mlp_bias are not supported (Llama has none)")
    counts = {field: config_integer(path, f"text_config.{field}", text[field], 1)
              for field in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size")}
    width, heads = counts["hidden_size"], counts["num_attention_heads"]
    optional = {field: config_integer(path, f"text_config.{field}", text[field], 1)
                for field in ("num_key_value_heads", "head_dim") if text[field] is not None}
    try:
        config = GemmaConfig(
            width=width, depth=counts["num_hidden_layers"], mlp_dim=counts["intermediate_size"], num_heads=heads,
            num_kv_heads=optional.get("num_key_value_heads", heads), head_dim=optional.get("head_dim", width // heads),
            norm_offset=False, norm_eps=_positive_number(path, "text_config.rms_norm_eps", text["rms_norm_eps"]),
            activation="silu", scale_embedding=False, tied_embedding=False,
            rope_theta=_positive_number(path, "text_config.rope_theta", text["rope_theta"]),
        )
    except ValueError as error:  # GemmaConfig's own consistency checks
        raise CheckpointError(f"{path}: text_config: {error}") from None
    return config, counts["vocab_size"]


# Hugging Face's `GenerationConfig` default top_k, which `generate(do_sample=True)` applies unless the checkpoint's
# generation_config.json names another (MultiNet's Magma Open-X script passed none: it sampled from the top 50;
# OpenVLA's and Magma's text under --temperature sample so too).
HF_DEFAULT_TOP_K = 50
# generation_config.json fields that never change what `generate` gives under the arguments MultiNet's scripts pass
# (temperature, do_sample, max_new_tokens, and greedy single-beam decoding); any other is refused rather than
# silently not applied, unless it holds Hugging Face's default (`GENERATION_DEFAULTS`).
GENERATION_FIELDS_INERT = frozenset({"_from_model_config", "bos_token_id", "eos_token_id", "pad_token_id",
                                     "transformers_version", "max_length", "max_new_tokens", "use_cache", "do_sample",
                                     "temperature"})
GENERATION_DEFAULTS = {"num_beams": 1, "repetition_penalty": 1.0, "length_penalty": 1.0, "no_repeat_ngram_size": 0,
                       "typical_p": 1.0, "min_length": 0}


def sampling_filters(generation: Mapping[str, Any], path: pathlib.Path) -> tuple[int | None, float]:
    """(top_k, None where off; top_p) as Hugging Face's `generate` applies them when it samples, from the checkpoint's
    generation_config.json (`generation`, read from `path`; HF's defaults 50 and 1.0 where it names none)."""
    unknown = sorted(key for key in set(generation) - GENERATION_FIELDS_INERT - {"top_k", "top_p"}
                     if key not in GENERATION_DEFAULTS or generation[key] != GENERATION_DEFAULTS[key])
    if unknown:
        raise CheckpointError(f"{path}: {unknown[0]}={generation[unknown[0]]!r}: this package reproduces only top_k and "
                              f"top_p of generation_config.json's decoding settings (and {sorted(GENERATION_DEFAULTS)} at "
                              "Hugging Face's defaults)")
    top_k, top_p = generation.get("top_k", HF_DEFAULT_TOP_K), generation.get("top_p", 1.0)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise CheckpointError(f"{path}: top_k: expected a count >= 0 (0: no filter), got {top_k!r}")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise CheckpointError(f"{path}: top_p: expected a number in (0, 1], got {top_p!r}")
    return top_k or None, float(top_p)


def read_generation_config(directory: pathlib.Path) -> tuple[dict[str, Any] | None, tuple[int | None, float]]:
    """(the checkpoint's generation_config.json, None where it has none; its `sampling_filters`, HF's defaults
    where it has none)."""
    path = directory / GENERATION_CONFIG_FILE
    generation = read_json(path) if path.exists() else None
    return generation, sampling_filters(generation or {}, path)


def tensor_sources(config: GemmaConfig) -> dict[str, Source]:
    """Flat Flax path (`llm/...`) -> its `Source` among the `language_model.` tensors."""
    return {
        "llm/embedder/input_embedding": Source(((f"{PREFIX}.embed_tokens.weight",),)),
        "llm/embedder/lm_head": Source(((LM_HEAD,),)),
        "llm/final_norm/scale": Source(((f"{PREFIX}.norm.weight",),)),
        **llama_layer_sources(f"{PREFIX}.layers", "llm/layers", range(config.depth), config.num_heads, config.num_kv_heads),
    }


def layer_shapes(prefix: str, config: GemmaConfig, kv_input: int | None = None) -> dict[str, tuple[int, ...]]:
    """One Llama decoder layer's tensors under `prefix` (name -> shape); `kv_input`: the k/v projections' input
    width when it is not the layer's own (SmolVLA's cross-attention expert layers read the VLM's keys and values)."""
    q_dim, kv_dim = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    kv_input = config.width if kv_input is None else kv_input
    layer = {"self_attn.q_proj.weight": (q_dim, config.width), "self_attn.k_proj.weight": (kv_dim, kv_input),
             "self_attn.v_proj.weight": (kv_dim, kv_input), "self_attn.o_proj.weight": (config.width, q_dim),
             "mlp.gate_proj.weight": (config.mlp_dim, config.width), "mlp.up_proj.weight": (config.mlp_dim, config.width),
             "mlp.down_proj.weight": (config.width, config.mlp_dim), "input_layernorm.weight": (config.width,),
             "post_attention_layernorm.weight": (config.width,)}
    return {f"{prefix}.{name}": shape for name, shape in layer.items()}


def tensor_shapes(config: GemmaConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Every `language_model.` tensor of a checkpoint with `config` (name -> shape), in the file's order."""
    shapes = {f"{PREFIX}.embed_tokens.weight": (vocab_size, config.width)}
    for index in range(config.depth):
        shapes |= layer_shapes(f"{PREFIX}.layers.{index}", config)
    shapes[f"{PREFIX}.norm.weight"] = (config.width,)
    shapes[LM_HEAD] = (vocab_size, config.width)
    return shapes
