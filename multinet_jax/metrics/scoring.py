"""`score(domain, records)`: MultiNet's metrics for a list of prediction records, in one call.

A record is one line of the `multinet-jax score` JSONL input: `id` (not null), `prediction`, `ground_truth`
(+ `num_options` for ODinW, and `subset`, its subset's name, when the records come from several: see
`SUBSET_MEAN`; no other domain takes a `subset`). Per domain the prediction / ground truth are: Open-X a list of
floats / list of floats; Overcooked a joint action index or 36 probabilities / joint action index; PIQA and
ODinW a choice index / choice index; SQA3D and RoboVQA text / text; BFCL per-turn lists of call
strings / per-turn lists of call strings (optionally `responses`: the raw per-turn model outputs
used for similarity; without them the predicted calls are). Predictions may be null or malformed
(scored as invalid); malformed ground truth, a missing field or a duplicate id is a `RecordError`. Open-X predictions
so large that their errors would overflow float64 count as invalid (`invalid_by_overflow` names them).
Act2Answer records are episode logs instead (`metrics/act2answer_scoring.py`: id, category, layout, target,
cube_position, tiles, ...).

The similarity metrics of SQA3D, RoboVQA and BFCL need all-MiniLM-L6-v2. Without it `score` refuses,
unless the caller opts out with `skip_similarity=True`: then every other metric is computed and the
result says so (`"similarity_metrics": "skipped (no sentence embedder given)"`), so a metrics file
without similarity numbers explains itself.
"""

from __future__ import annotations

import difflib
import json
import pathlib
import re
from typing import Any, Mapping, Sequence

import numpy as np

from multinet_jax import domains
from multinet_jax.metrics import act2answer_scoring, choices, continuous_actions, discrete_actions, function_calling, text_answers
from multinet_jax.metrics.embedder import SentenceEmbedder
from multinet_jax.metrics.records import (RecordError, as_written, check_no_harness_outputs, check_unique_ids, fields, integer_ground_truth,
                                         is_number, require_field)
from multinet_jax.metrics.json_values import to_python

KINDS = ("continuous", "discrete", "multiple_choice", "classification", "vqa", "function_calls", "episodes", "act2answer_probes")
_DOMAIN_KINDS = {  # by canonical name; `domains.ALIASES` are accepted too
    "overcooked_ai": "discrete",
    "piqa": "multiple_choice",
    "odinw": "classification",
    "sqa3d": "vqa",
    "openx_multi_embodiment": "vqa",  # MultiNet's RoboVQA split lives under the Open-X name
    "bfcl": "function_calls",
    "act2answer": "episodes",
    "act2answer_probes": "act2answer_probes",  # what `eval --domains=act2answer` writes
}
SIMILARITY_KINDS = ("vqa", "function_calls")  # the kinds whose metrics include embedding similarity
PIQA_CHOICES = 2
EMBEDDER_HELP = (
    "pass the all-MiniLM-L6-v2 sentence-transformers directory (model.safetensors, tokenizer.json), "
    "e.g. ../shared/models/all-MiniLM-L6-v2 (Python: embedder=...; CLI: --embedder_dir=...), "
    "or leave the similarity metrics out explicitly (Python: skip_similarity=True; CLI: --skip_similarity)"
)
SIMILARITY_SKIPPED_KEY = "similarity_metrics"
SIMILARITY_SKIPPED = "skipped (no sentence embedder given)"
# MultiNet's v1.0 Pi0 pipelines stored these metrics under other names than its harness calculators give them
# (e.g. `invalid_predictions_percentage` in the published Open-X and Overcooked results): both names are given.
PIPELINE_NAMES = {
    "continuous": {"invalid_predictions_percentage": "invalid_percentage", "total_timesteps": "num_timesteps"},
    "discrete": {"invalid_predictions_percentage": "percentage_invalids"},
}
# Overcooked records may carry the rounded action clipped into [0, 35]: then the `avg_clipped_*` metrics are added.
CLIPPED_FIELD = "clipped_prediction"
# PIQA, Overcooked, SQA3D and RoboVQA records may name the answer rule that parsed them (`domains.ANSWER_RULES`): under
# MultiNet's Magma scripts any number is a valid PIQA answer, wrong unless it is the label
# (`piqa_inference._calculate_final_metrics`), any 36 finite values summing to 1 a valid Overcooked distribution
# (`domains.script_joint_probabilities`), and a VQA prediction is the script's normalized answer, compared with the
# label as written (`text_answers.vqa`); by default only 0 and 1, probabilities in [0, 1], and both texts normalized.
ANSWER_RULE_FIELD = "answer_rule"
MAGMA_SCRIPTS_RULE = "magma_scripts"
# The answer rules `score` reads otherwise than the default: a record parsed under one of them must name it.
RULES_SCORED_APART = frozenset({MAGMA_SCRIPTS_RULE})
# A domain's named action slices (`continuous_actions.ACTION_SLICES`) are not scored on a ground truth of other dims
# (MultiNet's Magma script scored openx_bimanual's last 7 of 14): the result says so under this key.
SLICES_SKIPPED_KEY = "action_slices_not_scored"
# ODinW records naming their `subset` are scored subset by subset: the per-subset metrics under SUBSETS_KEY, and at
# the top level each rate's mean over the subsets and each count's total, with AGGREGATION_KEY saying so. Records of
# any other domain naming one are refused (they would be pooled).
SUBSET_FIELD = "subset"
SUBSETS_KEY = "per_subset"
AGGREGATION_KEY = "aggregation"
SUBSET_MEAN = ("rates: the mean over the subsets, each scored alone over its own categories (as MultiNet scored and "
               "reported ODinW); counts: totals")
