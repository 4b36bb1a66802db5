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

from multinet_jax import domains


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


def row(domain: domains.Domain, num_samples: int, samples_per_second: float, wall_seconds: float,
        metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A domain's summary row: sample count, throughput and the headline metrics."""
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
    """Summary rows of domains evaluated earlier into `output_dir`, rebuilt from their metrics files."""
    rows = {}
    for name in names:
        content = read_metrics(output_dir / f"{name}_metrics.json")
        if content is not None:
            rows[name] = row(domains.lookup(name), content["num_samples"], content["samples_per_second"],
                             content["timing_seconds"]["wall"], content["metrics"])
    return rows


def per_subset(domain: domains.Domain, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """ODinW as MultiNet scored it: each subset on its own (`per_subset`), and the mean of each headline metric
    over the subsets (`subset_mean`), beside the metrics over all samples pooled."""
    from multinet_jax import metrics

    subsets = sorted({record["subset"] for record in records})
    scored = {name: metrics.score(domain.name, [r for r in records if r["subset"] == name]) for name in subsets}
    means = {metric: float(np.mean([as_float(scored[name][metric]) for name in subsets])) for metric in domain.headline_metrics}
    return {"per_subset": scored, "subset_mean": means}


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
    """The end-of-run table: per domain the sample count, throughput and headline metrics."""
    lines = [f"{'domain':<26} {'samples':>8} {'samples/s':>10}  headline metrics"]
    for name, entry in rows.items():
        if entry.get("status") == "failed":
            lines.append(f"{name:<26} {'FAILED':>8} {'':>10}  {entry['error'][:200]}")
            continue
        metrics = "  ".join(
            f"{key}={as_float(value):.4g}" for key, value in entry.items() if key not in ("num_samples", "samples_per_second", "wall_seconds")
        )
        lines.append(f"{name:<26} {entry['num_samples']:>8} {as_float(entry['samples_per_second']):>10.2f}  {metrics}")
    return "\n".join(lines)


def _per_sample_mae(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Mean |prediction - truth| of each valid continuous prediction (the plot's error distribution)."""
    errors = [
        np.mean(np.abs(np.asarray(r["prediction"], float) - np.asarray(r["ground_truth"], float)))
        for r in records
        if r["prediction"] is not None and len(r["prediction"]) == len(r["ground_truth"])
    ]
    return np.asarray(errors)


def _class_counts(domain: domains.Domain, records: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[int], list[int]]:
    """(labels, predicted counts, true counts) over every class of the domain, zero counts included, then invalid
    predictions as a class of their own (a class nobody predicted is information, not something to hide)."""
    if domain.metric_kind == "discrete":
        num_classes = domains.NUM_OVERCOOKED_ACTIONS
    elif domain.metric_kind == "multiple_choice":
        num_classes = len(domains.PIQA_ANSWERS)
    else:  # classification (ODinW): options per sample
        num_classes = max((int(r.get("num_options", 0)) for r in records), default=0)
    predicted = Counter("invalid" if r["prediction"] is None else str(r["prediction"]) for r in records)
    truth = Counter(str(r["ground_truth"]) for r in records)
    labels = [str(index) for index in range(num_classes)]
    labels += sorted((set(predicted) | set(truth)) - set(labels) - {"invalid"}) + ["invalid"]
    return labels, [predicted[label] for label in labels], [truth[label] for label in labels]


def is_percentage(metric: str) -> bool:
    """Whether a metric is in percent (0..100), by MultiNet's names: `*percentage*`, `action_success_rate`."""
    return "percentage" in metric or metric == "action_success_rate"


def _bars(axis: Any, values: Mapping[str, float], title: str) -> None:
    axis.barh(list(values), [0.0 if not math.isfinite(v) else v for v in values.values()], color="tab:blue")
    axis.set_title(title)
    for y, value in enumerate(values.values()):
        axis.text(0, y, f" {value:.4g}", va="center")


def _count_axis(axis: Any) -> None:
    """A y axis of sample counts: labelled, whole numbers only."""
    from matplotlib.ticker import MaxNLocator

    axis.set_ylabel("samples")
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))


def plot_domain(path: pathlib.Path, domain: domains.Domain, metrics: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> None:
    """One PNG (`domain_figure`)."""
    from matplotlib import pyplot as plt

    figure = domain_figure(domain, metrics, records)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def domain_figure(domain: domains.Domain, metrics: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> Any:
    """The headline metrics as bars (plain values and percentages on axes of their own), and the domain's error
    or answer distribution."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    values = headline(domain, metrics)
    percentages = {name: value for name, value in values.items() if is_percentage(name)}
    plain = {name: value for name, value in values.items() if not is_percentage(name)}
    # Percentages and plain values never share an axis: 50 (%) beside 0.3 (a fraction) would misread either.
    panels = [part for part in (plain, percentages) if part]
    figure, axes = plt.subplots(1, len(panels) + 1, figsize=(6 * (len(panels) + 1), 4.5))
    for axis, part in zip(axes, panels):
        _bars(axis, part, f"{domain.name}: headline metrics" + (" (%)" if part is percentages else ""))
        if part is percentages:
            axis.set_xlim(0, 100)
    right = axes[-1]
    if domain.output is domains.Output.CONTINUOUS_ACTIONS:
        errors = _per_sample_mae(records)
        right.hist(errors, bins=min(40, max(5, len(errors) // 3)), color="tab:orange")
        right.set_xlabel("per-sample MAE (valid predictions)")
        _count_axis(right)
        right.set_title("error distribution")
    elif domain.metric_kind in ("discrete", "multiple_choice", "classification"):
        labels, predicted, truth = _class_counts(domain, records)
        positions = np.arange(len(labels))
        right.bar(positions - 0.2, truth, width=0.4, label="ground truth")
        right.bar(positions + 0.2, predicted, width=0.4, label="predicted")
        right.set_xticks(positions, labels, rotation=90 if len(labels) > 12 else 0, fontsize=7)
        _count_axis(right)
        right.set_title("class distribution")
        right.legend()
    elif domain.metric_kind == "act2answer_probes":
        categories = metrics.get("categories", {})
        positions = np.arange(len(categories))
        for offset, (key, label) in zip((-0.2, 0.2), (("text_probe_accuracy", "text probe"), ("action_probe_accuracy", "action probe"))):
            # without an action head the action probe has no entry (NaN: no bar)
            right.bar(positions + offset, [as_float(entry.get(key)) for entry in categories.values()], width=0.4, label=label)
        right.axhline(0.5, color="gray", linewidth=0.8)
        right.set_xticks(positions, list(categories))
        right.set_title("accuracy per category (chance 0.5)")
        right.legend()
    elif domain.metric_kind == "function_calls":
        accuracy = metrics.get("turn_level_accuracy")
        values = list(accuracy.values()) if isinstance(accuracy, Mapping) else list(accuracy or [])
        right.bar(range(1, len(values) + 1), [as_float(value) for value in values], color="tab:purple")
        right.set_xlabel("turn")
        right.set_title("accuracy per turn")
    else:
        lengths = [len(r["prediction"]) for r in records if isinstance(r["prediction"], str)]
        right.hist(lengths, bins=20, color="tab:green")
        right.set_xlabel("answer length (characters, valid answers)")
        _count_axis(right)
        right.set_title(f"answers: {len(lengths)} valid of {len(records)}")
    figure.tight_layout()
    return figure
