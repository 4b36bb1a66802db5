"""What an evaluation leaves beside the predictions: `<domain>_metrics.json`, `summary.json` /
`summary.csv` over domains, one PNG per domain, and the table printed at the end of a run.

Metric files hold the evaluation config next to the `score` metrics so a number can always be traced
to the checkpoint, data and flags that produced it. NaN/inf are written as strings ("NaN", "Infinity"),
as the `score` command does, so the files stay strict JSON.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from multinet_jax import domains, plots
from multinet_jax.act2answer.geometry import TILE_NAMES
from multinet_jax.metrics import continuous_actions
from multinet_jax.metrics.discrete_actions import INVALID_ACTION, INVALID_BRIER_ERROR
from multinet_jax.metrics.scoring import SUBSET_FIELD


ACT2ANSWER_CHANCE = 1 / len(TILE_NAMES)  # one answer tile of two
# Kinds whose distribution panel is a bar per class (`_class_counts`).
_CLASS_KINDS = ("discrete", "multiple_choice", "classification")
# `domain_figure`'s widths in inches: the headline panel, the distribution panel at least, and per class bar in it
# (its rotated tick label 10 pt high in 18 px of width, so the labels never overlap).
_HEADLINE_WIDTH = 5.8
_DISTRIBUTION_WIDTH = 7.2
_INCHES_PER_CLASS = 0.18


def json_safe(value: Any) -> Any:
    """Nested metrics with non-finite floats as strings and numpy values as plain Python."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def write_json(path: pathlib.Path, content: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(json_safe(content), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)  # never a half-written metrics file beside the predictions


def as_float(value: Any) -> float:
    """A metric value (number or "NaN"/"Infinity" string) as a float, for tables and plots."""
    if isinstance(value, str):
        return float(value.replace("Infinity", "inf"))
    return float(value) if value is not None else math.nan


def headline(domain: domains.Domain, metrics: Mapping[str, Any]) -> dict[str, float]:
    """The domain's headline metrics that `score` produced (missing names are left out, not invented)."""
    return {name: as_float(metrics[name]) for name in domain.headline_metrics if name in metrics}


