"""The one table every part of an evaluation looks up: per MultiNet v1.0 domain, how to call the
model, how to turn its raw output into a prediction, and which `score` metrics apply.

Each domain's `Protocol` is how MultiNet v1.0 ran Pi0 on it (`PROTOCOL_NAME`, named in every metrics file; a family
MultiNet ran with scripts of its own, Magma, has its own protocol, `registry.Family.protocol`;
`../shared/multinet_reference/pi0_text_protocol.md` lists the sources): Open-X and Overcooked through its copy of
openpi (openpi's Pi0 prompt tokens truncated at 48 / 256, images resized inside the model); the text domains
through Hugging Face's PaliGemma processor (BOS + the whole prompt + "\n", never truncated; images resized
straight to 224x224 with PIL bicubic) and greedy decoding with a per-domain budget over Hugging Face's zero-padded
vocabulary (`HF_PALIGEMMA_VOCAB_SIZE`); BFCL turn by turn.

Output mapping follows MultiNet v1.0's Pi0 scripts and harness adapters:
  - Open-X (`openx_<dataset>`): flow/FAST actions; the first step of the predicted chunk, the first
    min(32, D) dims (D: the ground truth's; single-arm and mobile manipulation rebuild it from the action dict
    as MultiNet's Pi0 script did, `OPENX_ACTION_FROM_DICT`), unnormalized as openpi's `Unnormalize` does
    (x * (std + 1e-6) + mean) with either the evaluated split's statistics (MultiNet's choice) or the checkpoint's
    norm stats. OpenVLA's binned actions
    (D <= 7 dims) are unnormalized with the bounds rule of its `predict_action` (`unnormalize_quantiles`): with the
    split's q01/q99 (what MultiNet did, adding each dataset's statistics under its own `unnorm_key`) or a
    checkpoint key's (`--unnorm_key`).
  - Overcooked-AI: dimension 0 of the first step, unnormalized the same way and rounded to the nearest
    joint-action index (MultiNet's `overcooked_inference.process_output`); outside 0..35 is invalid.
  - Text: the generated ids up to the end-of-sequence token, special tokens dropped, decoded and stripped
    (the HF processor's `decode(..., skip_special_tokens=True).strip()`).
  - PIQA: valid only when the whole stripped output is "0" or "1" (`piqa_hf_inference._validate_output`).
  - ODinW: `int(output.strip())` must parse the whole output and name one of the subset's classes
    (`num_options`, MultiNet's `ODINW_SUBSET_CLASSES` count; `odinw_hf_inference._validate_output`).
  - SQA3D / RoboVQA (`openx_multi_embodiment`): the stripped text, invalid when empty; `score` normalizes it.
  - BFCL: per turn, the matches of `\\b\\w+\\s*\\([^)]*\\)` in the stripped answer, as is
    (`bfcl_hf_inference._extract_function_calls`).
  - Act2Answer: a text probe (options scored by log-likelihood) and an action probe (the integrated chunk's
    direction) per episode (`eval/act2answer_probes.py`), scored as `act2answer_probes`; openpi's inputs, as Open-X.
Unparseable output becomes an invalid prediction (None), never an exception.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# openpi's Unnormalize adds this to std so a constant dimension does not divide by zero.
UNNORMALIZE_EPSILON = 1e-6
MAX_ACTION_DIMS = 32
# The largest |value| a ground-truth action may hold (data and `score` refuse larger ones): robot actions are deltas,
# positions and gripper states of magnitude 1e-3-1e3, and beyond this float32 sums of squares over a split lose
# their digits long before they overflow (a single 1e30 action made every statistic inf and every prediction invalid).
ACTION_VALUE_LIMIT = 1e6
NUM_OVERCOOKED_ACTIONS = 36
PIQA_ANSWERS = ("0", "1")

_FUNCTION_CALL = re.compile(r"\b\w+\s*\([^)]*\)")


PROTOCOL_NAME = "multinet_v1"
FAST_ACTION_DECODING_STEPS = 256  # openpi's Pi0-FAST default for action tokens
# MultiNet's text runs put Pi0's 257,152-row PaliGemma embedding into Hugging Face's paligemma-3b-pt-224, whose table
# has 257,216 rows: the injector zero-padded it (ManifoldRG/openpi `pi0_weight_injector.py`, lines 200-209), the head
# is tied, so every greedy step also saw 64 logits of exactly 0 (`models/decoding.py`). A reproduced quirk.
HF_PALIGEMMA_VOCAB_SIZE = 257_216
# How tokens are decoded (`models/decoding.py`): openpi's decode window and positions, or contiguous positions over
# the valid tokens, as Hugging Face's `generate` (and later openpi) does.
DECODING_MODES = ("openpi_window", "contiguous")


# A protocol's ground truth scored as the data holds it (`Protocol.ground_truth`); a family whose MultiNet script
# transformed it names the transform instead (Magma's Open-X: `magma_protocol.GROUND_TRUTH_TRANSFORMS`).
GROUND_TRUTH_AS_IS = "identity"


# How a text answer is read: as MultiNet's Pi0 scripts read it (`parse_text`) or as its Magma scripts did
# (`parse_text_magma`).
ANSWER_RULES = ("pi0_scripts", "magma_scripts")


class PromptFormat(enum.Enum):
    """How a prompt becomes token ids (`tokenizers.PaliGemmaTokenizer.prompt_ids`)."""

    OPENPI = "openpi"  # openpi's Pi0 tokenizer: stripped, "_" and "\n" -> " ", BOS + text + "\n"
    PALIGEMMA_PROCESSOR = "paligemma_processor"  # HF PaliGemmaProcessor: BOS + text after any "<image>" + "\n", as is


class ImageResize(enum.Enum):
    """Where and how a sample's image reaches the model's input size (224x224 for MultiNet's models)."""

    OPENPI = "openpi"  # native size into the model, which resizes in float (`models.observation.resize_with_pad`)
    PALIGEMMA_PROCESSOR = "paligemma_processor"  # PIL bicubic straight to the model's size on uint8, before the model


@dataclasses.dataclass(frozen=True)
class Chat:
    """A conversation MultiNet built for a family that reads chat messages through its own chat template (Magma):
    an optional system turn and a user turn around the domain's question. The question is the domain's prompt
    (`data/prompts.py`, Pi0's) after `question_after`, which MultiNet's Pi0 scripts put before it and these did not.
    `tokenizer_bos`: the tokenizer adds its BOS after the template's (the processor's call) or not
    (`apply_chat_template(tokenize=True)`). `max_tokens`: the tokenizer's right-side truncation of the whole chat
    (`apply_chat_template(truncation=True, max_length=...)`); None: none. `question_field`: the sample field the
    question is read from: the domain's prompt, or another prompt its data builds (Overcooked's
    `instruction_prompt`, MultiNet's VLM instruction, which its Magma script asked instead of Pi0's prompt)."""

    system: str | None
    user: str  # "{question}" stands for the question; "<image>" for the sample's image
    question_after: str
    tokenizer_bos: bool
    max_tokens: int | None = None
    question_field: str = "prompt"

    def question(self, prompt: str) -> str:
        """The question in a domain's prompt; a prompt without `question_after` is refused (built by other code)."""
        if not prompt.startswith(self.question_after):
            raise ValueError(f"prompt does not start with MultiNet's {self.question_after[:40]!r}...: {prompt[:80]!r}")
        return prompt[len(self.question_after):]

    def applied(self) -> dict[str, Any]:
        """As run manifests record it: `question_field` only where it is not the prompt (manifests written before it
        existed then still match)."""
        fields = dataclasses.asdict(self)
        return fields if self.question_field != "prompt" else {k: v for k, v in fields.items() if k != "question_field"}

    def messages(self, prompt: str) -> list[dict[str, str]]:
        """The conversation for one sample's prompt, as `{"role", "content"}` messages."""
        system = [] if self.system is None else [{"role": "system", "content": self.system}]
        return [*system, {"role": "user", "content": self.user.replace("{question}", self.question(prompt))}]


@dataclasses.dataclass(frozen=True)
class Protocol:
    """What MultiNet v1.0 fed a model on a domain and how long it let it answer: by default how it ran Pi0
    (`PROTOCOL_NAME`); a family MultiNet ran with scripts of its own names its protocol in the registry
    (`registry.Family.protocol`).

    `max_prompt_tokens`: openpi's `max_token_len` where MultiNet truncated (longer prompts are cut and counted);
    None: never truncated, padded to a power-of-two bucket. `max_new_tokens`: the decoding budget (per turn for
    BFCL). `blank_image`: the pixel value of the 224x224 image a sample without one shows the model, attended
    (PIQA's black image, BFCL's white one: MultiNet's scripts left `--mask_image_tokens` off); None: every camera
    masked. `temperature`: the sampling temperature MultiNet decoded with (None: the run's `--temperature` for
    text, greedy actions). `chat`: the conversation, for a model reading chat messages (None: the prompt text).
    `answer`: how a text answer is read, one of `ANSWER_RULES`. `min_new_tokens`: (the fewest tokens the output rule
    reads an answer from, what they are): a smaller `--max_decoding_steps` is refused before the model loads.
    `ground_truth`: the name of the transform MultiNet's script applied to the ground truth (and the split's statistics)
    before scoring (`Model.multinet_actions` applies it), `GROUND_TRUTH_AS_IS` where it scored the data's own: recorded,
    so a resume never mixes two scorings in one predictions file. `answers_in_text`: on an action domain, the model
    answers in text that the `answer` rule reads into the domain's prediction (MultiNet's Magma Overcooked script:
    a list of 36 joint-action probabilities), instead of predicting actions.
    """

    prompt_format: PromptFormat
    image_resize: ImageResize
    max_prompt_tokens: int | None
    max_new_tokens: int | None = None
    blank_image: int | None = None
    turn_by_turn: bool = False
    action_from_dict: str | None = None  # Open-X: the ground truth rebuilt from the action dict (`data/openx.py`)
    logits_vocab_size: int | None = None  # text: the zero-padded vocabulary MultiNet's argmax ran over
    name: str = PROTOCOL_NAME
    temperature: float | None = None
    chat: Chat | None = None
    answer: str = "pi0_scripts"
    min_new_tokens: tuple[int, str] | None = None
    ground_truth: str = GROUND_TRUTH_AS_IS
    answers_in_text: bool = False

    def __post_init__(self) -> None:
        if self.answer not in ANSWER_RULES:
            raise ValueError(f"Protocol.answer must be one of {ANSWER_RULES}, got {self.answer!r}")

    @property
    def resizes_on_host(self) -> bool:
        """Images are resized to the model's input size before the model, as a Hugging Face processor does (else the
        model resizes them itself)."""
        return self.image_resize is ImageResize.PALIGEMMA_PROCESSOR

    def truncation_length(self, max_token_len: int | None) -> int | None:
        """Where prompts are cut: `--max_token_len` when given, else MultiNet's (None: never, bucketed)."""
        return max_token_len or self.max_prompt_tokens

    def decoding_budget(self, max_decoding_steps: int | None) -> int:
        """Most tokens decoded per call: `--max_decoding_steps` when given, else MultiNet's budget (text), else
        openpi's for Pi0-FAST action tokens."""
        return max_decoding_steps or self.max_new_tokens or FAST_ACTION_DECODING_STEPS

    def applied(self, max_token_len: int | None, max_decoding_steps: int | None, *, decodes_tokens: bool,
                decoding: str, pads_vocabulary: bool) -> dict[str, Any]:
        """The protocol as a run applies it (flag overrides included), as JSON: what the run manifest and the
        metrics files record. `decodes_tokens`: False for a flow-matching model on an action domain (no budget, no
        decoding); `decoding`: one of `DECODING_MODES`; `pads_vocabulary`: whether the padded-vocabulary quirk applies
        (only to models whose vocabulary is the prompt tokenizer's, PaliGemma's)."""
        if decoding not in DECODING_MODES:
            raise ValueError(f"decoding must be one of {DECODING_MODES}, got {decoding!r}")
        return {
            "name": self.name,
            "prompt_format": self.prompt_format.value,
            # None: untruncated (power-of-two buckets); a chat is cut where its tokenizer cuts it
            "max_prompt_tokens": self.truncation_length(max_token_len) if self.chat is None else self.chat.max_tokens,
            "max_new_tokens": self.decoding_budget(max_decoding_steps) if decodes_tokens else None,
            "decoding": decoding if decodes_tokens else None,
            "logits_vocab_size": self.logits_vocab_size if decodes_tokens and pads_vocabulary else None,
            "image_resize": self.image_resize.value,
            "blank_image": self.blank_image,
            "turn_by_turn": self.turn_by_turn,
            "action_from_dict": self.action_from_dict,
            "temperature": self.temperature,
            "chat": None if self.chat is None else self.chat.applied(),
            "answer": self.answer,
            "ground_truth": self.ground_truth,
            "answers_in_text": self.answers_in_text,
        }


def _openpi(max_prompt_tokens: int) -> Protocol:
    return Protocol(PromptFormat.OPENPI, ImageResize.OPENPI, max_prompt_tokens)


def _paligemma(max_new_tokens: int, **options: Any) -> Protocol:
    return Protocol(PromptFormat.PALIGEMMA_PROCESSOR, ImageResize.PALIGEMMA_PROCESSOR, None, max_new_tokens,
                    logits_vocab_size=HF_PALIGEMMA_VOCAB_SIZE, **options)


OPENX_PROTOCOL = _openpi(48)
# MultiNet's Pi0 script rebuilt these datasets' ground truth from the action dict as their OXE transforms do, and
# recomputed the split's statistics over the rebuilt actions (`data/openx.py` `ACTION_REBUILDS`).
OPENX_ACTION_FROM_DICT = {"openx_single_arm": "bridge", "openx_mobile_manipulation": "rt1"}

# The ODinW subsets MultiNet v1.0 evaluated and their class counts, which bound a valid answer
# (`definitions/odinw.py` `SUB_DATASET_CATEGORIES`): the categories under the root, which are the prompt's options.
ODINW_SUBSET_CLASSES = {
    "AerialMaritimeDrone": 5, "AmericanSignLanguageLetters": 26, "Aquarium": 7, "BCCD": 3, "ChessPieces": 13,
    "DroneControl": 8, "EgoHands": 4, "HardHatWorkers": 3, "MaskWearing": 2, "NorthAmericaMushrooms": 2,
    "OxfordPets": 37, "PKLot": 2, "ShellfishOpenImages": 3, "ThermalCheetah": 2, "UnoCards": 15,
    "VehiclesOpenImages": 5, "boggleBoards": 36, "brackishUnderwater": 6, "dice": 6, "openPoetryVision": 43,
    "plantdoc": 30, "selfdrivingCar": 11, "thermalDogsAndPeople": 2, "websiteScreenshots": 8,
}


class Output(enum.Enum):
    """What the model produces for a domain, which decides the model call."""

    CONTINUOUS_ACTIONS = "continuous_actions"  # sample_actions -> first step, first min(32, D) dims
    DISCRETE_ACTION = "discrete_action"  # sample_actions -> dim 0, unnormalized, rounded
    TEXT = "text"  # sample_tokens -> decoded text -> parser
    KNOWLEDGE_PROBES = "knowledge_probes"  # score_options (text probe) + sample_actions (action probe)


@dataclasses.dataclass(frozen=True)
class Domain:
    """One evaluation domain: the name `data.load` and `metrics.score` take, its folder in MultiNet's
    layout, what the model produces, the `score` metrics the summary shows first, and MultiNet's protocol."""

    name: str
    folder: str
    output: Output
    headline_metrics: tuple[str, ...]
    protocol: Protocol
    scored_as: str | None = None  # the `metrics.score` domain of its prediction records, when not its name

    @property
    def score_domain(self) -> str:
        return self.scored_as or self.name

    @property
    def uses_actions(self) -> bool:
        return self.output is not Output.TEXT

    def under(self, protocol: Protocol) -> Domain:
        """This domain run under `protocol` (a family's own, `registry.Family.protocol`): a protocol answering in text
        (`Protocol.answers_in_text`) makes it a text domain, scored as this one."""
        output = Output.TEXT if protocol.answers_in_text else self.output
        return dataclasses.replace(self, protocol=protocol, output=output)

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
               ("exact_match", "micro_f1", "macro_f1", "avg_dataset_amae", "percentage_invalids"), _openpi(256)),
        Domain("piqa", "piqa", Output.TEXT, ("overall_accuracy", "valid_accuracy", "invalid_percentage"),
               _paligemma(10, blank_image=0)),
        Domain("odinw", "odinw", Output.TEXT, ("overall_accuracy", "macro_f1", "invalid_percentage"), _paligemma(10)),
        Domain("sqa3d", "sqa3d", Output.TEXT, _VQA_HEADLINE, _paligemma(50)),
        Domain("openx_multi_embodiment", "openx_multi_embodiment", Output.TEXT, _VQA_HEADLINE, _paligemma(50)),
        Domain("bfcl", "bfcl_v3", Output.TEXT,
               ("exact_match_accuracy", "avg_turn_of_first_failure", "avg_similarity_score", "invalid_turn_percentage"),
               _paligemma(150, blank_image=255, turn_by_turn=True)),
        Domain("act2answer", "act2answer", Output.KNOWLEDGE_PROBES,
               ("text_probe_accuracy", "text_invalid_rate", "action_probe_accuracy", "action_invalid_rate"), OPENX_PROTOCOL,
               scored_as="act2answer_probes"),
    )
}
ALL_DOMAINS = ("openx_bimanual", *_FIXED_DOMAINS)
# Other names every command and function accepts for a domain (MultiNet's folder and script names, short forms), each
# standing for one canonical name: the one outputs, metrics files and manifests use.
ALIASES = {
    "overcooked": "overcooked_ai",
    "robovqa": "openx_multi_embodiment",
    "openx_robovqa": "openx_multi_embodiment",
    "bfcl_v3": "bfcl",
}


