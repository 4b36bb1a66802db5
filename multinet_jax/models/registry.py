"""Which model family a checkpoint holds, decided from its layout; `load_model` asks here and nowhere else.

A family registers a `Family`: a name, a cheap `recognizes(path)` test on the checkpoint's layout (files and their
headers, never the arrays), a `kind(path)` that names which of its model kinds the checkpoint holds (from the same
headers) and a `load(path, dtype=, mesh=, **overrides)` that returns a `models.interface.Model`.
Adding a family touches its own module in `models/` and one `register(...)` line below, never the evaluator.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable
from typing import Any

from jax.sharding import Mesh

from multinet_jax import assets
from multinet_jax.models.interface import Model
from multinet_jax.weights.trees import CheckpointError

DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Family:
    """One checkpoint layout and how to load it; `names` are the model kinds it can return, `kind(path)` the one a
    checkpoint of this layout holds."""

    layout: str
    names: tuple[str, ...]
    recognizes: Callable[[str], bool]
    kind: Callable[[str], str]
    load: Callable[..., Model]
    description: str
    bundles_tokenizer: bool = False  # the checkpoint carries its own text tokenizer (the model's `.tokenizer`)
    predicts_actions: bool = True  # False: a VLM without an action head (text domains and text probes only)


_FAMILIES: list[Family] = []


def register(family: Family) -> None:
    """Add a family (later registrations are tried after earlier ones)."""
    if any(known.layout == family.layout for known in _FAMILIES):
        raise ValueError(f"a family for layout {family.layout!r} is already registered")
    _FAMILIES.append(family)


def families() -> tuple[Family, ...]:
    return tuple(_FAMILIES)


def model_kinds() -> tuple[str, ...]:
    """Every model kind the registered families return (the evaluator's `--model` choices)."""
    return tuple(name for family in _FAMILIES for name in family.names)


def bundles_tokenizer(kind: str) -> bool:
    """Whether models of `kind` bring their own tokenizer (else prompts are tokenized with PaliGemma's)."""
    return any(family.bundles_tokenizer for family in _FAMILIES if kind in family.names)


def predicts_actions(kind: str) -> bool:
    """Whether models of `kind` have an action head (`predict_actions`); PaliGemma has none."""
    return any(family.predicts_actions for family in _FAMILIES if kind in family.names)


def layout_of(kind: str) -> str:
    """The checkpoint layout models of `kind` come in (e.g. "openpi" for pi0)."""
    return next(family.layout for family in _FAMILIES if kind in family.names)


def family_of(checkpoint: str | pathlib.Path) -> Family:
    """The family whose layout `checkpoint` has; a one-line error listing the known layouts otherwise."""
    path = str(checkpoint)
    for family in _FAMILIES:
        if family.recognizes(path):
            return family
    if "://" not in path and not pathlib.Path(path).exists():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    known = "; ".join(f"{family.layout}: {family.description}" for family in _FAMILIES)
    raise CheckpointError(f"{path}: not a checkpoint layout this project reads (known: {known})")


def model_kind(checkpoint: str | pathlib.Path) -> str:
    """The model kind (`eval --model`) `checkpoint` holds, from its layout and parameter shapes (no arrays read);
    names and URLs are resolved (and cached) by `multinet_jax.assets` first."""
    path = str(assets.resolve(checkpoint))
    return family_of(path).kind(path)


def check_model_kind(checkpoint: str | pathlib.Path, expected: str) -> None:
    """A one-line error when `checkpoint` holds another model kind than `expected` (what `--model` named)."""
    held = model_kind(checkpoint)
    if held != expected:
        raise CheckpointError(f"{checkpoint}: holds a {held} model (from its parameters), but --model={expected}; "
                              f"pass --model={held} or leave --model out")


def load_model(checkpoint: str | pathlib.Path, *, dtype: str = "float32", mesh: Mesh | None = None, **overrides: Any) -> Model:
    """Load `checkpoint` (a local path, an asset name such as `pi0_base`, or a URL such as `hf://openvla/openvla-7b`,
    resolved and cached by `multinet_jax.assets`) with the family its layout names, restored as `dtype` into
    `mesh`'s shardings."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    checkpoint = assets.resolve(checkpoint)  # names and URLs -> a local, cached directory; nothing else downloads
    return family_of(checkpoint).load(checkpoint, dtype=dtype, mesh=mesh, **overrides)


def _is_openpi(path: str) -> bool:
    """An openpi step directory (holding `params/`) or `params/` itself; remote (gs://) paths are openpi's."""
    if "://" in path:
        return True
    local = pathlib.Path(path)
    return (local / "params" / "_METADATA").exists() or (local / "_METADATA").exists()


def _openpi_kind(path: str) -> str:
    from multinet_jax import weights
    from multinet_jax.models import configs

    return configs.model_kind(configs.infer_config(weights.checkpoint_shapes(path)))


def _load_openpi(checkpoint: str | pathlib.Path, **kwargs: Any) -> Model:
    from multinet_jax import models

    return models.load_openpi(checkpoint, **kwargs)


register(Family("openpi", ("pi0", "pi05", "pi0_fast"), _is_openpi, _openpi_kind, _load_openpi,
                "an orbax `params/` directory (or the step directory holding it) of Pi0 / Pi0-FAST"))


def _is_openvla(path: str) -> bool:
    from multinet_jax.models import openvla_checkpoint

    return openvla_checkpoint.is_openvla(path)


def _load_openvla(checkpoint: str | pathlib.Path, **kwargs: Any) -> Model:
    from multinet_jax.models import openvla

    return openvla.load(checkpoint, **kwargs)


register(Family("huggingface_openvla", ("openvla",), _is_openvla, lambda path: "openvla", _load_openvla,
                "a Hugging Face OpenVLA directory (config.json with model_type 'openvla', safetensors)",
                bundles_tokenizer=True))


def _is_big_vision(path: str) -> bool:
    from multinet_jax.weights import big_vision

    return big_vision.is_big_vision_npz(path)


def _big_vision_kind(path: str) -> str:
    """"paligemma", once the npz's headers show PaliGemma's sizes (a torn or foreign npz fails here, naming it)."""
    from multinet_jax.models import paligemma

    paligemma.read_config(path)
    return "paligemma"


def _load_paligemma(checkpoint: str | pathlib.Path, **kwargs: Any) -> Model:
    from multinet_jax.models import paligemma

    return paligemma.load(checkpoint, **kwargs)


register(Family("big_vision_npz", ("paligemma",), _is_big_vision, _big_vision_kind, _load_paligemma,
                "a big_vision PaliGemma .npz (params/img/..., params/llm/...; e.g. pt_224.npz)", predicts_actions=False))
