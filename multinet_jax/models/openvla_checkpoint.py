"""OpenVLA's Hugging Face checkpoint: its config, its layout test, and the map from its tensor names to the Flax tree.

A checkpoint directory (openvla/openvla-7b's layout) holds `config.json` (`model_type: "openvla"`, Llama
`text_config`, timm backbone ids, `norm_stats`), `model.safetensors` or sharded safetensors + index,
`tokenizer.model` (Llama SentencePiece), `preprocessor_config.json`, and Python files that are never read.

Sizes: the Llama sizes are `text_config` over `transformers.LlamaConfig`'s defaults (what `from_pretrained` does; the
real config lists only the vocabulary); the two ViTs follow their timm ids (`TIMM_VITS`), with the fixture's
`tiny_timm_overrides` (embed_dim, depth, num_heads) merged in as timm's `create_model` kwargs would be.

Prismatic reads each ViT at the output of its second-to-last block, so the Flax ViTs hold depth - 1 blocks and no
final norm; the checkpoint's last block, final norms and SigLIP's attention-pool head are read by nobody, and
`unused_tensors` names them so that the layout check still accounts for every tensor.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from multinet_jax.models import action_bins, llama_checkpoint
from multinet_jax.models.configs import GemmaConfig, ViTConfig
from multinet_jax.models.llama_checkpoint import CONFIG_FILE, config_integer, read_json
from multinet_jax.tokenizers import sentencepiece_training
from multinet_jax.weights import safetensors
from multinet_jax.weights.safetensors import Source, heads_in, heads_out, transposed
from multinet_jax.weights.trees import CheckpointError

# timm id -> (width, depth, heads, mlp ratio, class token, registers, LayerScale) of the ViTs OpenVLA fuses.
TIMM_VITS = {
    "vit_large_patch14_reg4_dinov2.lvd142m": (1024, 24, 16, 4.0, True, 4, True),
    "vit_so400m_patch14_siglip_224": (1152, 27, 16, 3.7362, False, 0, False),
}
_TIMM_IDS = ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]
_OPENVLA_LAYOUT = {
    "model_type": "openvla", "arch_specifier": "no-align+fused-gelu-mlp", "use_fused_vision_backbone": True,
    "timm_model_ids": _TIMM_IDS, "image_sizes": [224, 224], "pad_to_multiple_of": 64, "n_action_bins": 256,
}
TINY_VOCAB_SIZE = 1024  # the tiny config's vocabulary (its embedding has 64 padding rows more)
# config.json fields that shape the network: openvla/openvla-7b's, and a tiny one with `../shared/openvla_reference`'s
# sizes (the ViT sizes, which the timm ids cannot tell, in `tiny_timm_overrides`).
NAMED_CONFIGS = {
    "openvla_7b": {**_OPENVLA_LAYOUT, "text_config": {"model_type": "llama", "vocab_size": 32064, "pad_token_id": 32000}},
    "openvla_tiny": {
        **_OPENVLA_LAYOUT,
        "tiny_timm_overrides": {_TIMM_IDS[0]: {"embed_dim": 48, "depth": 3, "num_heads": 3},
                                _TIMM_IDS[1]: {"embed_dim": 40, "depth": 3, "num_heads": 2}},
        "text_config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
                        "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": TINY_VOCAB_SIZE + 64,
                        "pad_token_id": TINY_VOCAB_SIZE},
    },
}
# openvla-7b's preprocessor_config.json (the fields `openvla_inputs.ImageProcessor` reads): what `write_random` writes.
PREPROCESSOR_CONFIG = {
    "image_resize_strategy": "resize-naive", "tvf_do_letterbox": False,
    "tvf_resize_params": [{"size": [224, 224], "interpolation": 3, "antialias": True, "max_size": None}] * 2,
    "tvf_normalize_params": [{"mean": [0.484375, 0.455078125, 0.40625], "std": [0.228515625, 0.2236328125, 0.224609375]},
                             {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}],
}
_DINO, _SIGLIP = "vision_backbone.featurizer", "vision_backbone.fused_featurizer"


@dataclasses.dataclass(frozen=True)
class OpenVLAConfig:
    """Everything that shapes OpenVLA's computation (from config.json; `dino`/`siglip` hold the blocks that run)."""

    dino: ViTConfig
    siglip: ViTConfig
    llm: GemmaConfig
    vocab_size: int  # rows of the (padded) embedding
    pad_to_multiple_of: int = 64  # the padding rows: actions use the last n_action_bins ids before them
    n_action_bins: int = 256
    dtype: Literal["float32", "bfloat16"] = "float32"

    @property
    def experts(self) -> tuple[GemmaConfig]:
        """The decoder's experts (one), as the shared prefix-LM decoder (`models/decoding.py`) reads them."""
        return (self.llm,)

    @property
    def action_horizon(self) -> int:
        """OpenVLA predicts one action per step (no chunk)."""
        return 1

    @property
    def unpadded_vocab_size(self) -> int:
        return self.vocab_size - self.pad_to_multiple_of

    @property
    def num_patches(self) -> int:
        return self.dino.num_tokens