def names_help() -> str:
    """The accepted domain names, for flag help and errors."""
    aliases = ", ".join(f"{alias} = {name}" for alias, name in ALIASES.items())
    return f"openx_<dataset>, {', '.join(_FIXED_DOMAINS)} (also accepted: {aliases})"


def lookup(name: str) -> Domain:
    """The table entry for a domain name or alias (`ALIASES`); any other `openx_<dataset>` is a continuous-action
    domain. The entry's `name` is the canonical one."""
    name = ALIASES.get(name, name)
    if name in _FIXED_DOMAINS:
        return _FIXED_DOMAINS[name]
    if name.startswith("openx_") and len(name) > len("openx_"):
        protocol = dataclasses.replace(OPENX_PROTOCOL, action_from_dict=OPENX_ACTION_FROM_DICT.get(name))
        return Domain(name, name, Output.CONTINUOUS_ACTIONS, _OPENX_HEADLINE, protocol)
    raise ValueError(f"unknown domain {name!r}; known: {names_help()}")


def canonical(name: str) -> str:
    """A domain's canonical name, given any accepted one (unknown names fail as in `lookup`)."""
    return lookup(name).name


def unnormalize(values: np.ndarray, mean: Sequence[float], std: Sequence[float],
                epsilon: float = UNNORMALIZE_EPSILON) -> np.ndarray:
    """openpi's z-score inverse over the last axis (as many dims as `values` has); LeRobot's with `epsilon=0`
    (its unnormalizer multiplies by the std alone)."""
    dims = values.shape[-1]
    mean = np.asarray(mean, dtype=np.float64)[:dims]
    std = np.asarray(std, dtype=np.float64)[:dims]
    if mean.shape[0] < dims or std.shape[0] < dims:
        raise ValueError(f"normalization stats have {mean.shape[0]} dims, the actions need {dims}")
    return values.astype(np.float64) * (std + epsilon) + mean


