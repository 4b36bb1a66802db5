"""SmolVLA's LeRobot checkpoint: its config, its layout test, the map from its tensor names to the Flax tree, its
processor statistics and its tokenizer.

A checkpoint directory (lerobot/smolvla_base's layout: what `SmolVLAPolicy.save_pretrained` and the processor
pipelines' `save_pretrained` write) holds
- `config.json`: SmolVLAConfig's fields, `"type": "smolvla"`;
- `model.safetensors`: the torch module's tensors (`model.vlm_with_expert.vlm.model.{vision_model,connector,
  text_model}.*`, `model.vlm_with_expert.lm_expert.*`, `model.{state_proj,action_*}.*`), float32 or bfloat16;
- `policy_preprocessor.json` / `policy_postprocessor.json` (LeRobot >= 0.4): the processor steps; the normalizer's
  statistics are in the safetensors file its step names (`observation.state.mean`, `action.std`, ...).

The backbone's architecture is not in the checkpoint: `vlm_model_name` names the SmolVLM2 model it was built from
(HuggingFaceTB/SmolVLM2-500M-Video-Instruct), whose `config.json` gives the vision and text sizes and whose tokenizer
files tokenize the task. It is found as a local folder (absolute, or beside the checkpoint directory as LeRobot's
own fixtures lay it out) or else as a named asset (`multinet_jax.assets`: config and tokenizer files only; its
weights are in the checkpoint). Sizes a backbone `config.json` leaves out take transformers' defaults
(`_VISION_DEFAULTS`, `_TEXT_DEFAULTS`), as `from_pretrained` does.

What SmolVLA derives (LeRobot 0.6.1 `smolvlm_with_expert.py`): the first `num_vlm_layers` text layers are kept; the
action expert has one layer per kept layer, width `int(hidden * expert_width_multiplier)`, the MLP width of
`get_intermediate_size`, the text model's heads and head_dim; layer i is a self-attention layer when
`i % self_attn_every_n_layers == 0`, else a cross-attention layer whose k/v projections read the VLM's keys and
values (`kv_heads * head_dim` wide). RoPE's base is 10000 wherever SmolVLA applies it (the backbone's `rope_theta`
is never used).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import tokenizers
from safetensors import safe_open

from multinet_jax import domains
from multinet_jax.models.configs import GemmaConfig, ViTConfig
from multinet_jax.models.registry import ActionFrame, OwnPrompts
from multinet_jax.models.llama_checkpoint import layer_shapes
from multinet_jax.models.openvla_checkpoint import read_json
from multinet_jax.weights.safetensors import Source, heads_in, heads_out, llama_layer_sources, transposed
from multinet_jax.weights.trees import CheckpointError

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "policy_preprocessor.json"
POSTPROCESSOR_FILE = "policy_postprocessor.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
ROPE_BASE = 10_000.0  # `smolvlm_with_expert.apply_rope`'s hard-coded max_wavelength
_VLM = "model.vlm_with_expert.vlm.model"
_EXPERT = "model.vlm_with_expert.lm_expert"
ACTION_HEAD = ("state_proj", "action_in_proj", "action_out_proj", "action_time_mlp_in", "action_time_mlp_out")
# transformers' SmolVLMVisionConfig and LlamaConfig defaults, for the fields a backbone config.json leaves out
# (SmolVLM2-500M's lists neither the vision tower's depth nor its MLP width).
_VISION_DEFAULTS = {"hidden_size": 1152, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 16,
                    "num_channels": 3, "image_size": 224, "patch_size": 32, "hidden_act": "gelu_pytorch_tanh",
                    "layer_norm_eps": 1e-6}
_TEXT_DEFAULTS = {"hidden_act": "silu", "rms_norm_eps": 1e-6, "num_key_value_heads": None, "head_dim": None,
                  "attention_bias": False, "mlp_bias": False}
# SmolVLAConfig's defaults (LeRobot 0.6.1) for fields an older config.json may lack.
_POLICY_DEFAULTS = {"chunk_size": 50, "max_state_dim": 32, "max_action_dim": 32, "resize_imgs_with_padding": [512, 512],
                    "tokenizer_max_length": 48, "num_steps": 10, "use_cache": True, "attention_mode": "cross_attn",
                    "num_expert_layers": -1, "num_vlm_layers": 16, "self_attn_every_n_layers": 2,
                    "expert_width_multiplier": 0.75, "min_period": 4e-3, "max_period": 4.0, "add_image_special_tokens": False,
                    "pad_language_to": "longest", "adapt_to_pi_aloha": False, "use_delta_joint_actions_aloha": False,
                    "vlm_model_name": "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"}
# The published configs (sources in tests/data/smolvla_base_tensors.tsv's header): lerobot/smolvla_base's
# config.json fields that shape the network, with SmolVLM2-500M-Video-Instruct's config.json; and a tiny one with the
# sizes of `../shared/smolvla_reference` (the demo's).
SMOLVLM2_500M = {
    "model_type": "smolvlm", "scale_factor": 4, "vocab_size": 49280,
    "text_config": {"model_type": "llama", "hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                    "num_attention_heads": 15, "num_key_value_heads": 5, "head_dim": 64, "rms_norm_eps": 1e-5,
                    "rope_theta": 100000, "vocab_size": 49280},
    "vision_config": {"model_type": "smolvlm_vision", "hidden_size": 768, "image_size": 512, "num_attention_heads": 12,
                      "patch_size": 16},
}
SMOLVLA_BASE = {
    "type": "smolvla", "chunk_size": 50, "n_action_steps": 50, "max_state_dim": 32, "max_action_dim": 32,
    "input_features": {"observation.state": {"type": "STATE", "shape": [6]},
                       "observation.image2": {"type": "VISUAL", "shape": [3, 256, 256]},
                       "observation.image": {"type": "VISUAL", "shape": [3, 256, 256]},
                       "observation.image3": {"type": "VISUAL", "shape": [3, 256, 256]}},
    "output_features": {"action": {"type": "ACTION", "shape": [6]}},
    "resize_imgs_with_padding": [512, 512], "tokenizer_max_length": 48, "num_steps": 10, "use_cache": True,
    "vlm_model_name": "HuggingFaceTB/SmolVLM2-500M-Video-Instruct", "attention_mode": "cross_attn", "prefix_length": 0,
    "pad_language_to": "max_length", "num_expert_layers": 0, "num_vlm_layers": 16, "self_attn_every_n_layers": 2,
    "expert_width_multiplier": 0.75,
}
TINY_BACKBONE = {
    "model_type": "smolvlm", "scale_factor": 4, "vocab_size": 512,
    "text_config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-5,
                    "vocab_size": 512},
    "vision_config": {"model_type": "smolvlm_vision", "hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2,
                      "num_attention_heads": 2, "patch_size": 16, "image_size": 256},
}
TINY_POLICY = {
    **SMOLVLA_BASE, "resize_imgs_with_padding": [256, 256], "pad_language_to": "longest", "vlm_model_name": "tiny_smolvlm2",
    "input_features": {"observation.images.camera1": {"type": "VISUAL", "shape": [3, 96, 128]},
                       "observation.images.camera2": {"type": "VISUAL", "shape": [3, 120, 100]},
                       "observation.state": {"type": "STATE", "shape": [6]}},
}
# The demo's: the tiny policy with the demo's Open-X bimanual state (12 dims) and one camera (Open-X has one image).
DEMO_POLICY = {
    **TINY_POLICY, "input_features": {"observation.images.camera1": {"type": "VISUAL", "shape": [3, 96, 128]},
                                      "observation.state": {"type": "STATE", "shape": [12]}},
    "output_features": {"action": {"type": "ACTION", "shape": [14]}},
}
NAMED_CONFIGS = {"smolvla_base": (SMOLVLA_BASE, SMOLVLM2_500M), "smolvla_tiny": (TINY_POLICY, TINY_BACKBONE),
                 "smolvla_demo": (DEMO_POLICY, TINY_BACKBONE)}


@dataclasses.dataclass(frozen=True)
class SmolVLAConfig:
    """Everything that shapes SmolVLA's computation (from the policy's and the backbone's config.json)."""

    vision: ViTConfig
    vlm: GemmaConfig  # the kept text layers
    expert: GemmaConfig
    vocab_size: int
    scale_factor: int  # the connector's pixel shuffle
    self_attn_every_n_layers: int
    cameras: tuple[str, ...]  # input_features' VISUAL keys, in order (the image tokens' order)
    state_dim: int  # input_features["observation.state"]
    action_dim: int  # output_features["action"]
    max_state_dim: int = 32
    max_action_dim: int = 32
    chunk_size: int = 50
    num_steps: int = 10
    tokenizer_max_length: int = 48
    pad_language_to: Literal["longest", "max_length"] = "longest"
    min_period: float = 4e-3
    max_period: float = 4.0
    dtype: Literal["float32", "bfloat16"] = "float32"

    @property
    def experts(self) -> tuple[GemmaConfig]:
        """The VLM's decoder (one expert), as the shared decoder code reads it."""
        return (self.vlm,)

    @property
    def action_horizon(self) -> int:
        return self.chunk_size

    @property
    def image_tokens(self) -> int:
        """Tokens per camera after the pixel shuffle (64 for a 512 x 512 image in 16 x 16 patches)."""
        return self.vision.num_tokens // self.scale_factor**2

    def layer_kind(self, index: int) -> Literal["self_attn", "cross_attn"]:
        """Expert layer `index`'s attention (LeRobot's schedule for `attention_mode="cross_attn"`)."""
        return "self_attn" if index % self.self_attn_every_n_layers == 0 else "cross_attn"


