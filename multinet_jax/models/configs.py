"""Model configurations: Gemma/SigLIP variants, Pi0 / Pi0.5 and Pi0-FAST configs, and inference from parameter shapes.

openpi checkpoints store parameters only, never the config that built them, so `infer_config` recovers every
architectural size from the parameter shapes. What the shapes cannot tell (action horizon, max token length and, for
Pi0-FAST, the action dimension) defaults to openpi's values and can be overridden.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

import jax

DType = Literal["float32", "bfloat16"]

PALIGEMMA_VOCAB_SIZE = 257_152
Config = TypeVar("Config")


def shapes_once_per_config(param_shapes: Callable[[Config], Any]) -> Callable[[Config], Any]:
    """A family's `param_shapes(config)`, traced once per config (configs are frozen, hashable dataclasses): tracing a
    model's init under `jax.eval_shape` takes 1-2 s even at tiny size, and loading, the demo and the benchmarks ask
    again for the same config. Each call returns a new tree of the same (immutable) ShapeDtypeStructs."""
    traced = functools.cache(lambda config: jax.tree.flatten(param_shapes(config)))

    @functools.wraps(param_shapes)
    def cached(config: Config) -> Any:
        leaves, treedef = traced(config)
        return jax.tree.unflatten(treedef, leaves)

    return cached


def check_positive(config: Any, names: tuple[str, ...]) -> None:
    """Sizes a model cannot have zero or fewer of (an action horizon of 0 would sample nothing, silently)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{type(config).__name__}.{name} must be a positive integer, got {value!r}")


@dataclasses.dataclass(frozen=True)
class GemmaConfig:
    """One Gemma expert. All experts of a mixture share depth, heads and head_dim (joint attention)."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    # Switches between the decoder-LM families (defaults: Gemma; `LLAMA_SWITCHES` for OpenVLA's Llama-2).
    norm_offset: bool = True  # RMSNorm multiplies by (1 + scale) (Gemma) or by scale (Llama)
    norm_eps: float = 1e-6
    activation: Literal["gelu_tanh", "silu"] = "gelu_tanh"  # of the gated MLP
    scale_embedding: bool = True  # token embeddings times sqrt(width) (Gemma)
    tied_embedding: bool = True  # logits from the input embedding (Gemma) or a separate `lm_head` (Llama)
    rope_theta: float = 10_000.0

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """A ViT (big_vision layout): square patches, learned position embedding, no pooling. The defaults are
    openpi's SigLIP; the switches give timm's DINOv2 (registers, LayerScale, erf GELU) for OpenVLA (`models/vit.py`)."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: int = 14
    image_size: int = 224
    class_token: bool = False
    num_registers: int = 0
    layer_scale: bool = False
    exact_gelu: bool = False
    final_norm: bool = True

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


SiglipConfig = ViTConfig  # openpi's name for its (only) ViT


GEMMA_2B = GemmaConfig(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256)
GEMMA_300M = GemmaConfig(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256)
# openpi's "dummy" variant (used for both experts in the benchmark config).
GEMMA_DUMMY = GemmaConfig(width=64, depth=4, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16)
# The golden fixtures' tiny experts (`../shared/openpi_reference/*/README.json`).
GEMMA_TINY = GemmaConfig(width=64, depth=3, mlp_dim=128, num_heads=4, num_kv_heads=1, head_dim=16)
GEMMA_TINY_EXPERT = GemmaConfig(width=32, depth=3, mlp_dim=48, num_heads=4, num_kv_heads=1, head_dim=16)

SIGLIP_SO400M = SiglipConfig(width=1152, depth=27, mlp_dim=4304, num_heads=16)
SIGLIP_TINY = SiglipConfig(width=48, depth=2, mlp_dim=96, num_heads=3)


@dataclasses.dataclass(frozen=True)
class Pi0Config:
    """Pi0: PaliGemma (SigLIP + Gemma expert 0) plus the action expert (Gemma expert 1) and flow-matching head.

    `pi05=True` is openpi's Pi0.5 (`Pi0Config(pi05=True)`): the action expert's RMSNorms are adaptive (scale, shift
    and gate from the flow time through `time_mlp_in` / `time_mlp_out`), the suffix holds only the action tokens,
    and the state enters the prompt as discretized text (openpi's `max_token_len` is 200 then), unless
    `discrete_state_input=False` (openpi's pi05_libero): then the prompt is Pi0's and the model sees no state at all.
    `discrete_state_input` defaults to `pi05`, as openpi's `Pi0Config.__post_init__` sets it.
    """

    paligemma: GemmaConfig = GEMMA_2B
    action_expert: GemmaConfig = GEMMA_300M
    siglip: SiglipConfig = SIGLIP_SO400M
    vocab_size: int = PALIGEMMA_VOCAB_SIZE
    action_dim: int = 32
    action_horizon: int = 50
    max_token_len: int = 48
    dtype: DType = "float32"
    pi05: bool = False
    discrete_state_input: bool | None = None

    def __post_init__(self) -> None:
        if self.discrete_state_input is None:
            object.__setattr__(self, "discrete_state_input", self.pi05)
        if self.discrete_state_input and not self.pi05:
            raise ValueError("discrete_state_input=True is Pi0.5's prompt format: Pi0 reads its state through state_proj")
        a, b = self.paligemma, self.action_expert
        if (a.depth, a.num_heads, a.num_kv_heads, a.head_dim) != (b.depth, b.num_heads, b.num_kv_heads, b.head_dim):
            raise ValueError(f"experts must share depth/heads/head_dim for joint attention: {a} vs {b}")
        check_positive(self, ("action_dim", "action_horizon", "max_token_len", "vocab_size"))

    @property
    def experts(self) -> tuple[GemmaConfig, GemmaConfig]:
        return (self.paligemma, self.action_expert)

    @property
    def adaptive_norms(self) -> tuple[bool, bool]:
        """Per expert: whether its RMSNorms are adaRMSNorms conditioned on the flow time (Pi0.5's action expert)."""
        return (False, self.pi05)


