"""`multinet-jax score`: MultiNet's metrics for a predictions JSONL file.

    multinet-jax score --domain=openx --predictions=examples/score/openx_bimanual_pi0.jsonl --output=metrics.json
    multinet-jax score --domain=sqa3d --predictions=preds.jsonl --output=metrics.json \
        --embedder_dir=../shared/models/all-MiniLM-L6-v2
    multinet-jax score --domain=sqa3d --predictions=preds.jsonl --output=metrics.json --skip_similarity
    multinet-jax score --domain=act2answer --predictions=examples/act2answer/episodes.jsonl --output=metrics.json
"""

from __future__ import annotations

import os
import pathlib

from absl import flags

from multinet_jax import assets, domains, metrics
from multinet_jax.cli import offline
from multinet_jax.cli.errors import InputError, no_arguments

_DOMAIN = flags.DEFINE_string(
    "domain", None, f"openx (any Open-X dataset), {domains.names_help()}; act2answer scores episode logs, "
    "act2answer_probes the records `eval --domains=act2answer` wrote", required=True,
)
_PREDICTIONS = flags.DEFINE_string(
    "predictions", None, "JSONL, one object per line: id, prediction, ground_truth (+ num_options for ODinW); act2answer: one "
    "episode log per line (id, category, layout, target, cube_position, tiles, ...)",
    required=True,
)
_OUTPUT = flags.DEFINE_string("output", None, "metrics JSON to write (NaN/inf written as strings)", required=True)
_ACTION_STATS = flags.DEFINE_string(
    "action_stats", None,
    "Open-X: JSON with per-dimension min/max/mean lists, or the eval run's <domain>_metrics.json (the statistics it "
    "scored with, so its predictions re-score to its numbers); default: from the file's ground truth",
)
_EMBEDDER_DIR = flags.DEFINE_string(
    "embedder_dir", None,
    "all-MiniLM-L6-v2 for text similarity (sqa3d, robovqa, bfcl): a directory or hub name "
    "(default: sentence-transformers/all-MiniLM-L6-v2, cached)",
)
_SKIP_SIMILARITY = flags.DEFINE_bool(
    "skip_similarity", False,
    "sqa3d, robovqa, bfcl without the embedder: every metric but the similarity ones, marked as skipped in the output",
)


def main(argv: list[str]) -> None:
    no_arguments(argv)
    offline.apply()
    path = _PREDICTIONS.value
    output = pathlib.Path(_OUTPUT.value)
    if _same_file(output, pathlib.Path(path)):
        raise InputError(f"{output}: --output is the --predictions file; writing the metrics would destroy it")
    _check_flags_apply()
    records, line_numbers = metrics.load_records(path)
    embedder = _embedder()
    try:
        stats = metrics.load_action_stats(_ACTION_STATS.value, _DOMAIN.value) if _ACTION_STATS.value else None
        result = metrics.score(_DOMAIN.value, records, action_stats=stats, embedder=embedder,
                               skip_similarity=_SKIP_SIMILARITY.value)
    except metrics.RecordError as error:
        raise InputError(f"{path}:{line_numbers[error.index]}: {error.describe(lambda i: f'line {line_numbers[i]}')}") from None
    except metrics.ActionStatsError as error:  # raised where the records' width is known: named by its flag here
        raise InputError(f"--action_stats={_ACTION_STATS.value}: {error}") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(metrics.to_json(result))
    print(f"scored {len(records)} records of {_DOMAIN.value} -> {output}")


# The `score` option each flag gives.
_FLAGS = {"action_stats": _ACTION_STATS, "embedder": _EMBEDDER_DIR, "skip_similarity": _SKIP_SIMILARITY}


def _check_flags_apply() -> None:
    """`score`'s refusal of options the domain never reads, before any file is read, named by flag."""
    try:
        metrics.check_options_apply(_DOMAIN.value, {option: flag.value or None for option, flag in _FLAGS.items()})
    except metrics.OptionError as error:
        raise InputError(error.describe(f"--{_FLAGS[error.option].name}", f"--domain={_DOMAIN.value}")) from None


def _same_file(first: pathlib.Path, second: pathlib.Path) -> bool:
    """One file under two names (the same path, a symlink or a hard link), or the same path when one is missing."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return first.resolve() == second.resolve()


def _embedder() -> str | pathlib.Path | None:
    """The resolved embedder (the public one when none is given) for a similarity domain that does not skip it.

    Otherwise the flag as given: `score` rejects an embedder together with --skip_similarity.
    """
    if _SKIP_SIMILARITY.value or metrics.metric_kind(_DOMAIN.value) not in metrics.SIMILARITY_KINDS:
        return _EMBEDDER_DIR.value
    return assets.resolve(_EMBEDDER_DIR.value or assets.DEFAULT_EMBEDDER)
