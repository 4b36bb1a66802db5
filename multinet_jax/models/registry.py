"""The model families and the checkpoint formats they come in; `load_model` and the evaluator ask here and nowhere else.

Two words, used the same way everywhere:
- a *family* is what `eval --model` names (pi0, pi05, pi0_fast, openvla, magma, paligemma, smolvla): one kind of
  model and what the evaluator must know about it before loading one (`Family`: its capabilities, the assets and
  flags it reads, its demo config). Everything the evaluator needs after loading is a member of the loaded `interface.Model`.
- a *checkpoint format* is how a publisher stores models (openpi's orbax tree, a Hugging Face safetensors
  directory, a big_vision npz): a cheap test on a checkpoint's files and headers, which family it holds, and how
  to load it, build one from parameters, or write a random one (`CheckpointFormat`). One format may hold several
  families (openpi: Pi0, Pi0.5, Pi0-FAST).

This module imports no JAX: hooks are `"module:function"` names imported when called, so the CLI lists the families
while parsing flags.

Adding a family (e.g. `magma`, stored as a Hugging Face directory) touches these files and no evaluator module:
1. `models/<family>.py`: the Flax module and the loaded model, a class implementing every member of
   `interface.Model` (a capability it lacks raises ValueError naming it, as PaliGemma's `predict_actions` does);
   a new checkpoint format also gets its module here (`models/<family>_checkpoint.py`: recognize, read the config,
   map tensor names, load, build, write a random one; the tensor reading itself is `weights/`'s).
2. this file: a `register_format(...)` for a new format, and one `register_family(...)` line.
3. `models/configs.py` or the family's checkpoint module: its named configs (full size, and the tiny one the demo
   and the benchmarks' dry run build).
4. `benchmarks/suite.py`: one `MODELS` line; `flags/`: its demo flagfile; `assets.py`: its published names.
`tests/test_models_interface.py` checks that no evaluator module names a registered family.
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from multinet_jax import assets, domains

if TYPE_CHECKING:
    from jax.sharding import Mesh

    from multinet_jax.models.interface import Model

DTYPES = ("float32", "bfloat16")
# Action decodings: flow matching (`--num_flow_steps` applies) or tokens (`--max_decoding_steps` applies).
ACTION_DECODINGS = ("flow", "tokens")
# How a family's normalized actions become the data's units (`domains.ActionNorm`): openpi's z-score rule (Pi0),
# LeRobot's (SmolVLA: the same without openpi's epsilon), openpi's quantile rule (Pi0.5, Pi0-FAST: openpi's data
# configs set `use_quantile_norm=model_type != PI0`), or OpenVLA's bounds rule (OpenVLA, Magma).
ACTION_NORMALIZATIONS = ("mean_std", "lerobot_mean_std", "openpi_quantiles", "quantiles")
# The rules that read a mean and a std (the others read quantiles).
MEAN_STD_NORMALIZATIONS = ("mean_std", "lerobot_mean_std")
# Load-time settings a family may take (the `eval` flags of the same names): what its parameter shapes cannot tell.
CONFIG_OVERRIDES = ("action_horizon", "action_dim")
# The flag that picks a checkpoint's statistics when it holds several: openpi's assets dir or OpenVLA's dataset key.
NORM_STATS_FLAGS = ("asset_id", "unnorm_key")
# What a checkpoint's actions are (`ActionFrame.kind`): end-effector deltas (what Act2Answer's action probe reads),
# joint positions or velocities, end-effector deltas less the state (a policy adds the state back), or not named.
# Act2Answer's action probe reads only "ee_delta" (the first three dims are end-effector translation deltas, as
# Bridge / WidowX policies emit); any other frame gets the text probe only.
ACTION_FRAMES = ("ee_delta", "joint_position", "joint_velocity", "state_relative", "unnamed")


@dataclasses.dataclass(frozen=True)
class ActionFrame:
    """A checkpoint's action frame and where it was read (a file and field), so a refusal can name both."""

    kind: str  # of ACTION_FRAMES
    source: str

    def __post_init__(self) -> None:
        if self.kind not in ACTION_FRAMES:
            raise ValueError(f"action frame {self.kind!r}: expected one of {ACTION_FRAMES}")