def is_openvla(path: str) -> bool:
    """A local directory whose config.json says `model_type: "openvla"` (the registry's layout test)."""
    return llama_checkpoint.config_model_type(path) == "openvla"


def family(path: str) -> str:
    """The family an OpenVLA directory holds (the registry's question; there is one)."""
    del path
    return "openvla"


def _vit(path: pathlib.Path, timm_id: str, overrides: dict[str, Any], image_size: int) -> ViTConfig:
    if timm_id not in TIMM_VITS:
        raise CheckpointError(f"{path}: timm_model_ids: {timm_id!r} is not one of OpenVLA's ViTs {sorted(TIMM_VITS)}")
    width, depth, heads, mlp_ratio, class_token, registers, layer_scale = TIMM_VITS[timm_id]
    width, depth, heads = overrides.get("embed_dim", width), overrides.get("depth", depth), overrides.get("num_heads", heads)
    # Prismatic reads the second-to-last block's output without the final norm: the last block never runs.
    return ViTConfig(width=width, depth=depth - 1, mlp_dim=int(width * mlp_ratio), num_heads=heads,
                     image_size=image_size, class_token=class_token, num_registers=registers,
                     layer_scale=layer_scale, exact_gelu=True, final_norm=False)


def unnorm_keys(directory: str) -> tuple[str, ...]:
    """The dataset keys of config.json's `norm_stats` (`--unnorm_key`'s choices; the registry's preflight question)."""
    return tuple(sorted(read_json(pathlib.Path(directory) / CONFIG_FILE).get("norm_stats") or {}))


def missing_action_stats(directory: str, unnorm_key: str) -> str | None:
    """What config.json's `norm_stats[unnorm_key]` lacks to unnormalize actions (the registry's preflight question:
    no weights read), naming the file and the entry; None when it holds them."""
    path = pathlib.Path(directory) / CONFIG_FILE
    return action_stats_error(path, read_json(path)["norm_stats"], unnorm_key)


def action_stats_error(path: pathlib.Path, norm_stats: Any, unnorm_key: str) -> str | None:
    """`action_bins.action_stats_problem` of one entry, said with the file and the entry's name."""
    problem = action_bins.action_stats_problem(norm_stats[unnorm_key])
    return None if problem is None else f"{path}: norm_stats[{unnorm_key!r}]: {problem}"


def read_config(directory: str | pathlib.Path, dtype: str = "float32") -> OpenVLAConfig:
    """OpenVLAConfig from `<directory>/config.json`; one-line errors name the file and the field."""
    path = pathlib.Path(directory) / CONFIG_FILE
    return parse_config(read_json(path), dtype, path)