# Where an Open-X `<domain>_metrics.json` of `eval` records the action statistics it scored with (min, max, mean).
SCORING_STATS_KEY = "scoring_action_stats"
# Open-X predictions whose errors would overflow float64 are invalid; the result names the first few.
OVERFLOW_KEY = "invalid_by_overflow"
OVERFLOW_IDS_SHOWN = 10


# An Open-X dataset's name as MultiNet and its data folders spell them: `openx_` and lower-case words.
_OPENX_NAME = re.compile(r"openx_[a-z0-9]+(_[a-z0-9]+)*")
# The Open-X names scored otherwise than a generic `openx_<dataset>`: with capability slices, or by another kind. A
# near-miss of one of them (a typo) would be scored as a generic dataset without a word: refused instead.
_OPENX_SCORED_APART = sorted({*continuous_actions.ACTION_SLICES,
                              *(name for name in (*_DOMAIN_KINDS, *domains.ALIASES) if name.startswith("openx_"))})
NEAR_MISS_CUTOFF = 0.8  # difflib's ratio; MultiNet's other Open-X names (openx_single_arm, ...) score below 0.65


_SIMILARITY_OPTION = (SIMILARITY_KINDS, "is for the text-similarity metrics of sqa3d, robovqa and bfcl", "has none")
# Each option of `score` a domain's metrics may not read: (the kinds that read it, what it is, what the domain lacks).
OPTION_USES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "action_stats": (("continuous",), "are Open-X's action statistics", "scores no actions"),
    "embedder": _SIMILARITY_OPTION,
    "skip_similarity": _SIMILARITY_OPTION,
    "num_choices": (("multiple_choice",), "is PIQA's options per question (ODinW's are each record's num_options)",
                    "reads none"),
}


class OptionError(ValueError):
    """An option `score`'s domain never reads (`OPTION_USES`): refused, not ignored, since the result would look
    scored with it."""

    def __init__(self, option: str, domain: str):
        self.option = option
        self.domain = domain
        super().__init__(self.describe(f"{option}=", f"domain {domain!r}"))

    def describe(self, option: str, domain: str) -> str:
        """What is wrong, with the option and the domain spelled as the caller names them (the CLI: its flags)."""
        _, purpose, lack = OPTION_USES[self.option]
        return f"{option} {purpose}; {domain} {lack}"


def check_options_apply(domain: str, options: Mapping[str, Any]) -> None:
    """Each given option (not None or False) of `options` (`OPTION_USES`' names) is one `domain`'s metrics read."""
    kind = metric_kind(domain)
    for option, value in options.items():
        if value is not None and value is not False and kind not in OPTION_USES[option][0]:
            raise OptionError(option, domain)


