"""From saved activations to `probing.json` and its plot: probe curves per task (Act2Answer category) and stream,
each with its shuffled control and peak layer, and the protocol's retention.

Streams: `prefix_last` / `prefix_mean` (the VLM prefix's residual stream per layer, at the last valid prompt token /
averaged over the prompt tokens) and `action_mean` (the action expert's, averaged over the action tokens). The
retention compares `prefix_last` with `action_mean`; a task whose prefix curve never rises above chance has no signal
to retain and is left out of the mean, listed under `retention_excluded` with its peak. Models without an action
expert (Pi0-FAST, PaliGemma, OpenVLA) have prefix streams only: `action_streams` says so, and there is no retention.
"""

from __future__ import annotations

import pathlib
import textwrap
from collections.abc import Mapping
from typing import Any

import numpy as np

from multinet_jax import plots
from multinet_jax.probing.probes import fit_probes
from multinet_jax.probing.retention import retention

PREFIX_STREAMS = ("prefix_last", "prefix_mean")
ACTION_STREAMS = ("action_mean",)
RETENTION_STREAMS = ("prefix_last", "action_mean")
CHANCE = 0.5  # two tiles
TITLE_LINE_CHARACTERS = 80  # the figure's title wraps here: it must fit over two panels
NO_ACTION_EXPERT = "none: the model has no action expert (Pi0-FAST, PaliGemma, OpenVLA): prefix streams only, no retention"


def probe_tasks(activations: Mapping[str, np.ndarray], *, num_folds: int = 5, seed: int = 0, C: float = 1.0,
                max_iter: int = 100, tol: float = 1e-4) -> dict[str, Any]:
    """Fits every stream's probes per category (labels: the target tile; groups: the item) -> the report dict."""
    streams = [name for name in (*PREFIX_STREAMS, *ACTION_STREAMS) if name in activations]
    categories = np.asarray(activations["category"])
    tasks: dict[str, Any] = {}
    for task in sorted(set(categories.tolist())):
        rows = categories == task
        labels, groups = activations["label"][rows], activations["item_id"][rows]
        if len(np.unique(groups)) < num_folds:
            raise ValueError(f"task {task!r} has {len(np.unique(groups))} items, fewer than --num_folds={num_folds}")
        tasks[task] = {"episodes": int(rows.sum()), "items": int(len(np.unique(groups)))}
        for stream in streams:
            try:
                result = fit_probes(activations[stream][rows], labels, groups, num_folds=num_folds, seed=seed, C=C,
                                    max_iter=max_iter, tol=tol)
            except ValueError as error:
                raise ValueError(f"task {task!r}, stream {stream}: {error}") from None
            tasks[task][stream] = {
                "accuracy": result.accuracy.tolist(),
                "control_accuracy": result.control_accuracy.tolist(),
                "fold_accuracy": result.fold_accuracy.tolist(),
                "peak_layer": result.peak_layer,
                "peak_accuracy": float(result.accuracy.max()),
                "unconverged_fits": int((~result.converged).sum()),
            }
    report: dict[str, Any] = {
        "chance": CHANCE, "streams": streams, "tasks": tasks,
        "settings": {"num_folds": num_folds, "seed": seed, "C": C, "max_iter": max_iter, "tol": tol},
    }
    if all(stream in streams for stream in RETENTION_STREAMS):
        report.update(_retention(tasks))
    elif not any(stream in streams for stream in ACTION_STREAMS):
        report["action_streams"] = NO_ACTION_EXPERT
    return report


def _retention(tasks: Mapping[str, Any]) -> dict[str, Any]:
    prefix_stream, action_stream = RETENTION_STREAMS
    eligible = [task for task, entry in tasks.items() if entry[prefix_stream]["peak_accuracy"] > CHANCE]
    excluded = {task: {"prefix_peak_accuracy": entry[prefix_stream]["peak_accuracy"]}
                for task, entry in tasks.items() if task not in eligible}
    value = None
    if eligible:
        value = retention({task: tasks[task][prefix_stream]["accuracy"] for task in eligible},
                          {task: tasks[task][action_stream]["accuracy"] for task in eligible}, chance=CHANCE)
    return {"retention": value, "retention_tasks": eligible, "retention_excluded": excluded}


def plot(report: Mapping[str, Any], path: str | pathlib.Path) -> pathlib.Path:
    """`figure(report)` written as a PNG to `path`."""
    path = pathlib.Path(path)
    plots.save(figure(report), path)
    return path


def figure(report: Mapping[str, Any]) -> Any:
    """One panel per task: each stream's accuracy per layer (solid, its peak marked) and its shuffled control
    (dashed), on a 0-to-1 axis with chance marked; each panel's legend, under it, names the peak layers."""
    tasks = list(report["tasks"])
    columns = min(len(tasks), 4)
    rows = -(-len(tasks) // columns)
    whole = plots.new_figure(4.4 * columns, 4.2 * rows + 0.5)
    for panel, task in zip(whole.subfigures(rows, columns, squeeze=False).flat, tasks):
        axis = panel.subplots()
        for index, stream in enumerate(report["streams"]):
            entry = report["tasks"][task][stream]
            colour = f"C{index}"
            axis.plot(entry["accuracy"], color=colour, label=f"{stream}: peak at layer {entry['peak_layer']}")
            axis.plot(entry["peak_layer"], entry["accuracy"][entry["peak_layer"]], "o", color=colour)
            axis.plot(entry["control_accuracy"], color=colour, linestyle="--", alpha=0.6)
        axis.axhline(report["chance"], color="gray", linewidth=0.8)
        plots.value_axis(axis, plots.Unit("probe accuracy (0 to 1)", 1.0), [])
        axis.set_title(f"{task} ({report['tasks'][task]['episodes']} episodes)")
        axis.set_xlabel("layer")
        plots.integer_ticks(axis.xaxis)
        panel.legend(loc="outside lower center", ncols=1)
    retained = report.get("retention")
    whole.suptitle(f"dashed: shuffled-label control; gray: chance ({report['chance']:g})"
                   + (f"\n{textwrap.fill(retention_text(report), TITLE_LINE_CHARACTERS)}" if retained is not None else ""))
    return whole


def retention_text(report: Mapping[str, Any]) -> str:
    """The retention with the tasks it averages, and those left out (prefix never above chance): a value over one
    task of three must not read as the model's."""
    text = f"retention {report['retention']:.3f} over {', '.join(report['retention_tasks'])}"
    excluded = report.get("retention_excluded") or {}
    return text + (f" ({', '.join(excluded)} left out: prefix never above chance)" if excluded else "")