def unnormalize_openpi_quantiles(values: np.ndarray, q01: Sequence[float] | None, q99: Sequence[float] | None) -> np.ndarray:
    """openpi's quantile inverse over the last axis (`Unnormalize._unnormalize_quantile`, its Pi0.5 and Pi0-FAST
    policies): `(x + 1) / 2 * (q99 - q01 + 1e-6) + q01`."""
    if q01 is None or q99 is None:
        raise ValueError("normalization stats have no q01 / q99, which openpi's quantile rule (Pi0.5, Pi0-FAST) needs")
    dims = values.shape[-1]
    low, high = np.asarray(q01, np.float64)[:dims], np.asarray(q99, np.float64)[:dims]
    if low.shape[0] < dims or high.shape[0] < dims:
        raise ValueError(f"normalization stats have {min(low.shape[0], high.shape[0])} dims, the actions need {dims}")
    return (values.astype(np.float64) + 1.0) / 2.0 * (high - low + UNNORMALIZE_EPSILON) + low


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


# The per-dimension entries of a split's action statistics (`data.action_stats`).
PER_DIM_STATS = ("min", "max", "mean", "std", "q01", "q99")
# Entries a statistics mapping orders per dimension (low <= high).
ORDERED_STATS = (("min", "max"), ("q01", "q99"))