def is_smolvla(path: str) -> bool:
    """A local directory whose config.json says `"type": "smolvla"` (the registry's layout test)."""
    config_path = pathlib.Path(path) / CONFIG_FILE
    if "://" in path or not config_path.is_file():
        return False
    try:
        return json.loads(config_path.read_text()).get("type") == "smolvla"
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def family(path: str) -> str:
    """The family a SmolVLA directory holds (the registry's question; there is one)."""
    del path
    return "smolvla"


def backbone_directory(directory: str | pathlib.Path, name: str) -> pathlib.Path:
    """The SmolVLM2 folder `vlm_model_name` names: a local folder (absolute, or beside the checkpoint directory),
    else the named asset (resolved, offline or not, by `multinet_jax.assets`)."""
    from multinet_jax import assets

    local = pathlib.Path(name).expanduser()
    beside = pathlib.Path(directory).resolve().parent / name
    for candidate in (local if local.is_absolute() else None, beside):
        if candidate is not None and (candidate / CONFIG_FILE).is_file():
            return candidate
    return assets.resolve(name)


def backbone_of(directory: str | pathlib.Path) -> pathlib.Path:
    """The backbone folder the checkpoint's `vlm_model_name` names (`backbone_directory`)."""
    policy = read_json(pathlib.Path(directory) / CONFIG_FILE)
    return backbone_directory(directory, str(policy.get("vlm_model_name", _POLICY_DEFAULTS["vlm_model_name"])))


def read_config(directory: str | pathlib.Path, dtype: str = "float32",
                backbone: pathlib.Path | None = None) -> SmolVLAConfig:
    """SmolVLAConfig from `<directory>/config.json` and its backbone's (`backbone_of` unless given); one-line
    errors name the file and the field."""
    path = pathlib.Path(directory) / CONFIG_FILE
    backbone = backbone_of(directory) if backbone is None else backbone
    raw = read_json(path)
    config = parse_config(raw, read_json(backbone / CONFIG_FILE), dtype, path, backbone / CONFIG_FILE)
    vlm_model_name = str(raw.get("vlm_model_name", _POLICY_DEFAULTS["vlm_model_name"]))
    for file in (PREPROCESSOR_FILE, POSTPROCESSOR_FILE):
        _check_processor_steps(pathlib.Path(directory) / file, config, vlm_model_name)
    return config