def metric_kind(domain: str) -> str:
    """Which calculator scores `domain`: a domain name or alias (`domains.names_help()`), `openx` (any Open-X dataset)
    or `act2answer_probes` (the records of `eval --domains=act2answer`). An `openx_<dataset>` name must be lower-case
    words joined by `_` and no near-miss of a name scored apart (`_OPENX_SCORED_APART`): `openx_bimanaul` would lose
    openx_bimanual's capability metrics."""
    domain = domains.ALIASES.get(domain, domain)
    if domain in _DOMAIN_KINDS:
        return _DOMAIN_KINDS[domain]
    if domain == "openx" or domain in continuous_actions.ACTION_SLICES:
        return "continuous"
    if domain.startswith("openx_"):
        _check_openx_name(domain)
        return "continuous"
    raise ValueError(f"unknown domain {domain!r}; known: openx, {domains.names_help()}, act2answer_probes")


def _check_openx_name(domain: str) -> None:
    """A generic `openx_<dataset>` name is well-formed and no near-miss of a name scored apart."""
    if not _OPENX_NAME.fullmatch(domain):
        raise ValueError(f"malformed Open-X domain {domain!r}: expected openx_<dataset>, the dataset's name in lower-case "
                         "words joined by '_' (e.g. openx_bimanual)")
    near = difflib.get_close_matches(domain, _OPENX_SCORED_APART, n=1, cutoff=NEAR_MISS_CUTOFF)
    if near:
        raise ValueError(f"unknown domain {domain!r}: did you mean {near[0]!r}? (scored as a generic Open-X dataset, it "
                         f"would lose {near[0]}'s own metrics; score another dataset of this name as 'openx')")


def score(
    domain: str,
    records: Sequence[Mapping[str, Any]],
    *,
    action_stats: Mapping[str, Any] | None = None,
    embedder: SentenceEmbedder | str | pathlib.Path | None = None,
    num_choices: int | None = None,
    skip_similarity: bool = False,
) -> dict[str, Any]:
    """MultiNet's metric names -> values (plain Python) for `records` of `domain`.

    `action_stats` (Open-X): per-dimension `min`, `max`, `mean` lists; defaults to the statistics
    of the records' own ground truth. `embedder` (SQA3D/RoboVQA/BFCL similarity): a
    `SentenceEmbedder` or its model directory. `skip_similarity`: score those domains without an
    embedder, leaving the similarity metrics out (marked in the result). `num_choices`: PIQA's
    options per question (default 2). An option the domain does not read is an `OptionError`.
    """
    if skip_similarity and embedder is not None:
        raise ValueError("an embedder and skip_similarity=True contradict each other: pass one of them")
    check_options_apply(domain, {"action_stats": action_stats, "embedder": embedder, "num_choices": num_choices,
                                 "skip_similarity": skip_similarity})
    kind = metric_kind(domain)
    num_choices = PIQA_CHOICES if num_choices is None else num_choices
    if not isinstance(num_choices, (int, np.integer)) or isinstance(num_choices, bool) or num_choices < 2:
        raise ValueError(f"num_choices must be an integer of at least 2, got {num_choices!r}")
    num_choices = int(num_choices)
    if not records:
        raise ValueError("no records to score")
    records = as_written(records)
    result = _score_kind(kind, domain, records, action_stats, embedder, num_choices, skip_similarity)
    return {**result, **{alias: result[name] for alias, name in PIPELINE_NAMES.get(kind, {}).items()}}


