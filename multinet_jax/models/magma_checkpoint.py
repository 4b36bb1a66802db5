"""Magma's Hugging Face checkpoint (microsoft/Magma-8B's layout): its config, its layout test, and the map from its
tensor names to the Flax tree.

A checkpoint directory holds `config.json` (`model_type: "magma"`, a Llama `text_config`, a `vision_config` naming the
CLIP ConvNeXt backbone and the `mlp2x_gelu` projector), `model.safetensors` or sharded safetensors + index,
`tokenizer.json` / `tokenizer_config.json` (a byte-level BPE, Llama-3's for Magma-8B), `preprocessor_config.json`
(the crop grid), optionally `generation_config.json`, and Python files that are never read.

Sizes: the decoder from `text_config` (`models/llama_checkpoint.py`); the ConvNeXt's per-stage depths and widths from
the safetensors headers (the tensors' names and shapes, no arrays read), since config.json only names the backbone
(`vision_backbone`) and its output width (`mm_hidden_size`, checked against the headers).

Tensor names: the vision tower is open_clip's `TimmModel` under `vision_tower.clip_vision_model.`; only
`trunk.stem` and `trunk.stages` run (Magma reads `clip_vis_dense`), so the trunk's head and the CLIP head, when a
checkpoint has them (Magma-8B's does not), are known but unused, as are the image start/end separators some
configs define (`mm_use_im_start_end`), which Magma's forward never reads. ConvNeXt's layer scale is `...gamma` as
transformers >= 4.49 saves it; checkpoints written through older transformers name it `...weight`
(`blocks.B.weight`); both are read.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Collection, Mapping
from typing import Any, Literal

from multinet_jax.models import llama_checkpoint
from multinet_jax.models.action_bins import N_BINS
from multinet_jax.models.configs import GemmaConfig
from multinet_jax.models.convnext import ConvNeXtConfig
from multinet_jax.models.llama_checkpoint import CONFIG_FILE, read_json
from multinet_jax.weights.safetensors import Source, transposed
from multinet_jax.weights.trees import CheckpointError

_TRUNK = "vision_tower.clip_vision_model.trunk"
_PROJECTOR = "multi_modal_projector"
_BLOCK = re.compile(rf"^{re.escape(_TRUNK)}\.stages\.(\d+)\.blocks\.(\d+)\.conv_dw\.weight$")
_UNUSED_PREFIXES = ("vision_tower.clip_vision_model.head.", f"{_TRUNK}.head.", f"{_TRUNK}.norm_pre.",
                    f"{_PROJECTOR}.img_start_seperator", f"{_PROJECTOR}.img_end_seperator")
LAYER_SCALE_NAMES = ("gamma", "weight")  # transformers >= 4.49 keeps `gamma`; older ones renamed it on save
# open_clip's ConvNeXt towers Magma can name (`vision_backbone`) that this package models -> (depths, widths) of
# timm's convnext_*. Magma's "convnextlarge" (timm's convnext_large) normalizes with eps 1e-6, not the 1e-5 of
# `convnext.LAYER_NORM_EPS` (convnext_xxlarge's norm_eps): refused, as any other name.
BACKBONES = {"convnextxxlarge": ((3, 4, 30, 3), (384, 768, 1536, 3072))}


# config.json fields that shape the network. "magma_8b": microsoft/Magma-8B's (the embedding rows are not confirmed
# offline: tests/param_specs/magma_8b.tsv says how they were chosen). "magma_tiny": `../shared/magma_reference`'s sizes,
# whose ConvNeXt (`convnext`, what a checkpoint's headers give) is not a published backbone.
_LLAMA3 = {"model_type": "llama", "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 500_000.0, "rope_scaling": None,
           "tie_word_embeddings": False, "max_position_embeddings": 8192}
NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    "magma_8b": {
        "model_type": "magma", "image_token_index": 128257, "tokenizer_vocab_size": 128000, "mm_use_image_start_end": True,
        "text_config": {**_LLAMA3, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128261},
        "vision_config": {"vision_backbone": "convnextxxlarge", "img_anyres_strategy": "crop", "img_size": 512,
                          "max_num_crops": 4, "mm_hidden_size": 3072, "hidden_size": 4096, "mm_projector_type": "mlp2x_gelu",
                          "vision_feature_layer": "clip_vis_dense"},
    },
    "magma_tiny": {
        "model_type": "magma", "image_token_index": 1017, "tokenizer_vocab_size": 1000, "mm_use_image_start_end": True,
        "text_config": {**_LLAMA3, "hidden_size": 64, "intermediate_size": 224, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 1024},
        "vision_config": {"vision_backbone": "convnextxxlarge", "img_anyres_strategy": "crop", "img_size": 96,
                          "max_num_crops": 4, "mm_hidden_size": 48, "hidden_size": 64, "mm_projector_type": "mlp2x_gelu",
                          "vision_feature_layer": "clip_vis_dense"},
        "convnext": {"depths": [1, 1, 2, 1], "widths": [8, 16, 24, 48]},
    },
}


@dataclasses.dataclass(frozen=True)
class MagmaConfig:
    """Everything that shapes Magma's computation (config.json plus the ConvNeXt sizes from the headers)."""

    vision: ConvNeXtConfig
    llm: GemmaConfig
    vocab_size: int  # embedding rows
    image_token_id: int  # the one `<image>` id each image's tokens replace
    crop_size: int  # vision_config.img_size: one crop's side (the size benchmarks feed; the processor's sets real inputs)
    dtype: Literal["float32", "bfloat16"] = "float32"

    @property
    def experts(self) -> tuple[GemmaConfig]:
        """The decoder's experts (one), as the shared prefix-LM decoder (`models/decoding.py`) reads them."""
        return (self.llm,)

    @property
    def action_horizon(self) -> int:
        """Magma predicts one action per step (no chunk)."""
        return 1


