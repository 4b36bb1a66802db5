"""Which model family a checkpoint holds and how to load it; `load_model` asks here and nowhere else.

Two words, used the same way everywhere:
- a *family* is what `eval --model` names (pi0, pi05, pi0_fast, openvla, paligemma): one kind of model, with its
  capabilities (`Family`);
- a *checkpoint format* is how its publisher stores it (openpi's orbax tree, a Hugging Face safetensors directory,
  a big_vision npz): a cheap `recognizes(path)` test on the files and headers (never the arrays), `family(path)`
  naming the family a checkpoint of that format holds (from the same headers), and `load(path, dtype=, mesh=,
  **overrides)` returning a `models.interface.Model` (`CheckpointFormat`). One format may hold several families
  (openpi: Pi0, Pi0.5, Pi0-FAST).

This module imports no JAX (the hooks import their modules when called), so the CLI reads the family names from it
while parsing flags.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from multinet_jax import assets

if TYPE_CHECKING:
    from jax.sharding import Mesh

    from multinet_jax.models.interface import Model

DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class CheckpointFormat:
    """One way checkpoints are stored, and how to read one."""

    name: str
    description: str
    recognizes: Callable[[str], bool]
    family: Callable[[str], str]
    load: Callable[..., Model]


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family (`eval --model`): the checkpoint format it comes in and what it can do."""

    name: str
    checkpoint_format: str
    bundles_tokenizer: bool = False  # the checkpoint carries its own text tokenizer (the model's `.tokenizer`)
    action_head: bool = True  # False: a VLM without an action head (text domains and text probes only)


_FORMATS: list[CheckpointFormat] = []
_FAMILIES: dict[str, Family] = {}


def register_format(checkpoint_format: CheckpointFormat) -> None:
    """Add a checkpoint format (later registrations are tried after earlier ones)."""
    if any(known.name == checkpoint_format.name for known in _FORMATS):
        raise ValueError(f"checkpoint format {checkpoint_format.name!r} is already registered")
    _FORMATS.append(checkpoint_format)


def register_family(family: Family) -> None:
    """Add a family; its checkpoint format must be registered first."""
    if family.name in _FAMILIES:
        raise ValueError(f"family {family.name!r} is already registered")
    if family.checkpoint_format not in {known.name for known in _FORMATS}:
        raise ValueError(f"family {family.name!r}: unknown checkpoint format {family.checkpoint_format!r}")
    _FAMILIES[family.name] = family


def formats() -> tuple[CheckpointFormat, ...]:
    return tuple(_FORMATS)


def family_names() -> tuple[str, ...]:
    """Every registered family (the evaluator's `--model` choices), in registration order."""
    return tuple(_FAMILIES)


def family(name: str) -> Family:
    """The registered family `name`; a one-line error listing the known ones otherwise."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(_FAMILIES)}")
    return _FAMILIES[name]


def format_of(checkpoint: str | pathlib.Path) -> CheckpointFormat:
    """The format `checkpoint` is stored in; a one-line error listing the known formats otherwise."""
    from multinet_jax.weights.trees import CheckpointError

    path = str(checkpoint)
    for checkpoint_format in _FORMATS:
        if checkpoint_format.recognizes(path):
            return checkpoint_format
    if "://" not in path and not pathlib.Path(path).exists():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    known = "; ".join(f"{known.name}: {known.description}" for known in _FORMATS)
    raise CheckpointError(f"{path}: not a checkpoint format this project reads (known: {known})")


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


def load_model(checkpoint: str | pathlib.Path, *, dtype: str = "float32", mesh: Mesh | None = None, **overrides: Any) -> Model:
    """Load `checkpoint` (a local path, an asset name such as `pi0_base`, or a URL such as `hf://openvla/openvla-7b`,
    resolved and cached by `multinet_jax.assets`) as its format says, restored as `dtype` into `mesh`'s shardings."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    checkpoint = assets.resolve(checkpoint)  # names and URLs -> a local, cached directory; nothing else downloads
    return format_of(checkpoint).load(checkpoint, dtype=dtype, mesh=mesh, **overrides)


# -- the registered formats and families (each hook imports its module when called) --------------------------------


def _is_openpi(path: str) -> bool:
    from multinet_jax.models import openpi_checkpoint

    return openpi_checkpoint.is_openpi(path)


def _openpi_family(path: str) -> str:
    from multinet_jax.models import openpi_checkpoint

    return openpi_checkpoint.family(path)


def _load_openpi(checkpoint: str | pathlib.Path, **kwargs: Any) -> Model:
    from multinet_jax.models import openpi_checkpoint

    return openpi_checkpoint.load(checkpoint, **kwargs)


def _is_openvla(path: str) -> bool:
    from multinet_jax.models import openvla_checkpoint

    return openvla_checkpoint.is_openvla(path)


def _load_openvla(checkpoint: str | pathlib.Path, **kwargs: Any) -> Model:
    from multinet_jax.models import openvla

    return openvla.load(checkpoint, **kwargs)


def _is_big_vision(path: str) -> bool:
    from multinet_jax.weights import big_vision

    return big_vision.is_big_vision_npz(path)


def _big_vision_family(path: str) -> str:
    """"paligemma", once the npz's headers show PaliGemma's sizes (a torn or foreign npz fails here, naming it)."""
    from multinet_jax.models import paligemma

    paligemma.read_config(path)
    return "paligemma"


def _load_paligemma(checkpoint: str | pathlib.Path, **kwargs: Any) -> Model:
    from multinet_jax.models import paligemma

    return paligemma.load(checkpoint, **kwargs)


register_format(CheckpointFormat("openpi", "an orbax `params/` directory (or the step directory holding it) of Pi0 / Pi0-FAST",
                                 _is_openpi, _openpi_family, _load_openpi))
register_format(CheckpointFormat(
    "huggingface_openvla", "a Hugging Face OpenVLA directory (config.json with model_type 'openvla', safetensors)",
    _is_openvla, lambda path: "openvla", _load_openvla))
register_format(CheckpointFormat(
    "big_vision_npz", "a big_vision PaliGemma .npz (params/img/..., params/llm/...; e.g. pt_224.npz)",
    _is_big_vision, _big_vision_family, _load_paligemma))

register_family(Family("pi0", "openpi"))
register_family(Family("pi05", "openpi"))
register_family(Family("pi0_fast", "openpi"))
register_family(Family("openvla", "huggingface_openvla", bundles_tokenizer=True))
register_family(Family("paligemma", "big_vision_npz", action_head=False))