def _score_kind(
    kind: str,
    domain: str,
    records: Sequence[Mapping[str, Any]],
    action_stats: Mapping[str, Any] | None,
    embedder: SentenceEmbedder | str | pathlib.Path | None,
    num_choices: int,
    skip_similarity: bool,
) -> dict[str, Any]:
    """`score` for one metric kind (MultiNet's harness names)."""
    if kind == "episodes":
        if "target" not in records[0] and "action_prediction" in records[0]:  # an easy slip, named for what it is
            raise RecordError(0, "target", "missing: these are the probe records `eval --domains=act2answer` writes "
                              "(action_prediction), scored as --domain=act2answer_probes; act2answer scores episode logs")
        return act2answer_scoring.score_episodes(records)
    if kind == "act2answer_probes":
        return act2answer_scoring.score_probes(records)
    check_unique_ids(records)
    if kind != "classification":
        _check_no_subsets(records, domain)
    predictions, ground_truth = fields(records, "prediction"), fields(records, "ground_truth")
    check_no_harness_outputs(predictions)
    if kind == "continuous":
        inputs = continuous_actions.pack_continuous(predictions, ground_truth)
        stats = action_stats if action_stats is not None else continuous_actions.action_stats_from_ground_truth(inputs.ground_truth)
        inputs, overflowing = continuous_actions.invalidate_overflowing(inputs)
        slices = continuous_actions.ACTION_SLICES.get(domain, {})
        dims, spanned = inputs.ground_truth.shape[1], max((stop for _, stop in slices.values()), default=0)
        unsliced = {SLICES_SKIPPED_KEY: f"{sorted(slices)} span {spanned} dims, the ground truth has {dims}"} if slices and spanned != dims else {}
        result = to_python(continuous_actions.continuous(inputs, stats)) | unsliced
        if slices and not unsliced:
            result[continuous_actions.CAPABILITY_KEY] = to_python(
                continuous_actions.capability_metrics(predictions, inputs.ground_truth, stats, slices))
        if overflowing.size:  # counted in total_invalid_preds; named here so the count explains itself
            ids = [records[row]["id"] for row in overflowing[:OVERFLOW_IDS_SHOWN]]
            result[OVERFLOW_KEY] = {"count": int(overflowing.size), "ids": ids, "why": continuous_actions.OVERFLOW_REASON}
        return result
    if kind == "discrete":
        packed = discrete_actions.pack_discrete(predictions, ground_truth, any_sign=_answer_rule(records) == MAGMA_SCRIPTS_RULE)
        result = to_python(discrete_actions.discrete(packed))
        clipped = [CLIPPED_FIELD in record for record in records]
        if any(clipped) and not all(clipped):  # the avg_clipped_* metrics would be left out without a word
            raise RecordError(clipped.index(False), CLIPPED_FIELD, f"missing, but record {clipped.index(True)} has one: "
                              "give it on every record or on none")
        if all(clipped):  # the evaluator's Pi0 records (MultiNet's Pi0 script)
            result |= to_python(discrete_actions.clipped(fields(records, CLIPPED_FIELD), ground_truth))
        return result
    if kind == "multiple_choice":
        truth = integer_ground_truth(ground_truth, num_choices)
        predicted = choices.pack_choices(predictions, [num_choices] * len(records), any_integer=_answer_rule(records) == MAGMA_SCRIPTS_RULE)
        return to_python(choices.multiple_choice(predicted, truth, num_choices))
    if kind == "classification":
        return _classification_by_subset(records, predictions, ground_truth)
    model = None if skip_similarity else _embedder(embedder, domain)
    if kind == "vqa":
        answers = [_text(value, index) for index, value in enumerate(ground_truth)]
        result = to_python(text_answers.vqa(predictions, answers, model, script_rule=_answer_rule(records) == MAGMA_SCRIPTS_RULE))
    else:
        truths = [function_calling.true_turns(value, index) for index, value in enumerate(ground_truth)]
        predicted_turns = [function_calling.predicted_turns(prediction) for prediction in predictions]
        _check_responses_everywhere_or_nowhere(records)
        responses = [_responses(record, turns, index) for index, (record, turns) in enumerate(zip(records, predicted_turns))]
        result = to_python(function_calling.function_calls(predicted_turns, truths, responses, model))
    return result if model is not None else {**result, SIMILARITY_SKIPPED_KEY: SIMILARITY_SKIPPED}


def _classification_by_subset(records: Sequence[Mapping[str, Any]], predictions: list[Any], ground_truth: list[Any]) -> dict[str, Any]:
    """ODinW as MultiNet scored it: each subset alone, over its own classes (`odinw_hf_inference`, one run per
    subset), and the subsets' mean (`data_analysis.safe_mean`, NaN left out) as the domain's figure. Pooling subsets
    would merge their classes, whose indices mean other categories in each. Records without `subset` are one subset;
    several option counts among them are several subsets, refused."""
    num_options = [_num_options(record, index) for index, record in enumerate(records)]
    subsets = _subsets(records, num_options)
    if subsets is None:
        return _classification(predictions, ground_truth, num_options)
    per_subset = {}
    for name in sorted(set(subsets)):
        rows = [row for row, subset in enumerate(subsets) if subset == name]
        per_subset[name] = _classification([predictions[row] for row in rows], [ground_truth[row] for row in rows],
                                           [num_options[row] for row in rows])
    first = next(iter(per_subset.values()))
    means = {metric: _nan_mean([scored[metric] for scored in per_subset.values()])
             for metric, value in first.items() if isinstance(value, float)}
    totals = {metric: sum(scored[metric] for scored in per_subset.values())
              for metric, value in first.items() if isinstance(value, int)}
    return {**means, **totals, SUBSETS_KEY: per_subset, AGGREGATION_KEY: SUBSET_MEAN}


