"""The one table every part of an evaluation looks up: per MultiNet v1.0 domain, how to call the
model, how to turn its raw output into a prediction, and which `score` metrics apply.

Output mapping follows MultiNet v1.0's Pi0 scripts and harness adapters:
  - Open-X (`openx_<dataset>`): flow/FAST actions; the first step of the predicted chunk, the first
    min(32, D) dims, unnormalized as openpi's `Unnormalize` does (x * (std + 1e-6) + mean) with either the
    evaluated split's statistics (MultiNet's choice) or the checkpoint's norm stats. OpenVLA's binned actions
    (D <= 7 dims) are unnormalized with the bounds rule of its `predict_action` (`unnormalize_quantiles`): with the
    split's q01/q99 (what MultiNet did, adding each dataset's statistics under its own `unnorm_key`) or a
    checkpoint key's (`--unnorm_key`).
  - Overcooked-AI: dimension 0 of the first step, unnormalized the same way and rounded to the nearest
    joint-action index (MultiNet's `overcooked_inference.process_output`); outside 0..35 is invalid.
  - PIQA / ODinW: decoded text; the first integer in it (`re.findall(r"\\d+")[0]`), valid when
    0 <= n < number of options (the harness's `_validate_and_extract_choice`).
  - SQA3D / RoboVQA (`openx_multi_embodiment`): decoded text, stripped; `score` normalizes it.
  - BFCL: decoded text per turn; calls are the matches of `\\b\\w+\\s*\\([^)]*\\)` with whitespace
    collapsed (the harness's `_extract_function_calls`).
  - Act2Answer: a text probe (options scored by log-likelihood) and an action probe (the integrated chunk's
    direction) per episode (`eval/act2answer.py`), scored as `act2answer_probes`.
Unparseable output becomes an invalid prediction (None), never an exception.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

# openpi's Unnormalize adds this to std so a constant dimension does not divide by zero.
UNNORMALIZE_EPSILON = 1e-6
MAX_ACTION_DIMS = 32
NUM_OVERCOOKED_ACTIONS = 36
PIQA_NUM_OPTIONS = 2

_FIRST_INTEGER = re.compile(r"\d+")
_FUNCTION_CALL = re.compile(r"\b\w+\s*\([^)]*\)")
_TURN_MARKER = re.compile(r"[=#*\s]*turn\s*\d+\s*[=#*:]*", re.IGNORECASE)


class Output(enum.Enum):
    """What the model produces for a domain, which decides the model call."""

    CONTINUOUS_ACTIONS = "continuous_actions"  # sample_actions -> first step, first min(32, D) dims
    DISCRETE_ACTION = "discrete_action"  # sample_actions -> dim 0, unnormalized, rounded
    TEXT = "text"  # sample_tokens -> decoded text -> parser
    KNOWLEDGE_PROBES = "knowledge_probes"  # score_options (text probe) + sample_actions (action probe)


@dataclasses.dataclass(frozen=True)
class Domain:
    """One evaluation domain: the name `data.load` and `metrics.score` take, its folder in MultiNet's
    layout, what the model produces, and the `score` metrics the summary shows first."""

    name: str
    folder: str
    output: Output
    headline_metrics: tuple[str, ...]
    scored_as: str | None = None  # the `metrics.score` domain of its prediction records, when not its name

    @property
    def score_domain(self) -> str:
        return self.scored_as or self.name

    @property
    def uses_actions(self) -> bool:
        return self.output is not Output.TEXT

    @property
    def metric_kind(self) -> str:
        """The `metrics.score` calculator (continuous, discrete, multiple_choice, classification, vqa, function_calls)."""
        from multinet_jax import metrics

        return metrics.metric_kind(self.score_domain)


_OPENX_HEADLINE = ("avg_dataset_amse", "avg_dataset_amae", "normalized_amae", "action_success_rate", "invalid_percentage")
_VQA_HEADLINE = ("exact_match_accuracy", "avg_similarity_score", "high_similarity_percentage", "invalid_percentage")

_FIXED_DOMAINS = {
    domain.name: domain
    for domain in (
        Domain("overcooked_ai", "overcooked_ai", Output.DISCRETE_ACTION,
               ("exact_match", "micro_f1", "macro_f1", "avg_dataset_amae", "percentage_invalids")),
        Domain("piqa", "piqa", Output.TEXT, ("overall_accuracy", "valid_accuracy", "invalid_percentage")),
        Domain("odinw", "odinw", Output.TEXT, ("overall_accuracy", "macro_f1", "invalid_percentage")),
        Domain("sqa3d", "sqa3d", Output.TEXT, _VQA_HEADLINE),
        Domain("openx_multi_embodiment", "openx_multi_embodiment", Output.TEXT, _VQA_HEADLINE),
        Domain("bfcl", "bfcl_v3", Output.TEXT, ("exact_match_accuracy", "avg_turn_of_first_failure", "avg_similarity_score", "invalid_turn_percentage")),
        Domain("act2answer", "act2answer", Output.KNOWLEDGE_PROBES,
               ("text_probe_accuracy", "action_probe_accuracy", "action_invalid_rate"), scored_as="act2answer_probes"),
    )
}
ALL_DOMAINS = ("openx_bimanual", *_FIXED_DOMAINS)


def lookup(name: str) -> Domain:
    """The table entry for a domain name; any other `openx_<dataset>` is a continuous-action domain."""
    if name in _FIXED_DOMAINS:
        return _FIXED_DOMAINS[name]
    if name.startswith("openx_") and len(name) > len("openx_"):
        return Domain(name, name, Output.CONTINUOUS_ACTIONS, _OPENX_HEADLINE)
    known = ", ".join(sorted(_FIXED_DOMAINS))
    raise ValueError(f"unknown domain {name!r}: expected openx_<dataset> or one of {known}")


def unnormalize(values: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """openpi's z-score inverse over the last axis (as many dims as `values` has)."""
    dims = values.shape[-1]
    mean = np.asarray(mean, dtype=np.float64)[:dims]
    std = np.asarray(std, dtype=np.float64)[:dims]
    if mean.shape[0] < dims or std.shape[0] < dims:
        raise ValueError(f"normalization stats have {mean.shape[0]} dims, the actions need {dims}")
    return values.astype(np.float64) * (std + UNNORMALIZE_EPSILON) + mean