def ordered_stats_problem(stats: Mapping[str, Any]) -> str | None:
    """What is out of order in one statistics mapping (a negative std, a min above its max, a q01 above its q99),
    first dimension named; None when nothing is. Unnormalizing with such statistics flips or mirrors actions and
    fails nowhere. Entries absent (or None) are not asked about; finiteness and widths are their readers' checks."""
    std = stats.get("std")
    if std is not None and (np.asarray(std, np.float64) < 0).any():
        values = np.asarray(std, np.float64).reshape(-1)
        dim = int(np.argmax(values < 0))
        return f"'std' is negative in {int((values < 0).sum())} of {values.size} dims, first dim {dim}: {values[dim]:.6g}"
    for low_name, high_name in ORDERED_STATS:
        if stats.get(low_name) is None or stats.get(high_name) is None:
            continue
        low, high = np.asarray(stats[low_name], np.float64).reshape(-1), np.asarray(stats[high_name], np.float64).reshape(-1)
        if low.shape != high.shape:
            return f"{low_name!r} has {low.size} dims, {high_name!r} {high.size}"
        if (low > high).any():
            dim = int(np.argmax(low > high))
            return (f"{low_name!r} above {high_name!r} in {int((low > high).sum())} of {low.size} dims, first dim {dim}: "
                    f"{low_name} {low[dim]:.6g}, {high_name} {high[dim]:.6g}")
    return None