@dataclasses.dataclass(frozen=True)
class PaliGemmaConfig:
    """PaliGemma alone (SigLIP + one Gemma expert), as big_vision's `pt_224.npz` holds it: text only, no action head."""

    paligemma: GemmaConfig = GEMMA_2B
    siglip: SiglipConfig = SIGLIP_SO400M
    vocab_size: int = PALIGEMMA_VOCAB_SIZE
    max_token_len: int = 48
    dtype: DType = "float32"

    def __post_init__(self) -> None:
        check_positive(self, ("max_token_len", "vocab_size"))

    @property
    def experts(self) -> tuple[GemmaConfig]:
        return (self.paligemma,)

    @property
    def adaptive_norms(self) -> tuple[bool]:
        return (False,)


@dataclasses.dataclass(frozen=True)
class Pi0FastConfig(PaliGemmaConfig):
    """Pi0-FAST: PaliGemma's architecture, decoding FAST action tokens autoregressively."""

    max_token_len: int = 250  # openpi's Pi0FASTConfig default (PI0_FAST_MAX_TOKEN_LEN, what a checkpoint is read with)
    action_dim: int = 32
    action_horizon: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, ("action_dim", "action_horizon"))


ModelConfig = Pi0Config | Pi0FastConfig | PaliGemmaConfig


def family_name(config: ModelConfig) -> str:
    """The family a config belongs to (what `eval --model` names): "pi0", "pi05", "pi0_fast" or "paligemma"."""
    if isinstance(config, Pi0FastConfig):
        return "pi0_fast"
    if isinstance(config, PaliGemmaConfig):
        return "paligemma"
    return "pi05" if config.pi05 else "pi0"


# openpi's Pi0.5 default prompt length (the discretized state makes prompts longer than Pi0's 48).
PI05_MAX_TOKEN_LEN = 200
# openpi's Pi0-FAST prompt length, where its data config cuts the FAST prompt (`FASTTokenizer(model_config.max_token_len)`).
PI0_FAST_MAX_TOKEN_LEN = 250

NAMED_CONFIGS: dict[str, ModelConfig] = {
    "pi0_tiny": Pi0Config(GEMMA_TINY, GEMMA_TINY_EXPERT, SIGLIP_TINY, vocab_size=1024, max_token_len=48),
    "pi0_fast_tiny": Pi0FastConfig(
        GEMMA_TINY, SIGLIP_TINY, vocab_size=1024, action_dim=8, action_horizon=10, max_token_len=64
    ),
    "paligemma_tiny": PaliGemmaConfig(GEMMA_TINY, SIGLIP_TINY, vocab_size=1024),
    "pi05_tiny": Pi0Config(
        GEMMA_TINY, GEMMA_TINY_EXPERT, SIGLIP_TINY, vocab_size=1024, max_token_len=PI05_MAX_TOKEN_LEN, pi05=True
    ),
    "pi0_full": Pi0Config(),
    "pi05_full": Pi0Config(max_token_len=PI05_MAX_TOKEN_LEN, pi05=True),
    "pi0_fast_full": Pi0FastConfig(),
    "pi0_dummy_gemma_so400m": Pi0Config(GEMMA_DUMMY, GEMMA_DUMMY, SIGLIP_SO400M),
    "pi05_dummy_gemma_so400m": Pi0Config(GEMMA_DUMMY, GEMMA_DUMMY, SIGLIP_SO400M, max_token_len=PI05_MAX_TOKEN_LEN, pi05=True),
}


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """A named config (`NAMED_CONFIGS`), with optional field overrides such as `dtype="bfloat16"`."""
    if name not in NAMED_CONFIGS:
        raise KeyError(f"unknown model config {name!r}; known: {sorted(NAMED_CONFIGS)}")
    return dataclasses.replace(NAMED_CONFIGS[name], **overrides)


def flatten_shapes(tree: Mapping[str, Any], prefix: str = "") -> dict[str, tuple[int, ...]]:
    """`{"a": {"b": array}}` -> `{"a/b": shape}`; leaves may be arrays, ShapeDtypeStructs or shape tuples."""
    flat: dict[str, tuple[int, ...]] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_shapes(value, f"{path}/"))
        else:
            flat[path] = tuple(value) if isinstance(value, tuple) else tuple(jax.numpy.shape(value))
    return flat


