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
    for name, row in rows.items():
        metrics = "  ".join(
            f"{key}={as_float(value):.4g}" for key, value in row.items() if key not in ("num_samples", "samples_per_second", "wall_seconds")
        )
        lines.append(f"{name:<26} {row['num_samples']:>8} {as_float(row['samples_per_second']):>10.2f}  {metrics}")
    return "\n".join(lines)


def _per_sample_mae(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Mean |prediction - truth| of each valid continuous prediction (the plot's error distribution)."""
    errors = [
        np.mean(np.abs(np.asarray(r["prediction"], float) - np.asarray(r["ground_truth"], float)))
        for r in records
        if r["prediction"] is not None and len(r["prediction"]) == len(r["ground_truth"])
    ]
    return np.asarray(errors)


def _class_counts(records: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[int], list[int]]:
    """Predicted and true class counts (invalid predictions as their own class)."""
    predicted = Counter("invalid" if r["prediction"] is None else str(r["prediction"]) for r in records)
    truth = Counter(str(r["ground_truth"]) for r in records)
    labels = sorted(set(predicted) | set(truth), key=lambda label: (label == "invalid", int(label) if label.isdigit() else 0, label))
    return labels, [predicted[label] for label in labels], [truth[label] for label in labels]


def plot_domain(path: pathlib.Path, domain: domains.Domain, metrics: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> None:
    """One PNG: the headline metrics as bars, and the domain's error or answer distribution."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    values = headline(domain, metrics)
    left.barh(list(values), [0.0 if not math.isfinite(v) else v for v in values.values()], color="tab:blue")
    left.set_title(f"{domain.name}: headline metrics")
    for y, value in enumerate(values.values()):
        left.text(0, y, f" {value:.4g}", va="center")
    if domain.output is domains.Output.CONTINUOUS_ACTIONS:
        errors = _per_sample_mae(records)
        right.hist(errors, bins=min(40, max(5, len(errors) // 3)), color="tab:orange")
        right.set_xlabel("per-sample MAE (valid predictions)")
        right.set_ylabel("samples")
        right.set_title("error distribution")
    elif domain.metric_kind in ("discrete", "multiple_choice", "classification"):
        labels, predicted, truth = _class_counts(records)
        positions = np.arange(len(labels))
        right.bar(positions - 0.2, truth, width=0.4, label="ground truth")
        right.bar(positions + 0.2, predicted, width=0.4, label="predicted")
        right.set_xticks(positions, labels, rotation=90 if len(labels) > 12 else 0, fontsize=7)
        right.set_title("class distribution")
        right.legend()
    elif domain.metric_kind == "act2answer_probes":
        categories = metrics.get("categories", {})
        positions = np.arange(len(categories))
        for offset, (key, label) in zip((-0.2, 0.2), (("text_probe_accuracy", "text probe"), ("action_probe_accuracy", "action probe"))):
            right.bar(positions + offset, [as_float(entry[key]) for entry in categories.values()], width=0.4, label=label)
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
        right.set_title(f"answers: {len(lengths)} valid of {len(records)}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