def transformed_stats(stats: dict[str, Any], transform: Any) -> dict[str, Any]:
    """Statistics over actions `transform` maps dim-wise (a slice of dims, zero dims appended): each per-dim entry
    mapped as an action is, `size` updated. Min, max, q01 and q99 are then exactly those of the mapped actions; so are
    mean and std up to rounding (a zero dim's are 0)."""
    mapped = {key: transform(np.asarray(stats[key], np.float64)).tolist() for key in PER_DIM_STATS if key in stats}
    return {**stats, **mapped, **({"size": [len(mapped["min"])]} if "size" in stats and "min" in mapped else {})}


@dataclasses.dataclass(frozen=True)
class ActionNorm:
    """The statistics that turn a family's normalized actions into dataset units, by the family's
    `action_normalization` (`registry.ACTION_NORMALIZATIONS`): "mean_std" (openpi's z-score: mean, std),
    "lerobot_mean_std" (LeRobot's, without openpi's epsilon),
    "openpi_quantiles" (openpi's quantile rule: q01, q99) or "quantiles" (OpenVLA's bounds: q01, q99, mask)."""

    kind: str
    stats: dict[str, Any]

    def __call__(self, values: np.ndarray) -> np.ndarray:
        if self.kind == "mean_std":
            return unnormalize(values, self.stats["mean"], self.stats["std"])
        if self.kind == "lerobot_mean_std":
            return unnormalize(values, self.stats["mean"], self.stats["std"], epsilon=0.0)
        if self.kind == "openpi_quantiles":
            return unnormalize_openpi_quantiles(values, self.stats.get("q01"), self.stats.get("q99"))
        return unnormalize_quantiles(values, self.stats["q01"], self.stats["q99"], self.stats.get("mask"))