def row(domain: domains.Domain, num_samples: int, samples_per_second: float | None, wall_seconds: float,
        metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A domain's summary row: sample count, throughput (None: not measured) and the headline metrics."""
    return {
        "num_samples": num_samples,
        "samples_per_second": samples_per_second,
        "wall_seconds": wall_seconds,
        **headline(domain, json_safe(metrics)),
    }


def failed_row(error: BaseException) -> dict[str, Any]:
    """The summary row of a domain that failed mid-run (the others still finish)."""
    return {"status": "failed", "error": f"{type(error).__name__}: {' '.join(str(error).split())}"}


def read_metrics(path: pathlib.Path) -> dict[str, Any] | None:
    """A `<domain>_metrics.json` this package wrote, or None when there is none (or it is unreadable)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_rows(output_dir: pathlib.Path, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Summary rows of domains an earlier run of `output_dir` was asked for and this one was not: rebuilt from their
    metrics files; without one, the failed row `summary.json` kept (marked `earlier_run`: this run did not retry it)
    or an `unscored_row`. A domain the folder was asked for never vanishes from its summary."""
    kept = read_metrics(output_dir / "summary.json")
    kept = kept if isinstance(kept, dict) else {}
    rows = {}
    for name in names:
        content = read_metrics(metrics_path(output_dir, name))
        if content is not None:
            rows[name] = row(domains.lookup(name), content["num_samples"], content["samples_per_second"],
                             content["timing_seconds"]["wall"], content["metrics"])
        elif isinstance(kept.get(name), dict) and kept[name].get("status") == "failed":
            rows[name] = {**kept[name], "earlier_run": True}
        else:
            rows[name] = unscored_row(name)
    return rows


def unscored_row(name: str) -> dict[str, Any]:
    """The summary row of a domain the folder was asked for that has no metrics file and no recorded failure: an
    earlier run stopped before scoring it."""
    return {"status": "unscored", "reason": f"no {metrics_path(pathlib.Path(), name)}: an earlier run of this folder "
                                            f"stopped before scoring it; `eval --resume --domains={name}` continues it"}


def metrics_path(output_dir: pathlib.Path, name: str) -> pathlib.Path:
    return output_dir / f"{name}_metrics.json"


def plot_path(output_dir: pathlib.Path, name: str) -> pathlib.Path:
    return output_dir / "plots" / f"{name}.png"


def forget_scores(output_dir: pathlib.Path, name: str) -> None:
    """Removes domain `name`'s metrics file, plot and summary row before new predictions are appended to its file:
    a run that then dies leaves the domain unscored (`report` says so), never scored on fewer samples than its
    predictions file holds."""
    metrics_path(output_dir, name).unlink(missing_ok=True)
    plot_path(output_dir, name).unlink(missing_ok=True)
    summary = output_dir / "summary.json"
    rows = read_metrics(summary)
    if isinstance(rows, dict) and name in rows:
        write_summary(output_dir, {domain: row for domain, row in rows.items() if domain != name})


def write_summary(output_dir: pathlib.Path, rows: Mapping[str, Mapping[str, Any]]) -> None:
    """`summary.json` ({domain: row}) and `summary.csv` (one line per domain and metric)."""
    write_json(output_dir / "summary.json", rows)
    with open(output_dir / "summary.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["domain", "metric", "value"])
        for name, row in rows.items():
            for metric, value in row.items():
                writer.writerow([name, metric, value])


def format_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """The end-of-run table: per domain the sample count, throughput and headline metrics (`plots.number_text`, as
    the report writes them), or why it has none."""
    lines = [f"{'domain':<26} {'samples':>8} {'samples/s':>10}  headline metrics"]
    for name, entry in rows.items():
        if "status" in entry:  # failed, or not scored
            why = ("(an earlier run of this folder; not retried) " if entry.get("earlier_run") else "") + entry.get("error", entry.get("reason"))
            lines.append(f"{name:<26} {entry['status'].upper():>8} {'':>10}  {why[:250]}")
            continue
        metrics = "  ".join(
            f"{key}={plots.number_text(as_float(value), 4)}" for key, value in entry.items()
            if key not in ("num_samples", "samples_per_second", "wall_seconds")
        )
        speed = entry["samples_per_second"]
        throughput = plots.MISSING if speed is None else plots.number_text(as_float(speed), 3)
        lines.append(f"{name:<26} {entry['num_samples']:>8} {throughput:>10}  {metrics}")
    return "\n".join(lines)


def valid_absolute_errors(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """|prediction - truth| [valid predictions, D] of continuous records, over the predictions the metrics count
    valid (MultiNet's rule, with the rows whose error would overflow cut off as `score` does): what error plots show."""
    packed = continuous_actions.pack_continuous([r["prediction"] for r in records], [r["ground_truth"] for r in records])
    packed, _ = continuous_actions.invalidate_overflowing(packed)
    return np.abs(packed.predictions - packed.ground_truth)[packed.valid]


def _class_group(record: Mapping[str, Any]) -> str:
    """The prefix of the record's class labels: its ODinW subset's (`<subset>: `), as class 0 of one subset ("boat") is
    not class 0 of another ("CoW"); empty for records of one class set (no subset named, as `score` requires there)."""
    return f"{record[SUBSET_FIELD]}: " if SUBSET_FIELD in record else ""


def _class_counts(domain: domains.Domain, metrics: Mapping[str, Any],
                  records: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[int], list[int]]:
    """(labels, predicted counts, true counts) over every class of the domain, zero counts included, then invalid
    predictions as a class of their own (a class nobody predicted is information, not something to hide). ODinW's
    classes are counted per subset (`<subset>: <class index>`, subsets in sorted order): no bar pools categories."""
    predictions = [r["prediction"] for r in records]
    groups = [_class_group(r) for r in records]
    if domain.metric_kind == "discrete":
        num_classes = {"": domains.NUM_OVERCOOKED_ACTIONS}
        # the classes the scorer read: a distribution's argmax (Magma's answers), -1 where invalid
        predictions = [None if value == INVALID_ACTION else value for value in metrics["predicted_actions"]]
    elif domain.metric_kind == "multiple_choice":
        num_classes = {"": len(domains.PIQA_ANSWERS)}
    else:  # classification (ODinW): options per sample, per subset
        num_classes = {}
        for group, record in zip(groups, records):
            num_classes[group] = max(num_classes.get(group, 0), int(record.get("num_options", 0)))
    predicted = Counter("invalid" if prediction is None else group + str(prediction)
                        for group, prediction in zip(groups, predictions))
    truth = Counter(group + str(r["ground_truth"]) for group, r in zip(groups, records))
    labels = [group + str(index) for group in sorted(num_classes) for index in range(num_classes[group])]
    labels += sorted((set(predicted) | set(truth)) - set(labels) - {"invalid"}) + ["invalid"]
    return labels, [predicted[label] for label in labels], [truth[label] for label in labels]


def is_percentage(metric: str) -> bool:
    """Whether a metric is in percent (0..100), by MultiNet's names: `*percentage*`, `action_success_rate`."""
    return "percentage" in metric or metric == "action_success_rate"


def metric_unit(domain: domains.Domain, metric: str) -> plots.Unit:
    """The unit a headline metric is plotted in, from MultiNet's names. A metric not known here gets a unit of its
    own, so it never shares an axis with another."""
    if is_percentage(metric):
        return plots.PERCENT
    if "similarity" in metric:
        return plots.Unit("cosine similarity (-1 to 1)", 1.0)
    if metric == "avg_turn_of_first_failure":
        return plots.Unit("turn", integer=True)
    if domain.metric_kind == "discrete" and metric == "avg_dataset_amae":  # a Brier error of one-hot predictions
        return plots.Unit(f"Brier absolute error (0 to {INVALID_BRIER_ERROR:g})", INVALID_BRIER_ERROR)
    if metric.startswith("normalized_"):
        return plots.Unit("min-max normalized error (0 to 1)", 1.0)
    if metric == "avg_dataset_amae":
        return plots.Unit("mean absolute error (action units)")
    if metric == "avg_dataset_amse":
        return plots.Unit("mean squared error (action units²)")
    if any(word in metric for word in ("accuracy", "f1", "exact_match", "rate")):
        return plots.FRACTION
    return plots.Unit(metric)


def plot_domain(path: pathlib.Path, domain: domains.Domain, metrics: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> None:
    """One PNG (`domain_figure`)."""
    plots.save(domain_figure(domain, metrics, records), path)


def domain_figure(domain: domains.Domain, metrics: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> Any:
    """Left, the headline metrics as bars, one panel per unit (`metric_unit`); right, the domain's error, class,
    answer or per-category distribution."""
    values = headline(domain, metrics)
    by_unit: dict[plots.Unit, dict[str, float]] = {}
    for name, value in values.items():
        by_unit.setdefault(metric_unit(domain, name), {})[name] = value
    rows = [len(part) + 1 for part in by_unit.values()] or [1]  # +1: room for the axis label
    classes = len(_class_counts(domain, metrics, records)[0]) if domain.metric_kind in _CLASS_KINDS else 0
    right_width = max(_DISTRIBUTION_WIDTH, _INCHES_PER_CLASS * classes)  # ODinW's 24 subsets: 279 classes
    figure = plots.new_figure(_HEADLINE_WIDTH + right_width, max(4.5, 0.5 * sum(rows) + 1))
    left, right = figure.subfigures(1, 2, width_ratios=[_HEADLINE_WIDTH, right_width])
    left.suptitle(f"{domain.name}: headline metrics")
    for axes, (unit, part) in zip(left.subplots(len(rows), 1, height_ratios=rows, squeeze=False)[:, 0], by_unit.items()):
        plots.value_axis(axes, unit, list(part.values()), horizontal=True)
        positions = np.arange(len(part))
        plots.bars(axes, positions, list(part.values()), horizontal=True, color="tab:blue")
        axes.set_yticks(positions, list(part))
        axes.invert_yaxis()  # the headline order, top to bottom
    _distribution(right, domain, metrics, records)
    return figure


def _distribution(figure: Any, domain: domains.Domain, metrics: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> None:
    """The right-hand panel of `domain_figure`, drawn into the subfigure `figure`."""
    axes = figure.subplots()
    if domain.metric_kind == "continuous":  # actions, predicted or answered in text
        errors = valid_absolute_errors(records).mean(axis=1)
        counts, _, _ = axes.hist(errors, bins=min(40, max(5, len(errors) // 3)), color="tab:orange")
        plots.value_axis(axes, plots.SAMPLES, counts.tolist())
        axes.set_xlabel("per-sample mean absolute error (action units, valid predictions)")
        axes.set_title(f"error distribution ({len(errors)} valid of {len(records)} predictions)")
    elif domain.metric_kind in _CLASS_KINDS:
        labels, predicted, truth = _class_counts(domain, metrics, records)
        positions = np.arange(len(labels))
        plots.value_axis(axes, plots.SAMPLES, truth + predicted)
        axes.bar(positions - 0.2, truth, width=0.4, label="ground truth")
        axes.bar(positions + 0.2, predicted, width=0.4, label="predicted")
        axes.set_xticks(positions, labels, rotation=90 if len(labels) > 12 else 0)
        axes.set_xlabel("class")
        axes.set_title("class distribution")
        plots.legend_below(figure)
    elif domain.metric_kind == "act2answer_probes":
        _probe_accuracies(figure, axes, metrics)
    elif domain.metric_kind == "function_calls":
        accuracy = metrics.get("turn_level_accuracy")
        values = [as_float(value) for value in (accuracy.values() if isinstance(accuracy, Mapping) else accuracy or [])]
        plots.value_axis(axes, plots.FRACTION, values)
        plots.bars(axes, range(1, len(values) + 1), values, color="tab:purple")
        axes.set_xlabel("turn")
        plots.integer_ticks(axes.xaxis)
        axes.set_title("accuracy per turn")
    else:
        lengths = [len(r["prediction"]) for r in records if isinstance(r["prediction"], str)]
        low, high = min(lengths, default=0), max(lengths, default=0)
        bins = np.linspace(low - 0.5, high + 0.5, min(high - low + 1, 20) + 1)  # whole lengths at bin centres
        counts, _, _ = axes.hist(lengths, bins=bins, color="tab:green")
        plots.value_axis(axes, plots.SAMPLES, counts.tolist())
        axes.set_xlabel("answer length (characters, valid answers)")
        plots.integer_ticks(axes.xaxis)
        axes.set_title(f"answers: {len(lengths)} valid of {len(records)}")


def _probe_accuracies(figure: Any, axes: Any, metrics: Mapping[str, Any]) -> None:
    """Act2Answer's text and action probe accuracy per category on a 0-to-1 axis with chance marked; a model
    without an action head has no action bars, and the legend says why."""
    categories = metrics.get("categories", {})
    probes = {"text probe": [as_float(entry.get("text_probe_accuracy")) for entry in categories.values()]}
    if "action_probe" not in metrics:  # present (why, a string) only where the action probe did not apply
        probes["action probe"] = [as_float(entry.get("action_probe_accuracy")) for entry in categories.values()]
    positions = np.arange(len(categories))
    width = 0.8 / len(probes)
    plots.value_axis(axes, plots.Unit("accuracy (0 to 1)", 1.0), [v for values in probes.values() for v in values])
    for index, (label, values) in enumerate(probes.items()):
        plots.bars(axes, positions + (index - (len(probes) - 1) / 2) * width, values, width=width, label=label)
    axes.axhline(ACT2ANSWER_CHANCE, color="gray", linewidth=1, linestyle="--", label=f"chance ({ACT2ANSWER_CHANCE:g})")
    axes.set_xticks(positions, list(categories))
    axes.set_xlabel("category")
    axes.set_title("accuracy per category" + ("\n(action probe: not applicable, see action_probe)" if "action_probe" in metrics else ""))
    plots.legend_below(figure)