def unnormalize_quantiles(values: np.ndarray, q01: Sequence[float], q99: Sequence[float],
                          mask: Sequence[bool] | None = None) -> np.ndarray:
    """OpenVLA's bounds inverse over the last axis: `0.5 (x + 1)(q99 - q01) + q01` where `mask` (default all)."""
    dims = values.shape[-1]
    low, high = np.asarray(q01, np.float64)[:dims], np.asarray(q99, np.float64)[:dims]
    mask = np.ones(dims, bool) if mask is None else np.asarray(mask, bool)[:dims]
    if low.shape[0] < dims or high.shape[0] < dims or mask.shape[0] < dims:
        raise ValueError(f"normalization stats have {min(low.shape[0], high.shape[0], mask.shape[0])} dims, the actions need {dims}")
    values = values.astype(np.float64)
    return np.where(mask, 0.5 * (values + 1) * (high - low) + low, values)


@dataclasses.dataclass(frozen=True)
class ActionNorm:
    """The statistics that turn a family's normalized actions into dataset units, by the family's
    `action_normalization`: "mean_std" (openpi: mean, std) or "quantiles" (OpenVLA: q01, q99, mask)."""

    kind: str
    stats: dict[str, Any]

    def __call__(self, values: np.ndarray) -> np.ndarray:
        if self.kind == "mean_std":
            return unnormalize(values, self.stats["mean"], self.stats["std"])
        return unnormalize_quantiles(values, self.stats["q01"], self.stats["q99"], self.stats.get("mask"))


def continuous_predictions(actions: np.ndarray, action_dim: int, norm: ActionNorm) -> list[list[float] | None]:
    """Open-X: `[b, horizon, 32]` model actions -> per row the first step's first min(32, D) dims, unnormalized.

    A row with a non-finite value (a FAST sequence that did not decode) is invalid (None).
    """
    dims = min(MAX_ACTION_DIMS, action_dim, np.shape(actions)[-1])
    values = norm(np.asarray(actions)[:, 0, :dims])
    return [row.tolist() if np.all(np.isfinite(row)) else None for row in values]


def discrete_predictions(actions: np.ndarray, norm: ActionNorm) -> list[int | None]:
    """Overcooked: dimension 0 of the first step, unnormalized and rounded; outside 0..35 is invalid."""
    values = norm(np.asarray(actions)[:, 0, :1])[:, 0]
    predictions: list[int | None] = []
    for value in values:
        index = int(np.round(value)) if np.isfinite(value) else -1
        predictions.append(index if 0 <= index < NUM_OVERCOOKED_ACTIONS else None)
    return predictions


def parse_choice(text: str, num_options: int) -> int | None:
    """PIQA / ODinW: the first integer in the text when it names an option, else invalid."""
    match = _FIRST_INTEGER.search(text)
    if match is None:
        return None
    index = int(match.group())
    return index if 0 <= index < num_options else None


def parse_answer(text: str) -> str | None:
    """SQA3D / RoboVQA: the stripped answer text; empty output is invalid."""
    answer = text.strip()
    return answer or None


def parse_function_calls(text: str) -> list[str]:
    """BFCL: the function calls in one turn's output, whitespace collapsed (empty when none)."""
    return [re.sub(r"\s+", " ", call.strip()) for call in _FUNCTION_CALL.findall(text)]


def split_turns(text: str, num_turns: int) -> list[str]:
    """BFCL: one decoded answer for a whole conversation -> per-turn texts.

    The prompt asks for "the function calls for each turn in order"; a turn's section starts at a
    "Turn N" marker when the model writes them, else at a new line. Missing turns are empty, extra
    sections are dropped, so the prediction always has one entry per ground-truth turn.
    """
    sections = _TURN_MARKER.split(text) if _TURN_MARKER.search(text) else text.splitlines()
    sections = [section.strip() for section in sections if section.strip()]
    return (sections + [""] * num_turns)[:num_turns]


def parse_text(domain: Domain, text: str, sample: dict[str, Any]) -> Any:
    """Prediction of a text domain from its decoded output (BFCL: calls per ground-truth turn)."""
    kind = domain.metric_kind
    if kind == "multiple_choice":
        return parse_choice(text, PIQA_NUM_OPTIONS)
    if kind == "classification":
        return parse_choice(text, int(sample["num_options"]))
    if kind == "vqa":
        return parse_answer(text)
    if kind == "function_calls":
        return [parse_function_calls(turn) for turn in split_turns(text, len(sample["ground_truth"]))]
    raise ValueError(f"domain {domain.name} has no text output")