# The steps of LeRobot's SmolVLA processor pipelines (`make_smolvla_pre_post_processors`), by file: what this package
# reproduces. Any other step would change the inputs or outputs unseen, so it is refused.
PROCESSOR_STEPS = {
    PREPROCESSOR_FILE: ("rename_observations_processor", "to_batch_processor", "smolvla_new_line_processor",
                        "tokenizer_processor", "device_processor", "normalizer_processor"),
    POSTPROCESSOR_FILE: ("unnormalizer_processor", "device_processor"),
}


def _check_processor_steps(path: pathlib.Path, config: SmolVLAConfig, vlm_model_name: str) -> None:
    """LeRobot >= 0.4 runs the policy through these pipeline files, whose steps' own settings then apply: each step
    must be one this package reproduces (`PROCESSOR_STEPS`); the `tokenizer_processor` must tokenize as config.json
    says (`tokenizer_max_length`, `pad_language_to`, right padding, truncation, the `vlm_model_name` tokenizer); the
    (un)normalizer must leave images as they are (`norm_map.VISUAL` IDENTITY: images normalized with statistics are not
    modelled) and cover the state and action features it has statistics for."""
    if not path.exists():
        return
    steps = read_json(path).get("steps")
    if not isinstance(steps, list) or not all(isinstance(step, dict) for step in steps):
        raise CheckpointError(f"{path}: steps: expected a list of processor steps")
    known = PROCESSOR_STEPS[path.name]
    for step in steps:
        name, step_config = step.get("registry_name"), step.get("config") or {}
        if name not in known:
            raise CheckpointError(f"{path}: step {name!r} is not one of LeRobot's SmolVLA steps {list(known)}; what it "
                                  "does to the inputs or outputs is not reproduced here")
        if name == "tokenizer_processor":
            expected = {"max_length": config.tokenizer_max_length, "padding": config.pad_language_to,
                        "padding_side": "right", "truncation": True, "tokenizer_name": vlm_model_name}
            for key, value in expected.items():
                if step_config.get(key, value) != value:
                    raise CheckpointError(f"{path}: tokenizer_processor.{key}={step_config[key]!r}, but config.json "
                                          f"tokenizes with {value!r}; only the two agreeing is supported")
        if name in ("normalizer_processor", "unnormalizer_processor"):
            _check_normalizer_step(path, step_config)


def _check_normalizer_step(path: pathlib.Path, step_config: Mapping[str, Any]) -> None:
    norm_map = step_config.get("norm_map") or {}
    if norm_map.get("VISUAL", "IDENTITY") != "IDENTITY":
        raise CheckpointError(f"{path}: norm_map.VISUAL={norm_map['VISUAL']!r}: only IDENTITY (images as they are, "
                              "SmolVLA's) is supported")
    if step_config.get("normalize_observation_keys") is not None:
        raise CheckpointError(f"{path}: normalize_observation_keys={step_config['normalize_observation_keys']!r}: only "
                              "null (every feature listed is normalized) is supported")


def state_dims(directory: str) -> int:
    """config.json's `input_features["observation.state"]` dims (the registry's preflight question: an action domain
    without states is refused rather than run on a made-up zero state)."""
    return read_config(directory).state_dim


def flow_steps(directory: str) -> int:
    """config.json's `num_steps` (the registry's question before the weights load; the model's `num_flow_steps`)."""
    return read_config(directory).num_steps


def own_prompts(source: Any) -> OwnPrompts:
    """SmolVLA tokenizes every task itself, cut at config.json's `tokenizer_max_length`: of a checkpoint directory or
    an in-memory model's tokenizer (the registry's question before the weights load)."""
    length = read_config(source).tokenizer_max_length if isinstance(source, (str, pathlib.Path)) else source.tokenizer.max_length
    return OwnPrompts(length, every_prompt=True)


_UNNAMED_FRAME = ("LeRobot policies predict their training data's action vector; smolvla_base's: SO-100's 6 absolute "
                  "joint positions")


def action_frame(directory: str | None, stats_key: str | None = None) -> ActionFrame:
    """The frame of the policy's actions (the registry's preflight question for Act2Answer's action probe): LeRobot's
    config.json gives `output_features["action"]` a type and a shape, never what the dims are, and a LeRobot policy
    predicts its training data's action vector (smolvla_base: SO-100's 6 absolute joint positions), so it is unnamed;
    so is an in-memory model's (`directory` None: no config.json, and none would name it). `stats_key`: none is
    picked (one normalizer per policy)."""
    del stats_key
    if directory is None:
        return ActionFrame("unnamed", f"an in-memory SmolVLA model (Evaluator(model=)): no {CONFIG_FILE}, and LeRobot's "
                                      f"names no action frame ({_UNNAMED_FRAME})")
    path = pathlib.Path(directory) / CONFIG_FILE
    dims = read_config(directory).action_dim
    return ActionFrame("unnamed", f"{path}: output_features.action is {dims} dims with no frame named ({_UNNAMED_FRAME})")


def named_config(name: str, dtype: str = "float32") -> SmolVLAConfig:
    """The SmolVLAConfig of a `NAMED_CONFIGS` entry (benchmarks and the demo build these without a checkpoint)."""
    if name not in NAMED_CONFIGS:
        raise ValueError(f"unknown SmolVLA config {name!r}: expected one of {sorted(NAMED_CONFIGS)}")
    policy, backbone = NAMED_CONFIGS[name]
    return parse_config(policy, backbone, dtype, pathlib.Path(f"<{name}>"), pathlib.Path(f"<{name} backbone>"))