def _check_no_subsets(records: Sequence[Mapping[str, Any]], domain: str) -> None:
    """Only ODinW is scored subset by subset: elsewhere records naming their `subset` would be pooled without a word."""
    index = next((index for index, record in enumerate(records) if SUBSET_FIELD in record), None)
    if index is not None:
        raise RecordError(index, SUBSET_FIELD, f"given, but {domain} is not scored by subset (only odinw is): its "
                          "subsets would be pooled; score each subset's records alone, or leave the field out")


def _classification(predictions: list[Any], ground_truth: list[Any], num_options: list[int]) -> dict[str, Any]:
    truth = integer_ground_truth(ground_truth, num_options)
    return to_python(choices.classification(choices.pack_choices(predictions, num_options), truth, max(num_options)))


def _subsets(records: Sequence[Mapping[str, Any]], num_options: list[int]) -> list[str] | None:
    """Each record's `subset` (one of MultiNet's, with its category count as `num_options`), or None when no record
    names one and all share one option count."""
    named = [SUBSET_FIELD in record for record in records]
    if not any(named):
        if len(set(num_options)) > 1:
            raise RecordError(next(row for row, count in enumerate(num_options) if count != num_options[0]), SUBSET_FIELD,
                              f"missing, and the records have {len(set(num_options))} option counts "
                              f"({sorted(set(num_options))}), so they come from several ODinW subsets: name each "
                              "record's subset (MultiNet scored each alone; pooled, their class indices would merge)")
        return None
    subsets = []
    for index, record in enumerate(records):
        value = require_field(record, index, SUBSET_FIELD)
        if value not in domains.ODINW_SUBSET_CLASSES:  # MultiNet's script refused a subset outside its table
            raise RecordError(index, SUBSET_FIELD, f"expected one of MultiNet's {len(domains.ODINW_SUBSET_CLASSES)} ODinW "
                              f"subsets (domains.ODINW_SUBSET_CLASSES), got {value!r}")
        if num_options[index] != domains.ODINW_SUBSET_CLASSES[value]:  # empty classes would join its macro means
            raise RecordError(index, "num_options", f"{num_options[index]}, but MultiNet's ODinW subset {value!r} has "
                              f"{domains.ODINW_SUBSET_CLASSES[value]} categories")
        subsets.append(value)
    return subsets


def _nan_mean(values: list[float]) -> float:
    finite = [value for value in values if not np.isnan(value)]
    return float(np.mean(finite)) if finite else float("nan")


def _answer_rule(records: Sequence[Mapping[str, Any]]) -> Any:
    """The one answer rule the records name (field `answer_rule`; None: the default); records mixing rules are refused."""
    for index, record in enumerate(records):
        if record.get(ANSWER_RULE_FIELD) not in (None, *domains.ANSWER_RULES):  # a typo would score by the default rule
            raise RecordError(index, ANSWER_RULE_FIELD, f"expected one of {list(domains.ANSWER_RULES)}, got "
                              f"{record[ANSWER_RULE_FIELD]!r}")
    rules = {record.get(ANSWER_RULE_FIELD) for record in records}
    if len(rules) > 1:
        raise ValueError(f"records mix answer rules {sorted(map(str, rules))} (field {ANSWER_RULE_FIELD!r}): score each run alone")
    return rules.pop()


def _num_options(record: Mapping[str, Any], index: int) -> int:
    value = require_field(record, index, "num_options")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RecordError(index, "num_options", f"expected a positive integer, got {value!r}")
    return value


def _text(value: Any, index: int) -> str:
    if not isinstance(value, str):
        raise RecordError(index, "ground_truth", f"expected the answer text, got {type(value).__name__}")
    return value