def named_config(name: str, dtype: str = "float32") -> OpenVLAConfig:
    """The OpenVLAConfig of a `NAMED_CONFIGS` entry (benchmarks and the demo build these without a checkpoint)."""
    if name not in NAMED_CONFIGS:
        raise ValueError(f"unknown OpenVLA config {name!r}: expected one of {sorted(NAMED_CONFIGS)}")
    return parse_config(NAMED_CONFIGS[name], dtype, pathlib.Path(f"<{name}>"))


def parse_config(raw: dict[str, Any], dtype: str, path: pathlib.Path) -> OpenVLAConfig:
    """OpenVLAConfig from config.json's fields (`path` names where they came from in errors)."""
    try:
        timm_ids = raw["timm_model_ids"]
        image_sizes = raw["image_sizes"]
        text_config = raw["text_config"]
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: missing field {error}")
    if not raw.get("use_fused_vision_backbone") or len(timm_ids) != 2:
        raise CheckpointError(f"{path}: use_fused_vision_backbone/timm_model_ids: only the fused DINOv2 + SigLIP "
                              f"backbone (dinosiglip) is supported, got {timm_ids}")
    if raw.get("arch_specifier", "no-align+fused-gelu-mlp") != "no-align+fused-gelu-mlp":
        raise CheckpointError(f"{path}: arch_specifier: {raw['arch_specifier']!r}; only 'no-align+fused-gelu-mlp' is supported")
    if any(raw.get("timm_override_act_layers") or ()):  # Prismatic hands it to timm as the ViTs' activations
        raise CheckpointError(f"{path}: timm_override_act_layers: {raw['timm_override_act_layers']!r}; only the ViTs' "
                              "own activations (null, as openvla-7b's) are supported")
    if not isinstance(image_sizes, list) or len(image_sizes) != len(timm_ids):
        raise CheckpointError(f"{path}: image_sizes: expected one per ViT ({len(timm_ids)}), got {image_sizes!r}")
    overrides = raw.get("tiny_timm_overrides", {})
    dino, siglip = (_vit(path, timm_id, overrides.get(timm_id, {}), config_integer(path, "image_sizes", size, 1))
                    for timm_id, size in zip(timm_ids, image_sizes))
    llm, vocab_size = llama_checkpoint.parse_text_config(text_config, path)
    pad_to_multiple_of = config_integer(path, "pad_to_multiple_of", raw.get("pad_to_multiple_of", 64), 1, vocab_size - 1)
    # action_bins.normalized_actions reads n_bins - 1 bin centers below the padding rows.
    n_action_bins = config_integer(path, "n_action_bins", raw.get("n_action_bins", 256), 2, vocab_size - pad_to_multiple_of)
    return OpenVLAConfig(dino, siglip, llm, vocab_size, pad_to_multiple_of, n_action_bins, dtype)


def pad_token_id(raw: dict[str, Any], config: OpenVLAConfig, path: pathlib.Path) -> int:
    """config.json's `pad_token_id` (the `<PAD>` row after the tokenizer's pieces by default), an embedding row."""
    return config_integer(path, "pad_token_id", raw.get("pad_token_id", config.unpadded_vocab_size), 0, config.vocab_size - 1)


# -- tensor name map ---------------------------------------------------------------------------------------------

def _qkv_part(part: int, heads: int, is_bias: bool):
    def take(qkv: np.ndarray) -> np.ndarray:
        width = qkv.shape[0] // 3
        chunk = qkv[part * width:(part + 1) * width]
        return chunk.reshape(heads, -1) if is_bias else heads_in(chunk, heads)

    return take