def fixed_frame(kind: str, source: str) -> Callable[[str | None, str | None], ActionFrame]:
    """`Family.action_frame` of a family whose checkpoints all act in one frame, whichever statistics are picked,
    `source` saying why (an in-memory model's too)."""
    frame = ActionFrame(kind, source)
    return lambda checkpoint, stats_key: frame


def hook(target: str) -> Callable[..., Any]:
    """`"package.module:function"` -> a function that imports the module when first called."""
    module, name = target.split(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = target
    return call


@dataclasses.dataclass(frozen=True)
class CheckpointFormat:
    """One way checkpoints are stored, and the hooks that read and write one."""

    name: str
    description: str
    recognizes: Callable[[str], bool]  # (path) -> whether it is a checkpoint of this format (files and headers only)
    family: Callable[[str], str]  # (path) -> the family it holds (headers only)
    load: Callable[..., Model]  # (path, *, dtype, mesh, **overrides) -> Model
    named_config: Callable[[str, str], Any]  # (config name, dtype) -> the config of a named size (e.g. "pi0_tiny")
    param_shapes: Callable[[Any], Any]  # (config) -> its parameter tree as ShapeDtypeStructs
    build: Callable[..., Model]  # (config, params, *, mesh) -> a Model of those parameters (benchmarks: random ones)
    # (directory, config name, *, corpus, seed, scale) -> a random checkpoint written in this format (the demo's);
    # `corpus`: texts for a tokenizer the format bundles.
    write_random: Callable[..., pathlib.Path]
    # (path, family) -> the model settings the checkpoint's path implies, which `load` applies (openpi's training
    # config names; headers only); the run manifest records them, since a renamed copy has the same content.
    path_settings: Callable[[str, str], dict[str, Any]] = lambda checkpoint, family_name: {}


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family (`eval --model`): what the evaluator checks and resolves before any checkpoint is loaded."""

    name: str
    checkpoint_format: str
    checkpoint_help: str  # what `--checkpoint` takes for this family (the CLI's help)
    # Assets read beside the checkpoint, by flag name, with their default names: "tokenizer" (PaliGemma's
    # SentencePiece: prompts come tokenized) and "fast_tokenizer"; none when the checkpoint bundles its tokenizer.
    assets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    action_decoding: str | None = None  # one of ACTION_DECODINGS; None: no action head (text and text probes only)
    action_normalization: str | None = None  # one of ACTION_NORMALIZATIONS; required with an action head
    text_decoding: bool = True  # text domains (`sample_tokens`)
    option_scoring: bool = True  # Act2Answer's text probe (`score_options`)
    config_overrides: tuple[str, ...] = ()  # of CONFIG_OVERRIDES
    norm_stats_flag: str | None = None  # of NORM_STATS_FLAGS
    # (assets by flag name -> local paths, the prompt tokenizer or None) -> the action tokenizer `load` takes as
    # `action_tokenizer=` (Pi0-FAST's FAST tokens, which its checkpoint does not ship); None: none needed.
    action_tokenizer: Callable[[Mapping[str, Any], Any], Any] | None = None
    demo_config: str | None = None  # the named tiny config `eval --demo` writes (`CheckpointFormat.write_random`)
    # (checkpoint path) -> the keys of its action statistics, the choices of its norm_stats_flag (OpenVLA's dataset
    # keys, openpi's asset ids), read from its small files (no weights): `eval`'s preflight refuses a checkpoint with
    # none, a missing choice among several or an unknown one before the model loads. Required with norm_stats_flag.
    stats_keys: Callable[[str], tuple[str, ...]] | None = None
    # (checkpoint path, the stats key picked) -> what that key's statistics lack to unnormalize actions, naming the file
    # and key (None: nothing), from its small files: refused before the weights load where actions are unnormalized
    # with it. None: every key holds them (Magma's built-in SimplerEnv statistics); openpi's assets may hold the state's
    # alone, and an OpenVLA config.json entry may lack its `action` q01/q99.
    missing_action_stats: Callable[[str, str], str | None] | None = None
    # (checkpoint path) -> the state dims its config names as an input feature (no weights): an action domain whose
    # samples hold no state (the zero state would be made up), or a state of another size, is refused for it before
    # the weights load. None: the family takes the state the data gives, none included (MultiNet's Pi0 protocol pads
    # or cuts it to 32 dims).
    state_dims: Callable[[str], int] | None = None
    # (domain name) -> the `domains.Protocol` MultiNet ran this family under with scripts of its own (Magma's);
    # None: MultiNet's Pi0 protocol, the domain table's.
    protocol: Callable[[str], Any] | None = None
    # (checkpoint path, the stats key its norm_stats_flag picked or None) -> its ActionFrame, from its small files (no
    # weights): what Act2Answer's action probe may read. None for the path: an in-memory model (`Evaluator(model=)`),
    # whose frame the family tells without files or says it cannot. Required with an action head.
    action_frame: Callable[[str | None, str | None], ActionFrame] | None = None
    # (checkpoint path) -> the Euler steps it samples its actions with when none are asked for (`Model.num_flow_steps`),
    # from its small files (no weights): what `probe` records before the model loads. Required with flow decoding.
    flow_steps: Callable[[str], int] | None = None
    # (checkpoint path, or an in-memory model) -> the prompts the model builds itself and where it cuts them
    # (`OwnPrompts`), from its small files (no weights): every prompt where the checkpoint bundles its tokenizer, else
    # action prompts holding the state (Pi0.5's, Pi0-FAST's); None: its prompts are the pipeline's, cut where the
    # protocol says (or `--max_token_len`). What the run manifest records as applied, before the weights load.
    own_prompts: Callable[[Any], OwnPrompts | None] | None = None
    # Token actions are one token per action dim (OpenVLA's): no decoding budget (`--max_decoding_steps`) applies.
    one_token_per_action_dim: bool = False
    # (checkpoint path, or an in-memory model) -> the size its Hugging Face PaliGemma processor resizes text-domain
    # images to (pt_448's: 448), from its small files; None: 224, MultiNet's pt-224's (every other family's checkpoints).
    processor_image_size: Callable[[Any], int] | None = None
    # Text domains fill one of several camera slots and mask the rest (openpi's three): under openpi's decoding window
    # a masked camera's tokens attend to prompt padding, so an untruncated prompt's answer depends on its batch.
    masks_cameras_on_text: bool = False
    # It samples as Hugging Face's `generate(do_sample=True)` does, through its top-k (50 unless the checkpoint's
    # generation_config.json names another) and top-p filters: recorded where a domain samples.
    samples_as_hf: bool = False

    def __post_init__(self) -> None:
        if self.action_decoding not in (None, *ACTION_DECODINGS):
            raise ValueError(f"family {self.name!r}: action_decoding must be one of {ACTION_DECODINGS} or None")
        if (self.action_decoding is None) != (self.action_normalization is None) or \
                self.action_normalization not in (None, *ACTION_NORMALIZATIONS):
            raise ValueError(f"family {self.name!r}: action_normalization (one of {ACTION_NORMALIZATIONS}) is given "
                             "exactly when it has an action head")
        if not set(self.config_overrides) <= set(CONFIG_OVERRIDES) or self.norm_stats_flag not in (None, *NORM_STATS_FLAGS):
            raise ValueError(f"family {self.name!r}: config_overrides from {CONFIG_OVERRIDES}, norm_stats_flag from "
                             f"{NORM_STATS_FLAGS}")
        if (self.norm_stats_flag is None) != (self.stats_keys is None):
            raise ValueError(f"family {self.name!r}: stats_keys is given exactly when norm_stats_flag is")
        if self.missing_action_stats is not None and self.stats_keys is None:
            raise ValueError(f"family {self.name!r}: missing_action_stats needs stats_keys (the key it is asked about)")
        if self.action_head != (self.action_frame is not None):
            raise ValueError(f"family {self.name!r}: action_frame is given exactly when it has an action head")
        if (self.action_decoding == "flow") != (self.flow_steps is not None):
            raise ValueError(f"family {self.name!r}: flow_steps is given exactly when it samples flow actions")
        if self.one_token_per_action_dim and self.action_decoding != "tokens":
            raise ValueError(f"family {self.name!r}: one_token_per_action_dim is for token actions")

    @property
    def action_head(self) -> bool:
        return self.action_decoding is not None

    def decodes_tokens(self, domain: domains.Domain) -> bool:
        """Whether evaluating `domain` decodes tokens (so a decoding budget and window apply): text domains do, flow
        actions do not, and Act2Answer's probes only through a token action head (its text probe scores options)."""
        if domain.output is domains.Output.KNOWLEDGE_PROBES:
            return self.action_decoding == "tokens"
        return not (self.action_decoding == "flow" and domain.uses_actions)

    @property
    def bundles_tokenizer(self) -> bool:
        """The checkpoint carries its own text tokenizer (the model's `.tokenizer`, reading `prompt` texts)."""
        return "tokenizer" not in self.assets


@dataclasses.dataclass(frozen=True)
class OwnPrompts:
    """Prompts a model builds itself (`Family.own_prompts`): where it cuts them, and which prompts those are."""

    max_tokens: int | None  # None: never cut
    every_prompt: bool  # a bundled tokenizer's: every prompt; else only the action prompts (they hold the state)

    def applies_to(self, domain: Any) -> bool:
        """Whether `domain`'s prompts (on Act2Answer: its action probe's) are these."""
        return self.every_prompt or domain.uses_actions


_FORMATS: dict[str, CheckpointFormat] = {}
_FAMILIES: dict[str, Family] = {}


def register_format(checkpoint_format: CheckpointFormat) -> None:
    """Add a checkpoint format (later registrations are tried after earlier ones)."""
    if checkpoint_format.name in _FORMATS:
        raise ValueError(f"checkpoint format {checkpoint_format.name!r} is already registered")
    _FORMATS[checkpoint_format.name] = checkpoint_format


def register_family(family: Family) -> None:
    """Add a family; its checkpoint format must be registered first."""
    if family.name in _FAMILIES:
        raise ValueError(f"family {family.name!r} is already registered")
    if family.checkpoint_format not in _FORMATS:
        raise ValueError(f"family {family.name!r}: unknown checkpoint format {family.checkpoint_format!r}")
    _FAMILIES[family.name] = family


def formats() -> tuple[CheckpointFormat, ...]:
    return tuple(_FORMATS.values())


def family_names() -> tuple[str, ...]:
    """Every registered family (the evaluator's `--model` choices), in registration order."""
    return tuple(_FAMILIES)


def family(name: str) -> Family:
    """The registered family `name`; a one-line error listing the known ones otherwise."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(_FAMILIES)}")
    return _FAMILIES[name]


def check_flow_steps(family_name: str, num_flow_steps: int | None) -> None:
    """`--num_flow_steps` for a family that samples no flow would be ignored silently: refused, naming those that do."""
    if num_flow_steps is not None and family(family_name).action_decoding != "flow":
        takers = [other for other in _FAMILIES if _FAMILIES[other].action_decoding == "flow"]
        raise ValueError(f"--num_flow_steps is for --model={'|'.join(takers)}, not --model={family_name} (it samples no flow)")


def own_prompts(family_name: str, source: Any) -> OwnPrompts | None:
    """The prompts family `family_name`'s model builds itself and where it cuts them (`Family.own_prompts` of `source`,
    its checkpoint path or an in-memory model); None: none, every prompt is cut where the protocol says."""
    own = family(family_name)
    return None if own.own_prompts is None else own.own_prompts(source)


def check_prompt_length(family_name: str, max_token_len: int | None) -> None:
    """`--max_token_len` cuts the prompts the evaluator tokenizes with the prompt tokenizer (PaliGemma's); a family
    whose checkpoint bundles its tokenizer tokenizes its prompts itself, at its own length: refused for it, not
    recorded as if applied."""
    if max_token_len is not None and family(family_name).bundles_tokenizer:
        takers = [other for other in _FAMILIES if not _FAMILIES[other].bundles_tokenizer]
        raise ValueError(f"--max_token_len is for --model={'|'.join(takers)}, not --model={family_name} (its checkpoint "
                         "bundles its tokenizer, which cuts its prompts at its own length)")


def check_tokenizers(family_name: str, given: Mapping[str, Any]) -> None:
    """A tokenizer flag (`--tokenizer`, `--fast_tokenizer`) the family never reads would be ignored silently: refused,
    naming the families that read it. `given`: flag name -> value (None: not given)."""
    own = family(family_name)
    for name, value in given.items():
        if value is not None and name not in own.assets:
            takers = [other for other in _FAMILIES if name in _FAMILIES[other].assets]
            why = "its checkpoint bundles its own" if own.bundles_tokenizer else "it reads none"
            raise ValueError(f"--{name} is for --model={'|'.join(takers)}, not --model={family_name} ({why})")


def checkpoint_format(family_name: str) -> CheckpointFormat:
    """The format checkpoints of family `family_name` come in."""
    return _FORMATS[family(family_name).checkpoint_format]


def format_of(checkpoint: str | pathlib.Path) -> CheckpointFormat:
    """The format `checkpoint` is stored in; a one-line error listing the known formats otherwise."""
    from multinet_jax.weights.trees import CheckpointError

    path = str(checkpoint)
    for known in _FORMATS.values():
        if known.recognizes(path):
            return known
    if "://" not in path and not pathlib.Path(path).exists():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    listed = "; ".join(f"{known.name}: {known.description}" for known in _FORMATS.values())
    raise CheckpointError(f"{path}: not a checkpoint format this project reads (known: {listed})")


def family_of(checkpoint: str | pathlib.Path) -> str:
    """The family (`eval --model`) `checkpoint` holds, from its format and parameter shapes (no arrays read);
    names and URLs are resolved (and cached) by `multinet_jax.assets` first."""
    path = str(assets.resolve(checkpoint))
    return format_of(path).family(path)


def check_family(checkpoint: str | pathlib.Path, expected: str) -> None:
    """A one-line error when `checkpoint` holds another family than `expected` (what `--model` named)."""
    from multinet_jax.weights.trees import CheckpointError

    held = family_of(checkpoint)
    if held != expected:
        raise CheckpointError(f"{checkpoint}: holds a {held} model (from its parameters), but --model={expected}; "
                              f"pass --model={held} or leave --model out")


def path_settings(checkpoint: str | pathlib.Path, family_name: str) -> dict[str, Any]:
    """The model settings `checkpoint`'s path implies for family `family_name` (`CheckpointFormat.path_settings`)."""
    return checkpoint_format(family_name).path_settings(str(checkpoint), family_name)


def path_settings_line(command: str, checkpoint: str | pathlib.Path, implied: Mapping[str, Any]) -> str | None:
    """The line `command` prints for the settings `checkpoint`'s path implies that no flag gave (`path_settings`), so
    that a model decoded in 10-step chunks because of its folder's name says so; None when there are none."""
    if not implied:
        return None
    return (f"{command}: {checkpoint} is named for an openpi training config, which sets "
            f"{', '.join(f'{key}={value}' for key, value in implied.items())}")


def load_model(checkpoint: str | pathlib.Path, *, dtype: str = "float32", mesh: Mesh | None = None, **overrides: Any) -> Model:
    """Load `checkpoint` (a local path, an asset name such as `pi0_base`, or a URL such as `hf://openvla/openvla-7b`,
    resolved and cached by `multinet_jax.assets`) as its format says, restored as `dtype` into `mesh`'s shardings."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    checkpoint = assets.resolve(checkpoint)  # names and URLs -> a local, cached directory; nothing else downloads
    return format_of(checkpoint).load(checkpoint, dtype=dtype, mesh=mesh, **overrides)


def random_model(family_name: str, config_name: str, *, dtype: str, mesh: Mesh, params: Callable[[Any], Any]) -> Model:
    """A model of a named config with the parameters `params(shapes)` makes from its parameter shapes (benchmarks)."""
    checkpoint_format_ = checkpoint_format(family_name)
    config = checkpoint_format_.named_config(config_name, dtype)
    return checkpoint_format_.build(config, params(checkpoint_format_.param_shapes(config)), mesh=mesh)


def write_demo_checkpoint(family_name: str, directory: pathlib.Path, *, corpus: list[str], seed: int, scale: float) -> pathlib.Path:
    """The demo's random tiny checkpoint of `family_name` (its `demo_config`), written in its format."""
    demo_config = family(family_name).demo_config
    if demo_config is None:
        raise ValueError(f"--model={family_name} has no demo checkpoint")
    return checkpoint_format(family_name).write_random(directory, demo_config, corpus=corpus, seed=seed, scale=scale)


# -- the registered formats and families ----------------------------------------------------------------------------

_OPENPI, _OPENVLA, _PALIGEMMA = (f"multinet_jax.models.{name}" for name in ("openpi_checkpoint", "openvla_checkpoint", "paligemma"))
register_format(CheckpointFormat(
    "openpi", "an orbax `params/` directory (or the step directory holding it) of Pi0 / Pi0-FAST",
    recognizes=hook(f"{_OPENPI}:is_openpi"), family=hook(f"{_OPENPI}:family"), load=hook(f"{_OPENPI}:load"),
    named_config=hook(f"{_OPENPI}:named_config"), param_shapes=hook(f"{_OPENPI}:param_shapes"),
    build=hook(f"{_OPENPI}:build_model"), write_random=hook(f"{_OPENPI}:write_random"),
    path_settings=hook(f"{_OPENPI}:training_settings")))
register_format(CheckpointFormat(
    "huggingface_openvla", "a Hugging Face OpenVLA directory (config.json with model_type 'openvla', safetensors)",
    recognizes=hook(f"{_OPENVLA}:is_openvla"), family=hook(f"{_OPENVLA}:family"), load=hook("multinet_jax.models.openvla:load"),
    named_config=hook(f"{_OPENVLA}:named_config"), param_shapes=hook("multinet_jax.models.openvla:param_shapes"),
    build=hook("multinet_jax.models.openvla:build_model"), write_random=hook(f"{_OPENVLA}:write_random")))
register_format(CheckpointFormat(
    "big_vision_npz", "a big_vision PaliGemma .npz (params/img/..., params/llm/...; e.g. pt_224.npz)",
    recognizes=hook("multinet_jax.weights.big_vision:is_big_vision_npz"), family=hook(f"{_PALIGEMMA}:family"),
    load=hook(f"{_PALIGEMMA}:load"), named_config=hook(f"{_OPENPI}:named_config"),
    param_shapes=hook(f"{_OPENPI}:param_shapes"), build=hook(f"{_PALIGEMMA}:build_model"),
    write_random=hook(f"{_PALIGEMMA}:write_random")))
_MAGMA = "multinet_jax.models.magma"
register_format(CheckpointFormat(
    "huggingface_magma", "a Hugging Face Magma directory (config.json with model_type 'magma', safetensors, tokenizer)",
    recognizes=hook(f"{_MAGMA}_checkpoint:is_magma"), family=hook(f"{_MAGMA}_checkpoint:family"), load=hook(f"{_MAGMA}:load"),
    named_config=hook(f"{_MAGMA}_checkpoint:named_config"), param_shapes=hook(f"{_MAGMA}:param_shapes"),
    build=hook(f"{_MAGMA}:build_model"), write_random=hook(f"{_MAGMA}_demo:write_random")))
_SMOLVLA = "multinet_jax.models.smolvla"
register_format(CheckpointFormat(
    "lerobot_smolvla", "a LeRobot SmolVLA policy directory (config.json with type 'smolvla', model.safetensors, "
    "policy_pre/postprocessor files; its SmolVLM2 backbone beside it or named)",
    recognizes=hook(f"{_SMOLVLA}_checkpoint:is_smolvla"), family=hook(f"{_SMOLVLA}_checkpoint:family"),
    load=hook(f"{_SMOLVLA}:load"), named_config=hook(f"{_SMOLVLA}_checkpoint:named_config"),
    param_shapes=hook(f"{_SMOLVLA}:param_shapes"), build=hook(f"{_SMOLVLA}:build_model"),
    write_random=hook(f"{_SMOLVLA}_checkpoint:write_random")))

_OPENPI_HELP = ("an openpi checkpoint: a published name (pi0_base, pi05_libero, pi0_fast_droid, ...), gs://..., or the "
                "step directory holding params/ (or params/ itself)")
_PALIGEMMA_TOKENIZER = {"tokenizer": assets.DEFAULT_TOKENIZER}
_OPENPI_ASSETS = hook(f"{_OPENPI}:asset_ids")
_OPENPI_ACTION_STATS = hook(f"{_OPENPI}:missing_action_stats")
_OPENPI_FRAME = hook(f"{_OPENPI}:action_frame")
# OpenVLA's loader (prismatic/vla/datasets/rlds/oxe/materialize.py) loads only EEF_POS datasets: end-effector delta
# xyz, delta roll-pitch-yaw, gripper; every dataset key of its statistics is one. Magma's keys are SimplerEnv's.
_OPENVLA_FRAME = fixed_frame("ee_delta", "OpenVLA-style action statistics are per Open-X dataset in OpenVLA's EEF_POS "
                             "encoding (end-effector delta xyz, rpy, gripper)")
_OPENPI_FLOW_STEPS = hook("multinet_jax.models.pi0:checkpoint_flow_steps")
_OPENPI_PROMPTS = hook(f"{_OPENPI}:own_prompts")  # Pi0.5's and Pi0-FAST's action prompts hold the state
register_family(Family("pi0", "openpi", _OPENPI_HELP, _PALIGEMMA_TOKENIZER, action_decoding="flow", action_normalization="mean_std",
                       config_overrides=("action_horizon",), norm_stats_flag="asset_id", demo_config="pi0_tiny", stats_keys=_OPENPI_ASSETS,
                       missing_action_stats=_OPENPI_ACTION_STATS, action_frame=_OPENPI_FRAME,
                       flow_steps=_OPENPI_FLOW_STEPS, own_prompts=_OPENPI_PROMPTS, masks_cameras_on_text=True))
register_family(Family("pi05", "openpi", _OPENPI_HELP, _PALIGEMMA_TOKENIZER, action_decoding="flow",
                       action_normalization="openpi_quantiles",
                       config_overrides=("action_horizon",), norm_stats_flag="asset_id", demo_config="pi05_tiny", stats_keys=_OPENPI_ASSETS,
                       missing_action_stats=_OPENPI_ACTION_STATS, action_frame=_OPENPI_FRAME,
                       flow_steps=_OPENPI_FLOW_STEPS, own_prompts=_OPENPI_PROMPTS, masks_cameras_on_text=True))
register_family(Family(
    "pi0_fast", "openpi", _OPENPI_HELP, {**_PALIGEMMA_TOKENIZER, "fast_tokenizer": assets.DEFAULT_FAST_TOKENIZER},
    action_decoding="tokens", action_normalization="openpi_quantiles", config_overrides=("action_horizon", "action_dim"),
    norm_stats_flag="asset_id", stats_keys=_OPENPI_ASSETS,
    missing_action_stats=_OPENPI_ACTION_STATS,
    action_tokenizer=hook("multinet_jax.models.pi0_fast:load_action_tokenizer"), demo_config="pi0_fast_tiny",
    action_frame=_OPENPI_FRAME, own_prompts=_OPENPI_PROMPTS, masks_cameras_on_text=True))
register_family(Family("openvla", "huggingface_openvla", "a Hugging Face OpenVLA directory (config.json, safetensors, "
                       "tokenizer.model) or hf://openvla/openvla-7b", action_decoding="tokens", action_normalization="quantiles",
                       norm_stats_flag="unnorm_key", stats_keys=hook(f"{_OPENVLA}:unnorm_keys"),
                       missing_action_stats=hook(f"{_OPENVLA}:missing_action_stats"),
                       demo_config="openvla_tiny", action_frame=_OPENVLA_FRAME,
                       own_prompts=lambda source: OwnPrompts(None, every_prompt=True),  # never cut
                       protocol=hook("multinet_jax.models.openvla_actions:domain_protocol"), one_token_per_action_dim=True,
                       samples_as_hf=True))
register_family(Family("magma", "huggingface_magma", "a Hugging Face Magma directory (config.json, safetensors, "
                       "tokenizer.json) or magma-8b / hf://microsoft/Magma-8B", action_decoding="tokens", action_normalization="quantiles",
                       norm_stats_flag="unnorm_key", stats_keys=hook(f"{_MAGMA}:unnorm_keys"), demo_config="magma_tiny",
                       protocol=hook(f"{_MAGMA}_protocol:domain_protocol"), action_frame=_OPENVLA_FRAME, samples_as_hf=True))
register_family(Family("paligemma", "big_vision_npz", "a big_vision PaliGemma .npz (paligemma_pt_224, ...; text "
                       "domains and act2answer's text probe, no action head)", _PALIGEMMA_TOKENIZER,
                       demo_config="paligemma_tiny", processor_image_size=hook(f"{_PALIGEMMA}:processor_image_size")))
# SmolVLA keeps only its VLM's first layers: no text decoding, but those layers and the LM head score options
# (Act2Answer's text probe, `SmolVLAModel.score_options`).
register_family(Family("smolvla", "lerobot_smolvla", "a LeRobot SmolVLA policy directory (smolvla_base, or one "
                       "saved with save_pretrained)", action_decoding="flow", action_normalization="lerobot_mean_std", text_decoding=False,
                       state_dims=hook(f"{_SMOLVLA}_checkpoint:state_dims"), demo_config="smolvla_demo",
                       action_frame=hook(f"{_SMOLVLA}_checkpoint:action_frame"),
                       flow_steps=hook(f"{_SMOLVLA}_checkpoint:flow_steps"),
                       own_prompts=hook(f"{_SMOLVLA}_checkpoint:own_prompts")))