def _field(raw: Mapping[str, Any], name: str, path: pathlib.Path, kind: type = int) -> Any:
    try:
        value = raw[name]
        if kind is int and (isinstance(value, bool) or int(value) != value):
            raise TypeError(f"{value!r} is not an integer")
        return kind(value)
    except KeyError:
        raise CheckpointError(f"{path}: missing field {name!r}") from None
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: field {name!r}: {error}") from None


def _features(policy: Mapping[str, Any], path: pathlib.Path) -> tuple[tuple[str, ...], int, int]:
    """(camera keys in order, state dim, action dim) from input_features / output_features."""
    try:
        inputs, outputs = policy["input_features"], policy["output_features"]
        cameras = tuple(key for key, feature in inputs.items() if feature["type"] == "VISUAL")
        state_dim = int(inputs["observation.state"]["shape"][0])
        action_dim = int(outputs["action"]["shape"][0])
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as error:
        raise CheckpointError(f"{path}: input_features / output_features: expected VISUAL cameras, "
                              f"observation.state and action with their shapes ({type(error).__name__}: {error})") from None
    if not cameras:
        raise CheckpointError(f"{path}: input_features: no VISUAL feature (SmolVLA needs at least one camera)")
    return cameras, state_dim, action_dim


def parse_config(policy: Mapping[str, Any], backbone: Mapping[str, Any], dtype: str, path: pathlib.Path,
                 backbone_path: pathlib.Path) -> SmolVLAConfig:
    """SmolVLAConfig from the policy's and the backbone's config.json fields (the paths name them in errors)."""
    if policy.get("type") != "smolvla":
        raise CheckpointError(f"{path}: type: expected 'smolvla', got {policy.get('type')!r}")
    policy = {**_POLICY_DEFAULTS, **policy}
    unsupported = {"attention_mode": "cross_attn", "add_image_special_tokens": False, "adapt_to_pi_aloha": False,
                   "use_delta_joint_actions_aloha": False, "use_cache": True}
    for name, supported in unsupported.items():
        if policy[name] != supported:
            raise CheckpointError(f"{path}: {name}={policy[name]!r} is not supported (only {supported!r}, "
                                  "as lerobot/smolvla_base has it)")
    if policy["pad_language_to"] not in ("longest", "max_length"):
        raise CheckpointError(f"{path}: pad_language_to={policy['pad_language_to']!r}: expected 'longest' or 'max_length'")
    try:
        text = {**_TEXT_DEFAULTS, **backbone["text_config"]}
        vision = {**_VISION_DEFAULTS, **backbone["vision_config"]}
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{backbone_path}: missing field {error} (a SmolVLM2 config.json has text_config "
                              "and vision_config)") from None
    if text["hidden_act"] != "silu" or text["attention_bias"] or text["mlp_bias"]:
        raise CheckpointError(f"{backbone_path}: text_config: expected Llama's bias-free silu layers")
    if vision["hidden_act"] != "gelu_pytorch_tanh" or float(vision["layer_norm_eps"]) != 1e-6:
        raise CheckpointError(f"{backbone_path}: vision_config: expected SigLIP's tanh GELU and LayerNorm eps 1e-6")
    width, heads = _field(text, "hidden_size", backbone_path), _field(text, "num_attention_heads", backbone_path)
    kv_heads = int(text["num_key_value_heads"] or heads)
    head_dim = int(text["head_dim"] or width // heads)
    layers = _field(text, "num_hidden_layers", backbone_path)
    num_vlm_layers = _field(policy, "num_vlm_layers", path)
    kept = min(layers, num_vlm_layers) if num_vlm_layers > 0 else layers
    expert_layers = _field(policy, "num_expert_layers", path)
    if expert_layers > 0 and expert_layers != kept:
        raise CheckpointError(f"{path}: num_expert_layers={expert_layers} (an expert layer every "
                              f"{kept // expert_layers} VLM layers) is not supported: only one per kept VLM layer ({kept})")
    period = _field(policy, "self_attn_every_n_layers", path)
    if period < 1 or kept % period:
        raise CheckpointError(f"{path}: self_attn_every_n_layers={period} must be positive and divide the "
                              f"{kept} kept VLM layers")
    llama = dict(num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim, norm_offset=False,
                 norm_eps=float(text["rms_norm_eps"]), activation="silu", rope_theta=ROPE_BASE)
    vlm = GemmaConfig(width=width, depth=kept, mlp_dim=_field(text, "intermediate_size", backbone_path),
                      scale_embedding=True, tied_embedding=False, **llama)
    expert_width = int(width * _field(policy, "expert_width_multiplier", path, float))
    expert = GemmaConfig(width=expert_width, depth=kept, mlp_dim=intermediate_size(expert_width),
                         scale_embedding=False, tied_embedding=False, **llama)
    image_size = _field(vision, "image_size", backbone_path)
    resize = policy["resize_imgs_with_padding"]
    if resize is None or list(resize) != [image_size, image_size]:
        raise CheckpointError(f"{path}: resize_imgs_with_padding={resize!r}: only the vision tower's own size "
                              f"[{image_size}, {image_size}] is supported")
    vit = ViTConfig(width=_field(vision, "hidden_size", backbone_path), depth=_field(vision, "num_hidden_layers", backbone_path),
                    mlp_dim=_field(vision, "intermediate_size", backbone_path),
                    num_heads=_field(vision, "num_attention_heads", backbone_path),
                    patch_size=_field(vision, "patch_size", backbone_path), image_size=image_size)
    cameras, state_dim, action_dim = _features(policy, path)
    config = SmolVLAConfig(
        vision=vit, vlm=vlm, expert=expert, vocab_size=_field(text, "vocab_size", backbone_path),
        scale_factor=_field(backbone, "scale_factor", backbone_path), self_attn_every_n_layers=period, cameras=cameras,
        state_dim=state_dim, action_dim=action_dim, max_state_dim=_field(policy, "max_state_dim", path),
        max_action_dim=_field(policy, "max_action_dim", path), chunk_size=_field(policy, "chunk_size", path),
        num_steps=_field(policy, "num_steps", path), tokenizer_max_length=_field(policy, "tokenizer_max_length", path),
        pad_language_to=policy["pad_language_to"], min_period=_field(policy, "min_period", path, float),
        max_period=_field(policy, "max_period", path, float), dtype=dtype,
    )
    for name in ("chunk_size", "num_steps", "tokenizer_max_length", "max_state_dim", "max_action_dim"):
        if getattr(config, name) < 1:
            raise CheckpointError(f"{path}: {name} must be positive, got {getattr(config, name)}")
    if state_dim > config.max_state_dim or action_dim > config.max_action_dim:
        raise CheckpointError(f"{path}: observation.state ({state_dim}) / action ({action_dim}) are wider than "
                              f"max_state_dim / max_action_dim ({config.max_state_dim} / {config.max_action_dim})")
    if config.vision.num_tokens % config.scale_factor**2 or (image_size // config.vision.patch_size) % config.scale_factor:
        raise CheckpointError(f"{backbone_path}: scale_factor {config.scale_factor} does not divide the "
                              f"{image_size // config.vision.patch_size} x {image_size // config.vision.patch_size} patch grid")
    return config


def intermediate_size(width: int, multiplier: int = 4, multiple_of: int = 256) -> int:
    """The action expert's MLP width (LeRobot's `get_intermediate_size`): 2048 for SmolVLA's 720-wide expert."""
    hidden = int(multiplier * int(2 * width / 3))
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


# -- tensor name map ---------------------------------------------------------------------------------------------

def _vision_sources(config: ViTConfig) -> dict[str, Source]:
    prefix, block = f"{_VLM}.vision_model", "vision/Transformer/encoderblock"
    attention, heads = f"{block}/MultiHeadDotProductAttention_0", config.num_heads

    def per_block(name: str, transform=lambda tensor: tensor) -> Source:
        return Source(tuple((f"{prefix}.encoder.layers.{i}.{name}",) for i in range(config.depth)), transform, stacked=True)

    sources = {
        "vision/embedding/kernel": Source(((f"{prefix}.embeddings.patch_embedding.weight",),), lambda w: w.transpose(2, 3, 1, 0)),
        "vision/embedding/bias": Source(((f"{prefix}.embeddings.patch_embedding.bias",),)),
        "vision/pos_embedding": Source(((f"{prefix}.embeddings.position_embedding.weight",),), lambda w: w[None]),
        "vision/Transformer/encoder_norm/scale": Source(((f"{prefix}.post_layernorm.weight",),)),
        "vision/Transformer/encoder_norm/bias": Source(((f"{prefix}.post_layernorm.bias",),)),
        f"{attention}/out/kernel": per_block("self_attn.out_proj.weight", lambda w: heads_out(w, heads)),
        f"{attention}/out/bias": per_block("self_attn.out_proj.bias"),
    }
    for index, name in ((0, "layer_norm1"), (1, "layer_norm2")):
        sources[f"{block}/LayerNorm_{index}/scale"] = per_block(f"{name}.weight")
        sources[f"{block}/LayerNorm_{index}/bias"] = per_block(f"{name}.bias")
    for index, name in ((0, "fc1"), (1, "fc2")):
        sources[f"{block}/MlpBlock_0/Dense_{index}/kernel"] = per_block(f"mlp.{name}.weight", transposed)
        sources[f"{block}/MlpBlock_0/Dense_{index}/bias"] = per_block(f"mlp.{name}.bias")
    for flax_name, name in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        sources[f"{attention}/{flax_name}/kernel"] = per_block(f"self_attn.{name}.weight", lambda w: heads_in(w, heads))
        sources[f"{attention}/{flax_name}/bias"] = per_block(f"self_attn.{name}.bias", lambda b: b.reshape(heads, -1))
    return sources


def tensor_sources(config: SmolVLAConfig) -> dict[str, Source]:
    """Flat Flax path -> its `Source` in a SmolVLA checkpoint (every tensor is read: the text model's final norm
    and `lm_head` serve `score_options`)."""
    vlm, expert, period = config.vlm, config.expert, config.self_attn_every_n_layers
    sources = {
        **_vision_sources(config.vision),
        "connector/kernel": Source(((f"{_VLM}.connector.modality_projection.proj.weight",),), transposed),
        "vlm/embedder/input_embedding": Source(((f"{_VLM}.text_model.embed_tokens.weight",),)),
        "vlm/embedder/lm_head": Source((("model.vlm_with_expert.vlm.lm_head.weight",),)),
        "vlm/final_norm/scale": Source(((f"{_VLM}.text_model.norm.weight",),)),
        **llama_layer_sources(f"{_VLM}.text_model.layers", "vlm/layers", range(vlm.depth), vlm.num_heads, vlm.num_kv_heads),
        "expert/final_norm/scale": Source(((f"{_EXPERT}.norm.weight",),)),
    }
    for offset in range(period):  # expert layer `group * period + offset` of each period
        name = "self_attn" if offset == 0 else f"cross_attn_{offset - 1}"
        layers = range(offset, expert.depth, period)
        sources.update(llama_layer_sources(f"{_EXPERT}.layers", f"expert/layers/{name}", layers, expert.num_heads,
                                           expert.num_kv_heads))
    for name in ACTION_HEAD:
        sources[f"{name}/kernel"] = Source(((f"model.{name}.weight",),), transposed)
        sources[f"{name}/bias"] = Source(((f"model.{name}.bias",),))
    return sources


def tensor_shapes(config: SmolVLAConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a SmolVLA checkpoint with `config` (name -> shape), as lerobot/smolvla_base stores them."""
    vision, vlm, expert = config.vision, config.vlm, config.expert
    width, patch, prefix = vision.width, vision.patch_size, f"{_VLM}.vision_model"
    shapes = {f"{prefix}.embeddings.patch_embedding.weight": (width, 3, patch, patch),
              f"{prefix}.embeddings.patch_embedding.bias": (width,),
              f"{prefix}.embeddings.position_embedding.weight": (vision.num_tokens, width),
              f"{prefix}.post_layernorm.weight": (width,), f"{prefix}.post_layernorm.bias": (width,)}
    block = {"layer_norm1.weight": (width,), "layer_norm1.bias": (width,), "layer_norm2.weight": (width,),
             "layer_norm2.bias": (width,), "mlp.fc1.weight": (vision.mlp_dim, width), "mlp.fc1.bias": (vision.mlp_dim,),
             "mlp.fc2.weight": (width, vision.mlp_dim), "mlp.fc2.bias": (width,)}
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        block |= {f"self_attn.{name}.weight": (width, width), f"self_attn.{name}.bias": (width,)}
    for index in range(vision.depth):
        shapes |= {f"{prefix}.encoder.layers.{index}.{name}": shape for name, shape in block.items()}
    shapes[f"{_VLM}.connector.modality_projection.proj.weight"] = (vlm.width, width * config.scale_factor**2)
    shapes[f"{_VLM}.text_model.embed_tokens.weight"] = (config.vocab_size, vlm.width)
    shapes["model.vlm_with_expert.vlm.lm_head.weight"] = (config.vocab_size, vlm.width)
    shapes[f"{_VLM}.text_model.norm.weight"] = (vlm.width,)
    for index in range(vlm.depth):
        shapes |= layer_shapes(f"{_VLM}.text_model.layers.{index}", vlm, vlm.width)
    vlm_kv = vlm.num_kv_heads * vlm.head_dim
    for index in range(expert.depth):
        kv_input = expert.width if config.layer_kind(index) == "self_attn" else vlm_kv
        shapes |= layer_shapes(f"{_EXPERT}.layers.{index}", expert, kv_input)
    shapes[f"{_EXPERT}.norm.weight"] = (expert.width,)
    head = {"state_proj": (vlm.width, config.max_state_dim), "action_in_proj": (expert.width, config.max_action_dim),
            "action_out_proj": (config.max_action_dim, expert.width),
            "action_time_mlp_in": (expert.width, 2 * expert.width), "action_time_mlp_out": (expert.width, expert.width)}
    for name, shape in head.items():
        shapes |= {f"model.{name}.weight": shape, f"model.{name}.bias": (shape[0],)}
    return shapes


# -- processor statistics ------------------------------------------------------------------------------------------

def _normalizer_step(directory: pathlib.Path, file: str, registry_name: str) -> tuple[pathlib.Path, dict[str, Any]] | None:
    """(statistics file, step config) of the pipeline file's normalizer step, or None without a pipeline file."""
    path = directory / file
    if not path.exists():
        return None
    steps = read_json(path).get("steps")
    if not isinstance(steps, list):
        raise CheckpointError(f"{path}: steps: expected a list of processor steps")
    found = [step for step in steps if isinstance(step, dict) and step.get("registry_name") == registry_name]
    if len(found) != 1 or "state_file" not in found[0]:
        raise CheckpointError(f"{path}: expected one {registry_name!r} step with a state_file, found {len(found)}")
    return directory / str(found[0]["state_file"]), found[0].get("config", {})


def read_norm_stats(directory: str | pathlib.Path, config: SmolVLAConfig) -> dict[str, dict[str, np.ndarray]]:
    """The mean/std SmolVLA's processors normalize the state and unnormalize the actions with, in openpi's layout
    (`{"state": {"mean", "std"}, "actions": {"mean", "std"}}`, float32): the state's from `policy_preprocessor.json`'s
    normalizer, the actions' from `policy_postprocessor.json`'s unnormalizer.

    An entry is absent when the checkpoint has no statistics for it (lerobot/smolvla_base keeps its statistics only
    under robot-specific keys, which LeRobot then silently skips): whoever needs them refuses then, naming the files.
    Modes other than MEAN_STD (and IDENTITY for the state) are refused; so are statistics whose width is not the
    feature's. A feature the step does not list is left as it is, by LeRobot as here (IDENTITY).
    """
    directory = pathlib.Path(directory)
    stats: dict[str, dict[str, np.ndarray]] = {}
    wanted = (("state", PREPROCESSOR_FILE, "normalizer_processor", "observation.state", "STATE", config.state_dim),
              ("actions", POSTPROCESSOR_FILE, "unnormalizer_processor", "action", "ACTION", config.action_dim))
    for name, file, registry_name, key, feature_type, dims in wanted:
        step = _normalizer_step(directory, file, registry_name)
        if step is None:
            continue
        stats_file, step_config = step
        mode = step_config.get("norm_map", {}).get(feature_type, "MEAN_STD")
        if key not in (step_config.get("features") or {}):
            mode = "IDENTITY"  # LeRobot normalizes only the features its step lists
        if mode == "IDENTITY" and name == "actions":
            raise CheckpointError(f"{directory / file}: the unnormalizer leaves {key} as the policy emits it (norm_map."
                                  f"{feature_type} IDENTITY or {key} not among its features): actions in the data's units "
                                  "are not supported (they would be unnormalized again)")
        if mode == "IDENTITY":
            continue
        if mode != "MEAN_STD":
            raise CheckpointError(f"{directory / file}: norm_map.{feature_type}={mode!r}: only MEAN_STD (and IDENTITY) "
                                  "is supported")
        if float(step_config.get("eps", 1e-8)) != 1e-8:
            raise CheckpointError(f"{directory / file}: eps={step_config['eps']!r}: only LeRobot's default 1e-8 is supported")
        try:
            with safe_open(stats_file, framework="numpy") as handle:
                tensors = {field: handle.get_tensor(f"{key}.{field}") for field in ("mean", "std")
                           if f"{key}.{field}" in handle.keys()}
        except Exception as error:  # safetensors raises its own SafetensorError, OSError, ...
            raise CheckpointError(f"{stats_file}: unreadable statistics ({type(error).__name__}: {error})") from None
        if not tensors:
            continue
        if set(tensors) != {"mean", "std"}:
            raise CheckpointError(f"{stats_file}: has {key}.{next(iter(tensors))} but not both {key}.mean and {key}.std")
        for field, tensor in tensors.items():
            if tensor.shape != (dims,) or not np.isfinite(tensor).all():
                raise CheckpointError(f"{stats_file}: {key}.{field} must be {dims} finite values (the feature's "
                                      f"shape in config.json), got shape {tensor.shape}")
        problem = domains.ordered_stats_problem(tensors)
        if problem is not None:
            raise CheckpointError(f"{stats_file}: {key}: {problem}")
        stats[name] = {field: tensor.astype(np.float32) for field, tensor in tensors.items()}
    return stats


# -- tokenizer -----------------------------------------------------------------------------------------------------

class SmolVLATokenizer:
    """The backbone's `tokenizer.json` as LeRobot's `TokenizerProcessorStep` uses it: the task with a newline
    appended (`NewLineTaskProcessorStep`), the tokenizer's own special tokens (its post-processor; SmolVLM2's adds
    none), truncated to `max_length` on the `truncation_side` of `tokenizer_config.json`, right-padded with its
    `pad_token` to `max_length` or to the batch's longest row (`pad_language_to`)."""

    def __init__(self, directory: str | pathlib.Path, max_length: int, padding: str):
        directory = pathlib.Path(directory)
        self.path = directory / TOKENIZER_FILE
        try:
            self.tokenizer = tokenizers.Tokenizer.from_file(str(self.path))
        except Exception as error:  # tokenizers raises a bare Exception for a malformed file
            raise CheckpointError(f"{self.path}: not a tokenizers JSON file ({error})") from None
        settings = read_json(directory / TOKENIZER_CONFIG_FILE)
        self.pad_id = self._token_id(settings, "pad_token", directory)
        self.eos_id = self._token_id(settings, "eos_token", directory)
        self.truncation_side = settings.get("truncation_side", "right")
        self.max_length, self.padding = max_length, padding

    def _token_id(self, settings: Mapping[str, Any], field: str, directory: pathlib.Path) -> int:
        token = settings.get(field)
        token = token.get("content") if isinstance(token, dict) else token
        token_id = None if token is None else self.tokenizer.token_to_id(str(token))
        if token_id is None:
            raise CheckpointError(f"{directory / TOKENIZER_CONFIG_FILE}: {field}={token!r} is not a token of {self.path}")
        return token_id

    def encode(self, text: str) -> list[int]:
        """The ids of `text` with the tokenizer's own special tokens, truncated to `max_length`."""
        ids = self.tokenizer.encode(text).ids
        if len(ids) <= self.max_length:
            return ids
        return ids[-self.max_length:] if self.truncation_side == "left" else ids[: self.max_length]

    def encode_continuation(self, text: str) -> list[int]:
        """The ids of `text` alone (no special tokens): an answer `score_options` scores after a prompt."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    def task_lengths(self, tasks: Sequence[str]) -> np.ndarray:
        """Each task's length in tokens as `tokenize_tasks` encodes it, before the cut at `max_length`."""
        return np.array([len(self.tokenizer.encode(_task_text(task)).ids) for task in tasks])

    def tokenize_tasks(self, tasks: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Tasks -> (ids int32 `[b, L]`, mask bool `[b, L]`), each task ending in one newline as LeRobot makes it."""
        rows = [self.encode(_task_text(task)) for task in tasks]
        length = self.max_length if self.padding == "max_length" else max(len(row) for row in rows)
        ids = np.full((len(rows), length), self.pad_id, np.int32)
        mask = np.zeros((len(rows), length), bool)
        for index, row in enumerate(rows):
            ids[index, : len(row)], mask[index, : len(row)] = row, True
        return ids, mask


def _task_text(task: str) -> str:
    """A task as LeRobot's `NewLineTaskProcessorStep` hands it to the tokenizer: ending in one newline."""
    return task if task.endswith("\n") else f"{task}\n"


# -- writing the layout (demo checkpoints, benchmarks) ------------------------------------------------------------

# SmolVLM2's added tokens after its 49152 BPE ids, in its order (the fixture's tiny tokenizer keeps the layout).
_ADDED_TOKENS = ("<global-img>", *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
                 "<fake_token_around_image>", "<image>", *(f"<|reserved_special_token_{i}|>" for i in range(88)),
                 "<end_of_utterance>")
_BASE_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def write_tokenizer(directory: pathlib.Path, corpus: Sequence[str], vocab_size: int) -> None:
    """A byte-level BPE laid out like SmolVLM2's (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>` = 0, 1, 2, BPE
    merges trained on `corpus`, then its 128 added tokens at the end of `vocab_size`), with the `tokenizer_config.json`
    fields SmolVLA and transformers read (pad `<|im_end|>`, left truncation)."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers

    tokenizer = tokenizers.Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                       pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer.decoder = decoders.ByteLevel()
    base = vocab_size - len(_ADDED_TOKENS)
    trainer = trainers.BpeTrainer(vocab_size=base, min_frequency=1, show_progress=False, special_tokens=list(_BASE_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(list(corpus) * 4, trainer=trainer)
    # A small corpus learns fewer merges: unused tokens fill the rest, so the added tokens sit at their places.
    unused = [f"<|unused_{index}|>" for index in range(base - tokenizer.get_vocab_size())]
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in (*unused, *_ADDED_TOKENS)])
    tokenizer.save(str(directory / TOKENIZER_FILE))
    special = {"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>", "pad_token": "<|im_end|>",
               "unk_token": "<|endoftext|>", "additional_special_tokens": ["<fake_token_around_image>", "<image>",
                                                                           "<end_of_utterance>"]}
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    (directory / TOKENIZER_CONFIG_FILE).write_text(json.dumps({
        **special, "tokenizer_class": "PreTrainedTokenizerFast", "truncation_side": "left", "model_max_length": 8192,
        "fake_image_token": "<fake_token_around_image>", "global_image_token": "<global-img>", "image_token": "<image>",
        "end_of_utterance_token": "<end_of_utterance>",
        "extra_special_tokens": {"fake_image_token": "<fake_token_around_image>", "global_image_token": "<global-img>",
                                 "image_token": "<image>", "end_of_utterance_token": "<end_of_utterance>"},
    }, indent=2))


def _random_tensor(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Weights with O(1) activations (the fixture's rule): matrices N(0, 1/fan_in) (embeddings N(0, 1)), norm
    scales 1 + 0.1 N(0, 1), biases 0.1 N(0, 1)."""
    if len(shape) >= 2:
        scale = 1.0 if "embed_tokens" in name or "position_embedding" in name else math.prod(shape[1:]) ** -0.5
        return (rng.standard_normal(shape, np.float32) * scale).astype(np.float32)
    offset = 1.0 if name.endswith(".weight") else 0.0
    return (offset + 0.1 * rng.standard_normal(shape, np.float32)).astype(np.float32)


def _processor_file(directory: pathlib.Path, name: str, registry_name: str, step: int,
                    stats: Mapping[str, np.ndarray], features: Mapping[str, Any]) -> None:
    """A processor pipeline file with one (un)normalizer step (LeRobot's layout) and its statistics."""
    from safetensors.numpy import save_file

    state_file = f"{name}_step_{step}_{registry_name}.safetensors"
    save_file({key: np.asarray(value, np.float32) for key, value in stats.items()}, directory / state_file)
    norm_map = {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    steps = [{"registry_name": registry_name, "config": {"eps": 1e-8, "features": features, "norm_map": norm_map},
              "state_file": state_file}]
    (directory / f"{name}.json").write_text(json.dumps({"name": name, "steps": steps}, indent=2))


def write_checkpoint(directory: str | pathlib.Path, name: str, *, seed: int = 0, backbone: str = "smolvlm2",
                     stats: Mapping[str, Mapping[str, np.ndarray]] | None = None, corpus: Sequence[str] = (),
                     tokenizer_vocab: int | None = None) -> pathlib.Path:
    """A random SmolVLA of `NAMED_CONFIGS[name]` in LeRobot's layout: `<directory>/config.json`, `model.safetensors`,
    the processor pipeline files with `stats` (`{"observation.state", "action": {"mean", "std"}}`, identity when
    None), and the backbone folder `<directory>/../<backbone>` (its config.json and a tokenizer trained on `corpus`)
    that `vlm_model_name` names; the tokenizer has the config's vocabulary size unless `tokenizer_vocab` is given (a
    full-size checkpoint's benchmark needs no 49280-token tokenizer). LeRobot's `SmolVLAPolicy.from_pretrained` loads
    it too (given the backbone's path). Returns the policy directory."""
    from multinet_jax.weights.safetensors import save_checkpoint

    policy_fields, backbone_fields = NAMED_CONFIGS[name]
    directory = pathlib.Path(directory)
    backbone_dir = directory.resolve().parent / backbone
    backbone_dir.mkdir(parents=True, exist_ok=True)
    config = named_config(name)
    (backbone_dir / CONFIG_FILE).write_text(json.dumps({
        **backbone_fields, "architectures": ["SmolVLMForConditionalGeneration"], "torch_dtype": "float32",
        "text_config": {**backbone_fields["text_config"], "architectures": ["VLlama3ForCausalLM"]},
    }, indent=2))
    write_tokenizer(backbone_dir, corpus or ["pick up the red cube and place it on the left tile"],
                    tokenizer_vocab or config.vocab_size)
    (backbone_dir / "processor_config.json").write_text(json.dumps({"image_seq_len": config.image_tokens,
                                                                    "processor_class": "SmolVLMProcessor"}))
    (backbone_dir / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "SmolVLMImageProcessor", "processor_class": "SmolVLMProcessor", "do_image_splitting": False,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 1, "rescale_factor": 1 / 255,
        "size": {"longest_edge": config.vision.image_size}, "max_image_size": {"longest_edge": config.vision.image_size},
    }))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps({**policy_fields, "vlm_model_name": backbone, "device": "cpu",
                                                     "push_to_hub": False, "load_vlm_weights": False}, indent=2))
    rng = np.random.default_rng(seed)
    save_checkpoint({name: _random_tensor(name, shape, rng) for name, shape in sorted(tensor_shapes(config).items())},
                    directory)
    if stats is None:
        stats = {"observation.state": {"mean": np.zeros(config.state_dim), "std": np.ones(config.state_dim)},
                 "action": {"mean": np.zeros(config.action_dim), "std": np.ones(config.action_dim)}}
    flat = {f"{key}.{field}": value for key, fields in stats.items() for field, value in fields.items()}
    features = {key: value for key, value in policy_fields["input_features"].items()} | policy_fields["output_features"]
    _processor_file(directory, "policy_preprocessor", "normalizer_processor", 0, flat, features)
    _processor_file(directory, "policy_postprocessor", "unnormalizer_processor", 0, flat, {"action": features["action"]})
    return directory


def write_random(directory: pathlib.Path, config_name: str, *, corpus: Sequence[str], seed: int, scale: float) -> pathlib.Path:
    """The registry's random checkpoint (the demo's): `write_checkpoint` with identity statistics; `scale` is not
    used (the weights follow the fixture's O(1)-activation rule, `_random_tensor`)."""
    del scale
    directory = pathlib.Path(directory)
    return write_checkpoint(directory, config_name, seed=seed, corpus=corpus, backbone=f"{directory.name}_smolvlm2")
