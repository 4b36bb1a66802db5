"""all-MiniLM-L6-v2 sentence embeddings in Flax: the similarity model behind MultiNet's text metrics.

MultiNet scores SQA3D, RoboVQA and BFCL similarity with sentence-transformers' all-MiniLM-L6-v2:
BERT (6 layers, width 384, 12 heads), mean pooling over the attention mask, L2 normalization.
This reads the same local model directory (`model.safetensors`, `tokenizer.json`, `config.json`,
`sentence_bert_config.json`) and embeds in jitted batches of fixed shapes: texts are sorted by
length and padded to a few bucket lengths, so it compiles once per bucket, not per batch.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from safetensors.numpy import load_file

from multinet_jax.weights import trees

BATCH_SIZE = 32
BUCKET_LENGTHS = (16, 32, 64, 128, 256, 512)
NORMALIZE_EPSILON = 1e-12  # torch.nn.functional.normalize's default eps


class _Attention(nn.Module):
    num_heads: int

    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array) -> jax.Array:
        batch, length, width = hidden.shape
        head_dim = width // self.num_heads

        def heads(name: str) -> jax.Array:
            return nn.Dense(width, name=name)(hidden).reshape(batch, length, self.num_heads, head_dim)

        query, key, value = heads("query"), heads("key"), heads("value")
        scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) / np.sqrt(head_dim).astype(np.float32) + bias
        context = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), value)
        return nn.Dense(width, name="output")(context.reshape(batch, length, width))


class _Layer(nn.Module):
    num_heads: int
    intermediate_size: int
    epsilon: float

    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array) -> jax.Array:
        attended = _Attention(self.num_heads, name="attention")(hidden, bias)
        hidden = nn.LayerNorm(epsilon=self.epsilon, name="attention_norm")(hidden + attended)
        # BERT's "gelu" is the exact erf form, not the tanh approximation.
        expanded = nn.gelu(nn.Dense(self.intermediate_size, name="intermediate")(hidden), approximate=False)
        projected = nn.Dense(hidden.shape[-1], name="output")(expanded)
        return nn.LayerNorm(epsilon=self.epsilon, name="output_norm")(hidden + projected)


class MiniLM(nn.Module):
    """BERT encoder + masked mean pooling + L2 normalization -> unit-length sentence embeddings."""

    vocab_size: int
    max_positions: int
    type_vocab_size: int
    width: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    epsilon: float

    @nn.compact
    def __call__(self, token_ids: jax.Array, mask: jax.Array) -> jax.Array:
        positions = jnp.arange(token_ids.shape[1])[None, :]
        hidden = (
            nn.Embed(self.vocab_size, self.width, name="word_embeddings")(token_ids)
            + nn.Embed(self.max_positions, self.width, name="position_embeddings")(positions)
            + nn.Embed(self.type_vocab_size, self.width, name="token_type_embeddings")(jnp.zeros_like(token_ids))
        )
        hidden = nn.LayerNorm(epsilon=self.epsilon, name="embeddings_norm")(hidden)
        bias = jnp.where(mask, 0.0, jnp.finfo(jnp.float32).min)[:, None, None, :]
        for index in range(self.num_layers):
            hidden = _Layer(self.num_heads, self.intermediate_size, self.epsilon, name=f"layer_{index}")(hidden, bias)
        weights = mask.astype(hidden.dtype)[..., None]
        pooled = jnp.sum(hidden * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)
        norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
        return pooled / jnp.maximum(norm, NORMALIZE_EPSILON)


def _dense(weights: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    # torch Linear stores [out, in]; Flax Dense wants [in, out].
    return {"kernel": weights[f"{prefix}.weight"].T, "bias": weights[f"{prefix}.bias"]}


def _norm(weights: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {"scale": weights[f"{prefix}.weight"], "bias": weights[f"{prefix}.bias"]}


def params_from_safetensors(weights: dict[str, np.ndarray], num_layers: int) -> dict[str, Any]:
    """Map Hugging Face BERT parameter names onto `MiniLM`'s Flax tree."""
    weights = {name.removeprefix("bert."): value for name, value in weights.items()}
    params: dict[str, Any] = {
        name: {"embedding": weights[f"embeddings.{name}.weight"]}
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")
    }
    params["embeddings_norm"] = _norm(weights, "embeddings.LayerNorm")
    for index in range(num_layers):
        prefix = f"encoder.layer.{index}"
        params[f"layer_{index}"] = {
            "attention": {
                "query": _dense(weights, f"{prefix}.attention.self.query"),
                "key": _dense(weights, f"{prefix}.attention.self.key"),
                "value": _dense(weights, f"{prefix}.attention.self.value"),
                "output": _dense(weights, f"{prefix}.attention.output.dense"),
            },
            "attention_norm": _norm(weights, f"{prefix}.attention.output.LayerNorm"),
            "intermediate": _dense(weights, f"{prefix}.intermediate.dense"),
            "output": _dense(weights, f"{prefix}.output.dense"),
            "output_norm": _norm(weights, f"{prefix}.output.LayerNorm"),
        }
    return params