def is_magma(path: str) -> bool:
    """A local directory whose config.json says `model_type: "magma"` (the registry's layout test)."""
    return llama_checkpoint.config_model_type(path) == "magma"


def family(path: str) -> str:
    """The family a Magma directory holds (the registry's question; there is one)."""
    del path
    return "magma"


def convnext_from_shapes(shapes: Mapping[str, tuple[int, ...]], where: Any) -> ConvNeXtConfig:
    """The ConvNeXt's depths and widths from the checkpoint's tensor names and shapes (`where` names it in errors)."""
    blocks: dict[int, dict[int, int]] = {}
    for name, shape in shapes.items():
        match = _BLOCK.match(name)
        if match:
            blocks.setdefault(int(match[1]), {})[int(match[2])] = shape[0]
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise CheckpointError(f"{where}: no ConvNeXt stages `{_TRUNK}.stages.<i>.blocks.<j>.conv_dw.weight` "
                              f"numbered from 0 (found stages {sorted(blocks)})")
    depths, widths = [], []
    for stage in range(len(blocks)):
        if sorted(blocks[stage]) != list(range(len(blocks[stage]))) or len(set(blocks[stage].values())) != 1:
            raise CheckpointError(f"{where}: ConvNeXt stage {stage}: blocks {sorted(blocks[stage])} must be numbered "
                                  f"from 0 and share one width, got widths {sorted(set(blocks[stage].values()))}")
        depths.append(len(blocks[stage]))
        widths.append(blocks[stage][0])
    return ConvNeXtConfig(tuple(depths), tuple(widths))


def parse_config(raw: dict[str, Any], vision: ConvNeXtConfig, dtype: str, path: pathlib.Path) -> MagmaConfig:
    """MagmaConfig from config.json's fields and the ConvNeXt read from the headers (`path` names the file)."""
    try:
        text_config, vision_config, image_token_id = raw["text_config"], raw["vision_config"], raw["image_token_index"]
    except KeyError as error:
        raise CheckpointError(f"{path}: missing field {error}")
    if not isinstance(vision_config, dict):
        raise CheckpointError(f"{path}: vision_config: expected a JSON object")
    backbone = vision_config.get("vision_backbone", "convnextxxlarge")
    if backbone not in BACKBONES:
        raise CheckpointError(f"{path}: vision_config.vision_backbone: {backbone!r}; only {sorted(BACKBONES)} "
                              "(Magma-8B's) is supported")
    projector = vision_config.get("mm_projector_type", "linear")
    if projector != "mlp2x_gelu":
        raise CheckpointError(f"{path}: vision_config.mm_projector_type: {projector!r}; only 'mlp2x_gelu' (Magma-8B's) is supported")
    if vision_config.get("img_anyres_strategy", "crop") != "crop":
        raise CheckpointError(f"{path}: vision_config.img_anyres_strategy: {vision_config['img_anyres_strategy']!r}; "
                              f"only 'crop' (Magma-8B's) is supported")
    if vision_config.get("vision_feature_layer", "clip_vis_dense") != "clip_vis_dense":
        raise CheckpointError(f"{path}: vision_config.vision_feature_layer: only 'clip_vis_dense' is supported")
    mm_hidden = vision_config.get("mm_hidden_size", vision.out_width)
    if mm_hidden != vision.out_width:
        raise CheckpointError(f"{path}: vision_config.mm_hidden_size: {mm_hidden}, but the checkpoint's ConvNeXt ends "
                              f"with width {vision.out_width}")
    llm, vocab_size = llama_checkpoint.parse_text_config(text_config, path)
    if vision_config.get("hidden_size", llm.width) != llm.width:
        raise CheckpointError(f"{path}: vision_config.hidden_size: {vision_config['hidden_size']}, the decoder's width is {llm.width}")
    if not isinstance(image_token_id, int) or not 0 <= image_token_id < vocab_size:
        raise CheckpointError(f"{path}: image_token_index: {image_token_id!r} is not an id of the {vocab_size}-row embedding")
    crop_size = vision_config.get("img_size")
    if not isinstance(crop_size, int) or crop_size < vision.stride or crop_size % vision.stride:
        raise CheckpointError(f"{path}: vision_config.img_size: {crop_size!r}; expected a positive multiple of the "
                              f"ConvNeXt's stride {vision.stride}")
    return MagmaConfig(vision, llm, vocab_size, image_token_id, crop_size, dtype)