def _vit_sources(prefix: str, flax_prefix: str, config: ViTConfig) -> dict[str, Source]:
    blocks = range(config.depth)
    heads = config.num_heads
    block = f"{flax_prefix}/Transformer/encoderblock"
    attention = f"{block}/MultiHeadDotProductAttention_0"

    def per_block(name: str, transform=lambda tensor: tensor) -> Source:
        return Source(tuple((f"{prefix}.blocks.{i}.{name}",) for i in blocks), transform, stacked=True)

    sources = {
        f"{flax_prefix}/embedding/kernel": Source(((f"{prefix}.patch_embed.proj.weight",),), lambda w: w.transpose(2, 3, 1, 0)),
        f"{flax_prefix}/embedding/bias": Source(((f"{prefix}.patch_embed.proj.bias",),)),
        f"{flax_prefix}/pos_embedding": Source(((f"{prefix}.pos_embed",),)),
        f"{block}/LayerNorm_0/scale": per_block("norm1.weight"),
        f"{block}/LayerNorm_0/bias": per_block("norm1.bias"),
        f"{block}/LayerNorm_1/scale": per_block("norm2.weight"),
        f"{block}/LayerNorm_1/bias": per_block("norm2.bias"),
        f"{attention}/out/kernel": per_block("attn.proj.weight", lambda w: heads_out(w, heads)),
        f"{attention}/out/bias": per_block("attn.proj.bias"),
        f"{block}/MlpBlock_0/Dense_0/kernel": per_block("mlp.fc1.weight", transposed),
        f"{block}/MlpBlock_0/Dense_0/bias": per_block("mlp.fc1.bias"),
        f"{block}/MlpBlock_0/Dense_1/kernel": per_block("mlp.fc2.weight", transposed),
        f"{block}/MlpBlock_0/Dense_1/bias": per_block("mlp.fc2.bias"),
    }
    for part, name in enumerate(("query", "key", "value")):
        sources[f"{attention}/{name}/kernel"] = per_block("attn.qkv.weight", _qkv_part(part, heads, False))
        sources[f"{attention}/{name}/bias"] = per_block("attn.qkv.bias", _qkv_part(part, heads, True))
    if config.class_token:
        sources[f"{flax_prefix}/cls"] = Source(((f"{prefix}.cls_token",),))
    if config.num_registers:
        sources[f"{flax_prefix}/registers"] = Source(((f"{prefix}.reg_token",),))
    if config.layer_scale:
        sources[f"{block}/LayerScale_0/scale"] = per_block("ls1.scale_factor")
        sources[f"{block}/LayerScale_1/scale"] = per_block("ls2.scale_factor")
    return sources


def tensor_sources(config: OpenVLAConfig) -> dict[str, Source]:
    """Flat Flax path -> its `Source` in an OpenVLA checkpoint."""
    sources = {**_vit_sources(_DINO, "dino", config.dino), **_vit_sources(_SIGLIP, "siglip", config.siglip)}
    for index in (1, 2, 3):
        sources[f"projector/fc{index}/kernel"] = Source(((f"projector.fc{index}.weight",),), transposed)
        sources[f"projector/fc{index}/bias"] = Source(((f"projector.fc{index}.bias",),))
    sources.update(llama_checkpoint.tensor_sources(config.llm))
    return sources


def unused_tensors(config: OpenVLAConfig, names: Any) -> set[str]:
    """Tensors of the checkpoint Prismatic never reads: each ViT's last block and final norm, SigLIP's pool head."""
    unused_prefixes = (f"{_DINO}.blocks.{config.dino.depth}.", f"{_DINO}.norm.",
                       f"{_SIGLIP}.blocks.{config.siglip.depth}.", f"{_SIGLIP}.norm.", f"{_SIGLIP}.attn_pool.")
    return {name for name in names if name.startswith(unused_prefixes)}