def continuous_predictions(actions: np.ndarray, action_dim: int, norm: ActionNorm) -> list[list[float] | None]:
    """Open-X: `[b, horizon, 32]` model actions -> per row the first step's first min(32, D) dims, unnormalized.

    A row with a non-finite value (a FAST sequence that did not decode) is invalid (None).
    """
    dims = min(MAX_ACTION_DIMS, action_dim, np.shape(actions)[-1])
    values = norm(np.asarray(actions)[:, 0, :dims])
    return [row.tolist() if np.all(np.isfinite(row)) else None for row in values]


def discrete_predictions(actions: np.ndarray, norm: ActionNorm) -> tuple[list[int | None], list[int]]:
    """Overcooked: dimension 0 of the first step, unnormalized and rounded: (predictions, invalid (None) outside
    0..35; the same clipped into 0..35, a non-finite value as 0, for MultiNet's `avg_clipped_*` metrics)."""
    values = norm(np.asarray(actions)[:, 0, :1])[:, 0]
    rounded = [int(np.round(value)) if np.isfinite(value) else None for value in values]
    predictions = [index if index is not None and 0 <= index < NUM_OVERCOOKED_ACTIONS else None for index in rounded]
    clipped = [0 if index is None else min(max(index, 0), NUM_OVERCOOKED_ACTIONS - 1) for index in rounded]
    return predictions, clipped