def read_config(directory: str | pathlib.Path, shapes: Mapping[str, tuple[int, ...]], dtype: str = "float32") -> MagmaConfig:
    """MagmaConfig from `<directory>/config.json` and the checkpoint's tensor shapes; one-line errors name the file."""
    path = pathlib.Path(directory) / CONFIG_FILE
    return parse_config(read_json(path), convnext_from_shapes(shapes, directory), dtype, path)


def named_config(name: str, dtype: str = "float32") -> MagmaConfig:
    """The MagmaConfig of a `NAMED_CONFIGS` entry (benchmarks and the demo build these without a checkpoint)."""
    if name not in NAMED_CONFIGS:
        raise ValueError(f"unknown Magma config {name!r}: expected one of {sorted(NAMED_CONFIGS)}")
    raw = NAMED_CONFIGS[name]
    sizes = raw.get("convnext") or dict(zip(("depths", "widths"), BACKBONES[raw["vision_config"]["vision_backbone"]]))
    vision = ConvNeXtConfig(tuple(sizes["depths"]), tuple(sizes["widths"]))
    return parse_config(raw, vision, dtype, pathlib.Path(f"<{name}>"))


# -- tensor name map ---------------------------------------------------------------------------------------------

def _stage(index: int) -> str:
    return f"{_TRUNK}.stages.{index}"


def _conv_kernel(weight: Any) -> Any:
    """torch Conv2d `[out, in, kh, kw]` -> `[kh, kw, in, out]` (flax / `vit.PatchEmbedding`)."""
    return weight.transpose(2, 3, 1, 0)


def layer_scale_name(names: Collection[str]) -> str:
    """Which name the checkpoint gives ConvNeXt's layer scale (`gamma`, or `weight` from older transformers)."""
    return next((key for key in LAYER_SCALE_NAMES if f"{_stage(0)}.blocks.0.{key}" in names), LAYER_SCALE_NAMES[0])


def tensor_sources(config: MagmaConfig, layer_scale: str = "gamma") -> dict[str, Source]:
    """Flat Flax path -> its `Source` in a Magma checkpoint (`layer_scale`: see `layer_scale_name`)."""
    sources = {
        "vision/stem/kernel": Source(((f"{_TRUNK}.stem.0.weight",),), _conv_kernel),
        "vision/stem/bias": Source(((f"{_TRUNK}.stem.0.bias",),)),
        "vision/stem_norm/scale": Source(((f"{_TRUNK}.stem.1.weight",),)),
        "vision/stem_norm/bias": Source(((f"{_TRUNK}.stem.1.bias",),)),
        "projector/fc1/kernel": Source(((f"{_PROJECTOR}.proj.0.weight",),), transposed),
        "projector/fc1/bias": Source(((f"{_PROJECTOR}.proj.0.bias",),)),
        "projector/fc2/kernel": Source(((f"{_PROJECTOR}.proj.2.weight",),), transposed),
        "projector/fc2/bias": Source(((f"{_PROJECTOR}.proj.2.bias",),)),
        "projector/row_separator": Source(((f"{_PROJECTOR}.row_seperator",),), lambda row: row.reshape(-1)),
    }
    for stage, depth in enumerate(config.vision.depths):
        flax_stage = f"vision/stage_{stage}"

        def per_block(name: str, transform=lambda tensor: tensor, stage=stage, depth=depth) -> Source:
            return Source(tuple((f"{_stage(stage)}.blocks.{b}.{name}",) for b in range(depth)), transform, stacked=True)

        sources |= {
            f"{flax_stage}/blocks/conv_dw/kernel": per_block("conv_dw.weight", _conv_kernel),
            f"{flax_stage}/blocks/conv_dw/bias": per_block("conv_dw.bias"),
            f"{flax_stage}/blocks/norm/scale": per_block("norm.weight"),
            f"{flax_stage}/blocks/norm/bias": per_block("norm.bias"),
            f"{flax_stage}/blocks/fc1/kernel": per_block("mlp.fc1.weight", transposed),
            f"{flax_stage}/blocks/fc1/bias": per_block("mlp.fc1.bias"),
            f"{flax_stage}/blocks/fc2/kernel": per_block("mlp.fc2.weight", transposed),
            f"{flax_stage}/blocks/fc2/bias": per_block("mlp.fc2.bias"),
            f"{flax_stage}/blocks/gamma": per_block(layer_scale),
        }
        if stage:
            sources |= {
                f"{flax_stage}/downsample_norm/scale": Source(((f"{_stage(stage)}.downsample.0.weight",),)),
                f"{flax_stage}/downsample_norm/bias": Source(((f"{_stage(stage)}.downsample.0.bias",),)),
                f"{flax_stage}/downsample/kernel": Source(((f"{_stage(stage)}.downsample.1.weight",),), _conv_kernel),
                f"{flax_stage}/downsample/bias": Source(((f"{_stage(stage)}.downsample.1.bias",),)),
            }
    return sources | llama_checkpoint.tensor_sources(config.llm)