_LLM = "PaliGemma/llm"
_PI0_ACTION_HEAD = ("state_proj", "action_in_proj", "action_time_mlp_in", "action_time_mlp_out", "action_out_proj")
_PI05_ACTION_HEAD = ("action_in_proj", "time_mlp_in", "time_mlp_out", "action_out_proj")
_IMG = "PaliGemma/img"


def _gemma_from_shapes(shapes: Mapping[str, tuple[int, ...]], suffix: str) -> GemmaConfig:
    depth, num_heads, width, head_dim = shapes[f"{_LLM}/layers/attn/q_einsum{suffix}/w"]
    num_kv_heads = shapes[f"{_LLM}/layers/attn/kv_einsum{suffix}/w"][2]
    mlp_dim = shapes[f"{_LLM}/layers/mlp{suffix}/linear"][1]
    return GemmaConfig(width, depth, mlp_dim, num_heads, num_kv_heads, head_dim)


def _siglip_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> SiglipConfig:
    patch, _, _, width = shapes[f"{_IMG}/embedding/kernel"]
    num_tokens = shapes[f"{_IMG}/pos_embedding"][1]
    block = f"{_IMG}/Transformer/encoderblock"
    depth, _, mlp_dim = shapes[f"{block}/MlpBlock_0/Dense_0/kernel"]
    num_heads = shapes[f"{block}/MultiHeadDotProductAttention_0/query/kernel"][2]
    return SiglipConfig(width, depth, mlp_dim, num_heads, patch, math.isqrt(num_tokens) * patch)


def infer_config(param_shapes: Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """Pi0Config (Pi0 or Pi0.5) or Pi0FastConfig from a checkpoint's parameter shapes (flat `a/b/c` or nested).

    Pi0 is recognised by the action expert (`*_1`) and its action head, Pi0.5 by `time_mlp_in` in that head
    (adaRMSNorm time conditioning); PaliGemma alone is Pi0-FAST. `overrides` set what shapes cannot tell
    (action_horizon, max_token_len, dtype; action_dim for FAST).
    """
    shapes = {path.removesuffix("/value"): shape for path, shape in flatten_shapes(param_shapes).items()}
    needed = (f"{_LLM}/embedder/input_embedding", f"{_LLM}/layers/attn/q_einsum/w", f"{_IMG}/embedding/kernel")
    missing = [path for path in needed if path not in shapes]
    if missing:
        raise ValueError(f"not a Pi0/Pi0.5/Pi0-FAST checkpoint: missing {missing} (have e.g. {sorted(shapes)[:5]})")
    has_expert = f"{_LLM}/layers/attn/q_einsum_1/w" in shapes
    pi05 = "time_mlp_in/kernel" in shapes
    action_paths = _PI05_ACTION_HEAD if pi05 else _PI0_ACTION_HEAD
    has_action_head = [f"{path}/kernel" in shapes for path in action_paths]
    if has_expert != all(has_action_head) or any(has_action_head) != all(has_action_head):
        name = "Pi0.5" if pi05 else "Pi0"
        raise ValueError(
            f"not a Pi0/Pi0.5/Pi0-FAST checkpoint: a {name} needs both the action expert (`*_1`) and "
            f"{list(action_paths)}; expert present={has_expert}, "
            f"head present={dict(zip(action_paths, has_action_head))}"
        )
    vocab_size = shapes[f"{_LLM}/embedder/input_embedding"][0]
    common = dict(paligemma=_gemma_from_shapes(shapes, ""), siglip=_siglip_from_shapes(shapes), vocab_size=vocab_size)
    if has_expert:
        action_dim = shapes["action_in_proj/kernel"][0]
        if overrides.setdefault("action_dim", action_dim) != action_dim:
            raise ValueError(
                f"action_dim={overrides['action_dim']!r} but this Pi0 checkpoint's action projections have "
                f"action_dim {action_dim} (leave it out, or pass {action_dim})"
            )
        if pi05:
            overrides = {"max_token_len": PI05_MAX_TOKEN_LEN, **overrides}
        expert = _gemma_from_shapes(shapes, "_1")
        return Pi0Config(action_expert=expert, pi05=pi05, **common, **overrides)
    return Pi0FastConfig(**common, **{"max_token_len": PI0_FAST_MAX_TOKEN_LEN, **overrides})


def infer_paligemma_config(param_shapes: Mapping[str, Any], **overrides: Any) -> PaliGemmaConfig:
    """PaliGemmaConfig from the shapes of a PaliGemma-only tree (`PaliGemma/{img,llm}/...`, no action expert);
    `overrides`: max_token_len, dtype."""
    config = infer_config(param_shapes)
    if not isinstance(config, Pi0FastConfig):
        raise ValueError("not a PaliGemma checkpoint: it holds an action expert (`*_1`) and a Pi0 action head")
    return PaliGemmaConfig(config.paligemma, config.siglip, config.vocab_size, **overrides)