def parse_piqa(text: str) -> int | None:
    """PIQA: 0 or 1 when the whole stripped output is exactly "0" or "1", else invalid."""
    answer = text.strip()
    return int(answer) if answer in PIQA_ANSWERS else None


def parse_odinw(text: str, num_options: int) -> int | None:
    """ODinW: Python's `int()` of the whole stripped output, valid in [0, num_options) (so " +2 " and "0_2" are 2)."""
    try:
        index = int(text.strip())
    except ValueError:
        return None
    return index if 0 <= index < num_options else None


def parse_answer(text: str) -> str | None:
    """SQA3D / RoboVQA: the stripped answer text; empty output is invalid."""
    answer = text.strip()
    return answer or None


def is_turns_of_calls(ground_truth: Any) -> bool:
    """Whether a BFCL ground truth is what scoring reads: a list of turns, each a list of call strings (checked where
    the data is read and where `score` takes records)."""
    return isinstance(ground_truth, list) and all(
        isinstance(turn, list) and all(isinstance(call, str) for call in turn) for turn in ground_truth)


def parse_function_calls(text: str) -> list[str]:
    """BFCL: the function calls in one turn's stripped output, as written (empty when none)."""
    return _FUNCTION_CALL.findall(text.strip())


_NUMBER = re.compile(r"\d+")
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def parse_text_magma(kind: str, text: str, sample: dict[str, Any]) -> Any:
    """As MultiNet's Magma scripts read an answer (d6fe80e): PIQA the first run of digits, any number
    (`piqa_inference._validate_outputs_and_parse`); ODinW the first run of digits when it names a class, an output
    starting with "Coordinate" invalid (`odinw_single_inference._validate_output`); SQA3D / RoboVQA the stripped text,
    empty invalid, lowercased without punctuation or repeated spaces, a lone digit as its word (`_normalize_text`);
    Overcooked the 36 joint-action probabilities of a list literal (`parse_joint_probabilities`); Open-X the action
    values of a list literal, as many as the ground truth's (`parse_action_values`)."""
    if kind == "discrete":
        return parse_joint_probabilities(text)
    if kind == "continuous":
        return parse_action_values(text, len(sample["ground_truth"]))
    text = text.strip()
    numbers = _NUMBER.findall(text)
    if kind == "multiple_choice":
        return int(numbers[0]) if numbers else None
    if kind == "classification":
        index = int(numbers[0]) if numbers and not text.startswith("Coordinate") else None
        return index if index is not None and index < int(sample["num_options"]) else None
    if kind == "vqa":
        from multinet_jax.metrics.text_answers import normalize_text

        answer = normalize_text(text)
        return None if not text else _NUMBER_WORDS[int(answer)] if len(answer) == 1 and answer in "0123456789" else answer
    raise ValueError(f"{kind} has no single-answer text output")