def unused_tensors(names: Collection[str]) -> set[str]:
    """Tensors Magma's forward never reads: the ConvNeXt's and CLIP's heads, the image start/end separators."""
    return {name for name in names if name.startswith(_UNUSED_PREFIXES)}


def tensor_shapes(config: MagmaConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor Magma reads from a checkpoint with `config` (name -> shape), as Magma-8B stores them."""
    widths = config.vision.widths
    shapes = {f"{_TRUNK}.stem.0.weight": (widths[0], 3, 4, 4), f"{_TRUNK}.stem.0.bias": (widths[0],),
              f"{_TRUNK}.stem.1.weight": (widths[0],), f"{_TRUNK}.stem.1.bias": (widths[0],)}
    for stage, (depth, width) in enumerate(zip(config.vision.depths, widths)):
        if stage:
            previous = widths[stage - 1]
            shapes |= {f"{_stage(stage)}.downsample.0.weight": (previous,), f"{_stage(stage)}.downsample.0.bias": (previous,),
                       f"{_stage(stage)}.downsample.1.weight": (width, previous, 2, 2),
                       f"{_stage(stage)}.downsample.1.bias": (width,)}
        block = {"conv_dw.weight": (width, 1, 7, 7), "conv_dw.bias": (width,), "gamma": (width,),
                 "mlp.fc1.weight": (4 * width, width), "mlp.fc1.bias": (4 * width,), "mlp.fc2.weight": (width, 4 * width),
                 "mlp.fc2.bias": (width,), "norm.weight": (width,), "norm.bias": (width,)}
        for index in range(depth):
            shapes |= {f"{_stage(stage)}.blocks.{index}.{name}": shape for name, shape in block.items()}
    width = config.llm.width
    shapes |= {f"{_PROJECTOR}.proj.0.weight": (width, config.vision.out_width), f"{_PROJECTOR}.proj.0.bias": (width,),
               f"{_PROJECTOR}.proj.2.weight": (width, width), f"{_PROJECTOR}.proj.2.bias": (width,),
               f"{_PROJECTOR}.row_seperator": (1, 1, width)}
    return shapes | llama_checkpoint.tensor_shapes(config.llm, config.vocab_size)


def check_tokenizer(tokenizer: Any, config: MagmaConfig, raw: Mapping[str, Any], path: pathlib.Path) -> Any:
    """`tokenizer` (a `magma_inputs.MagmaTokenizer`) when it fits the checkpoint: its `<image>` id is config.json's
    `image_token_index`, its base vocabulary (whose last 256 ids are the action tokens) is `tokenizer_vocab_size`
    where config.json records it, and every id fits the embedding; else a one-line error naming the field."""
    if tokenizer.image_id != config.image_token_id:
        raise CheckpointError(f"{path}: image_token_index: {config.image_token_id}, but the tokenizer's <image> is {tokenizer.image_id}")
    recorded = raw.get("tokenizer_vocab_size", tokenizer.vocab_size)
    if recorded != tokenizer.vocab_size:
        raise CheckpointError(f"{path}: tokenizer_vocab_size: {recorded}, but the tokenizer's base vocabulary has "
                              f"{tokenizer.vocab_size} tokens (action ids are its last {N_BINS})")
    size = tokenizer.tokenizer.get_vocab_size(with_added_tokens=True)
    if size > config.vocab_size or tokenizer.vocab_size < N_BINS:
        raise CheckpointError(f"{path}: text_config.vocab_size: the embedding has {config.vocab_size} rows, the "
                              f"tokenizer {size} ids ({tokenizer.vocab_size} base)")
    return tokenizer