def _check_responses_everywhere_or_nowhere(records: Sequence[Mapping[str, Any]]) -> None:
    """Similarity embeds every record's raw `responses` or every record's calls: a mix compares two kinds of text."""
    given = ["responses" in record for record in records]
    if any(given) and not all(given):
        raise RecordError(given.index(False), "responses", f"missing, but record {given.index(True)} has them: "
                          "similarity would embed raw answers for some conversations and parsed calls for others")


def _responses(record: Mapping[str, Any], turns: list[list[str]], index: int) -> str:
    """The conversation's model output for similarity: raw per-turn `responses` when given, else the calls."""
    if "responses" not in record:
        return "\n".join("\n".join(calls) for calls in turns)
    responses = record["responses"]
    if not isinstance(responses, list) or not all(isinstance(text, str) for text in responses):
        raise RecordError(index, "responses", "expected a list of per-turn response strings")
    if turns and len(responses) != len(turns):
        raise RecordError(index, "responses", f"{len(responses)} turns' answers for a prediction of {len(turns)} turns")
    return "\n".join(responses)


def _embedder(embedder: SentenceEmbedder | str | pathlib.Path | None, domain: str) -> SentenceEmbedder:
    if embedder is None:
        raise ValueError(f"domain {domain!r} scores text similarity with all-MiniLM-L6-v2: {EMBEDDER_HELP}")
    return embedder if isinstance(embedder, SentenceEmbedder) else SentenceEmbedder(embedder)


def load_records(path: str | pathlib.Path) -> tuple[list[dict[str, Any]], list[int]]:
    """Records of a predictions JSONL file and their 1-based line numbers (blank lines skipped)."""
    records, line_numbers = [], []
    with open(path, "rb") as file:
        for line_number, raw in enumerate(file, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not UTF-8 text ({error.reason} at byte {error.start})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not valid JSON: {error}") from None
            except _RepeatedKey as error:
                raise ValueError(f"{path}:{line_number}: key {error.key!r} given twice in one object (JSON readers "
                                 "keep either value)") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
            line_numbers.append(line_number)
    return records, line_numbers


class _RepeatedKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's dict, refusing a key given twice (`json.loads` keeps the last silently)."""
    record = dict(pairs)
    if len(record) != len(pairs):
        seen = set()
        raise _RepeatedKey(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return record


def load_action_stats(path: str | pathlib.Path, domain: str | None = None) -> dict[str, Any]:
    """An action-stats JSON file: an object with per-dimension `min`, `max`, `mean` lists (std, q01, q99 optional),
    or an Open-X `<domain>_metrics.json` of `eval`, whose `SCORING_STATS_KEY` holds those it scored with (so its
    predictions re-score to its numbers); given the `domain` scored, a metrics file of another Open-X dataset is
    refused (many share a width, so the width check would not see it), the generic `openx` taking any."""
    try:
        stats = json.loads(pathlib.Path(path).read_text(), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a JSON file ({error})") from None
    except _RepeatedKey as error:
        raise ValueError(f"{path}: key {error.key!r} given twice in one object (JSON readers keep either value)") from None
    if isinstance(stats, dict) and "metrics" in stats and "domain" in stats:  # a metrics file
        if SCORING_STATS_KEY not in stats:
            raise ValueError(f"{path}: a metrics file without {SCORING_STATS_KEY!r} (not an Open-X domain's, or "
                             "written before eval recorded them)")
        if domain is not None and domain != "openx" and stats["domain"] != domains.ALIASES.get(domain, domain):
            raise ValueError(f"{path}: field 'domain': the statistics of {stats['domain']!r}, not of the domain "
                             f"scored ({domain!r}): pass that domain's metrics file")
        stats = stats[SCORING_STATS_KEY]
    if not isinstance(stats, dict) or not all(key in stats for key in ("min", "max", "mean")):
        raise ValueError(f"{path}: expected a JSON object with per-dimension 'min', 'max' and 'mean' lists")
    for key in domains.PER_DIM_STATS:
        values = stats.get(key, [])
        if not (isinstance(values, list) and all(map(is_number, values))) or len(values) not in (0, len(stats["min"])):
            raise ValueError(f"{path}: field {key!r}: expected a flat list of numbers, one per action dim as in 'min', "
                             f"got {json.dumps(values)[:80]}")
    try:  # the file's own consistency, named here; its width is checked against the records' when scoring
        continuous_actions.stats_arrays(stats, np.size(stats["min"]))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return stats