# What this class computes, and so what a directory must declare: a BERT encoder, then mean pooling (then, optionally,
# L2 normalization: the similarity is a cosine either way). sentence-transformers reads these from the directory.
_POOLING_FILE = pathlib.Path("1_Pooling") / "config.json"
_MODULES = ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize")


def _check_sentence_model(model_dir: pathlib.Path, config: dict[str, Any]) -> None:
    """Refuses a model directory that declares another encoder, pooling or module chain than the one implemented
    here (all-MiniLM-L6-v2's): its similarities would be computed, wrongly, as if it were MiniLM's."""
    if config.get("model_type") != "bert":
        raise ValueError(f"{model_dir / 'config.json'}: model_type {config.get('model_type')!r}: only BERT encoders "
                         "(all-MiniLM-L6-v2's) are implemented")
    pooling_file = model_dir / _POOLING_FILE
    if pooling_file.is_file():
        pooling = json.loads(pooling_file.read_text())
        modes = sorted(key for key, value in pooling.items() if key.startswith("pooling_mode_") and value)
        if modes != ["pooling_mode_mean_tokens"]:
            raise ValueError(f"{pooling_file}: pooling {modes}: only mean pooling (all-MiniLM-L6-v2's) is implemented")
    modules_file = model_dir / "modules.json"
    if modules_file.is_file():
        chain = [module.get("type") for module in json.loads(modules_file.read_text())]
        if chain not in (list(_MODULES[:2]), list(_MODULES)):
            raise ValueError(f"{modules_file}: modules {chain}: only {' -> '.join(_MODULES)} (all-MiniLM-L6-v2's, "
                             "the normalization optional) is implemented")


class SentenceEmbedder:
    """`SentenceEmbedder(model_dir).embed(texts)` -> float32 [len(texts), 384] unit vectors."""

    def __init__(self, model_dir: str | pathlib.Path):
        model_dir = pathlib.Path(model_dir)
        required = ("config.json", "model.safetensors", "tokenizer.json")
        missing = [name for name in required if not (model_dir / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{model_dir} is not a sentence-transformers model directory: missing {', '.join(missing)} "
                "(expected all-MiniLM-L6-v2 in the Hugging Face layout)"
            )
        config = json.loads((model_dir / "config.json").read_text())
        _check_sentence_model(model_dir, config)
        self.max_length = self._max_length(model_dir, config)
        self.model = MiniLM(
            vocab_size=config["vocab_size"],
            max_positions=config["max_position_embeddings"],
            type_vocab_size=config["type_vocab_size"],
            width=config["hidden_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=config["num_attention_heads"],
            intermediate_size=config["intermediate_size"],
            epsilon=config["layer_norm_eps"],
        )
        weights_file = model_dir / "model.safetensors"
        weights = load_file(str(weights_file))
        # A NaN weight would make every similarity NaN, scored as a number; a missing tensor, a bare KeyError.
        trees.check_finite(weights_file, weights)
        try:
            params = params_from_safetensors(weights, config["num_hidden_layers"])
        except KeyError as error:
            raise trees.CheckpointError(f"{weights_file}: missing tensor {error} (not all-MiniLM-L6-v2's BERT layout?)") from None
        self.params = jax.tree.map(lambda array: jnp.asarray(array, jnp.float32), params)
        self.tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self._forward = jax.jit(lambda params, ids, mask: self.model.apply({"params": params}, ids, mask))

    @staticmethod
    def _max_length(model_dir: pathlib.Path, config: dict[str, Any]) -> int:
        """sentence-transformers truncates at `max_seq_length` (256 for all-MiniLM-L6-v2)."""
        settings = model_dir / "sentence_bert_config.json"
        limit = json.loads(settings.read_text())["max_seq_length"] if settings.is_file() else config["max_position_embeddings"]
        return min(limit, config["max_position_embeddings"])

    def _bucket(self, length: int) -> int:
        return next((bucket for bucket in BUCKET_LENGTHS if bucket >= length), self.max_length)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings, in the order of `texts`."""
        encodings = self.tokenizer.encode_batch(list(texts))
        lengths = np.array([len(encoding.ids) for encoding in encodings], np.int64)
        embeddings = np.zeros((len(texts), self.model.width), np.float32)
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), BATCH_SIZE):
            indices = order[start : start + BATCH_SIZE]
            width = self._bucket(int(lengths[indices].max()))
            ids = np.zeros((BATCH_SIZE, width), np.int32)
            mask = np.zeros((BATCH_SIZE, width), bool)
            for row, index in enumerate(indices):
                ids[row, : lengths[index]] = encodings[index].ids
                mask[row, : lengths[index]] = True
            embeddings[indices] = np.asarray(self._forward(self.params, ids, mask))[: len(indices)]
        return embeddings

    def similarity(self, texts: Sequence[str], references: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each text with its reference (MultiNet's `util.cos_sim(...).item()`)."""
        embeddings = self.embed(list(texts) + list(references))
        return np.sum(embeddings[: len(texts)] * embeddings[len(texts) :], axis=-1)