# MultiNet's Overcooked rules: the 36 probabilities sum to 1 within this (`_validate_list_output`).
PROBABILITY_SUM_TOLERANCE = 1e-5


def literal_answer(text: str) -> Any:
    """The stripped answer as a Python literal (`ast.literal_eval`), else as JSON, else None: how MultiNet's Magma
    Overcooked and quadrupedal scripts read their answers (decoded answers: at most the decoding budget's tokens)."""
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def script_joint_probabilities(values: Any) -> list[float] | None:
    """MultiNet's Magma Overcooked rule (`overcooked_single_inference._validate_list_output`): a list of 36 values
    that `float()` takes (numbers, numeric strings, booleans) summing to 1 within 1e-5, whatever their signs; the
    floats, or None (invalid: Brier errors 2, action -1). One deviation: a non-finite value is invalid here, where
    MultiNet's sum check passed a "nan" and its Brier errors became NaN."""
    if not isinstance(values, list) or len(values) != NUM_OVERCOOKED_ACTIONS:
        return None
    try:
        probabilities = [float(value) for value in values]
    except (ValueError, TypeError, OverflowError):
        return None
    if not all(math.isfinite(value) for value in probabilities) or abs(sum(probabilities) - 1.0) > PROBABILITY_SUM_TOLERANCE:
        return None
    return probabilities


def script_action_values(values: Any, dims: int) -> list[float] | None:
    """MultiNet's Magma quadrupedal rule (`magma_openx_quadrupedal_inference._validate_text_output`, under the NumPy
    1.x it ran with, where `np.string_` was `np.bytes_`): a parsed answer that is not a list stands for a one-value
    list; valid when it holds `dims` values, none a str or a set, each taken by `float()`; the floats, or None
    (invalid: scored with the split's max - min). Two deviations: a value `float()` refuses (None, a list, a dict) makes
    the row invalid here, where MultiNet's `float()` raised and the script dropped the whole batch; a non-finite value
    (JSON's NaN, 1e999) is invalid here, as for every Open-X prediction (MultiNet's errors became NaN or inf)."""
    values = values if isinstance(values, list) else [values]
    if len(values) != dims or any(isinstance(value, (str, set)) for value in values):
        return None
    try:
        floats = [float(value) for value in values]
    except (ValueError, TypeError, OverflowError):
        return None
    return floats if all(math.isfinite(value) for value in floats) else None


def parse_action_values(text: str, dims: int) -> list[float] | None:
    """Open-X under MultiNet's Magma quadrupedal script: the answer read as a literal (`literal_answer`), valid by
    `script_action_values` (an unparseable answer, None, is never valid)."""
    return script_action_values(literal_answer(text), dims)


def parse_joint_probabilities(text: str) -> list[float] | None:
    """Overcooked under MultiNet's Magma script: the answer read as a literal (`literal_answer`), valid by
    `script_joint_probabilities`."""
    return script_joint_probabilities(literal_answer(text))


def parse_text(domain: Domain, text: str, sample: dict[str, Any]) -> Any:
    """Prediction of a single-answer text domain from its decoded output, by its protocol's `answer` rule."""
    kind = domain.metric_kind
    if domain.protocol.answer == "magma_scripts":
        return parse_text_magma(kind, text, sample)
    if kind == "multiple_choice":
        return parse_piqa(text)
    if kind == "classification":
        return parse_odinw(text, int(sample["num_options"]))
    if kind == "vqa":
        return parse_answer(text)
    raise ValueError(f"domain {domain.name} has no single-answer text output")