def _vit_tensor_shapes(prefix: str, config: ViTConfig, attention_pool: bool) -> dict[str, tuple[int, ...]]:
    """timm's tensors of one ViT (all `config.depth + 1` blocks, the final norm, SigLIP's attention-pool head)."""
    width, mlp, patch = config.width, config.mlp_dim, config.patch_size
    shapes = {f"{prefix}.pos_embed": (1, config.num_tokens, width), f"{prefix}.patch_embed.proj.weight": (width, 3, patch, patch),
              f"{prefix}.patch_embed.proj.bias": (width,), f"{prefix}.norm.weight": (width,), f"{prefix}.norm.bias": (width,)}
    if config.class_token:
        shapes[f"{prefix}.cls_token"] = (1, 1, width)
    if config.num_registers:
        shapes[f"{prefix}.reg_token"] = (1, config.num_registers, width)
    block = {"norm1.weight": (width,), "norm1.bias": (width,), "attn.qkv.weight": (3 * width, width),
             "attn.qkv.bias": (3 * width,), "attn.proj.weight": (width, width), "attn.proj.bias": (width,),
             "norm2.weight": (width,), "norm2.bias": (width,), "mlp.fc1.weight": (mlp, width), "mlp.fc1.bias": (mlp,),
             "mlp.fc2.weight": (width, mlp), "mlp.fc2.bias": (width,)}
    if config.layer_scale:
        block |= {"ls1.scale_factor": (width,), "ls2.scale_factor": (width,)}
    for index in range(config.depth + 1):
        shapes |= {f"{prefix}.blocks.{index}.{name}": shape for name, shape in block.items()}
    if attention_pool:
        pool = {"latent": (1, 1, width), "q.weight": (width, width), "q.bias": (width,), "kv.weight": (2 * width, width),
                "kv.bias": (2 * width,), "proj.weight": (width, width), "proj.bias": (width,), "norm.weight": (width,),
                "norm.bias": (width,), "mlp.fc1.weight": (mlp, width), "mlp.fc1.bias": (mlp,),
                "mlp.fc2.weight": (width, mlp), "mlp.fc2.bias": (width,)}
        shapes |= {f"{prefix}.attn_pool.{name}": shape for name, shape in pool.items()}
    return shapes


def tensor_shapes(config: OpenVLAConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of an OpenVLA checkpoint with `config` (name -> shape), as openvla/openvla-7b stores them."""
    llm, vision = config.llm, config.dino.width + config.siglip.width
    shapes = {**_vit_tensor_shapes(_DINO, config.dino, False), **_vit_tensor_shapes(_SIGLIP, config.siglip, True)}
    shapes |= {"projector.fc1.weight": (4 * vision, vision), "projector.fc1.bias": (4 * vision,),
               "projector.fc2.weight": (llm.width, 4 * vision), "projector.fc2.bias": (llm.width,),
               "projector.fc3.weight": (llm.width, llm.width), "projector.fc3.bias": (llm.width,)}
    return shapes | llama_checkpoint.tensor_shapes(llm, config.vocab_size)


def write_random(directory: pathlib.Path, config_name: str, *, corpus: Sequence[str], seed: int, scale: float) -> pathlib.Path:
    """A random OpenVLA of a named config in openvla/openvla-7b's Hugging Face layout (the demo's): config.json (with
    7-dim actions, q01/q99 = -1/1, under the key "demo"), model.safetensors, a Llama-convention tokenizer.model
    trained on `corpus` and padded to the vocabulary, preprocessor_config.json."""
    raw = NAMED_CONFIGS[config_name]
    vocab_size = raw["text_config"]["vocab_size"] - raw["pad_to_multiple_of"]
    # Llama's special ids (unk 0, BOS 1, EOS 2, no pad piece), dummy prefix; the empty token's piece must exist.
    proto = sentencepiece_training.train(corpus, vocab_size - 256, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True)
    missing_empty = ["\u2581"] if "\u2581" not in {piece.piece for piece in proto.pieces} else []
    pieces = missing_empty + [f"<unused{i:03d}>" for i in range(vocab_size - len(proto.pieces) - len(missing_empty))]
    sentencepiece_training.write_padded(proto, directory / "tokenizer.model", pieces, piece_type="NORMAL")
    config = {**raw, "architectures": ["OpenVLAForActionPrediction"], "pad_token_id": raw["text_config"]["pad_token_id"],
              "norm_stats": {"demo": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 7}}}}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2))
    rng = np.random.default_rng(seed)
    shapes = tensor_shapes(read_config(directory))
    tensors = {name: (rng.standard_normal(shape) * scale).astype(np.float32) for name, shape in sorted(shapes.items())}
    safetensors.save_checkpoint(tensors, directory)
    return directory
