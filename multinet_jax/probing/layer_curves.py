"""From saved activations to `probing.json` and its plot: probe curves per task (Act2Answer category) and stream,
each with its shuffled control and peak layer, and the protocol's retention.

Streams: `prefix_last` / `prefix_mean` (the VLM prefix's residual stream per layer, at the last valid prompt token /
averaged over the prompt tokens) and `action_mean` (the action expert's, averaged over the action tokens). The
retention compares `prefix_last` with `action_mean`. A curve's peak is the best of many layers' noisy estimates, so
it sits above chance even where the features carry nothing (18 layers of noise, 150 items a task: peaks of 0.55 to
0.58, the range of published Pi0 action peaks): each peak is set against a permutation test, the same probes fitted
on `PERMUTATIONS` label sets in which each item's target tiles are exchanged at random (what the labels would be if
the features knew nothing of the answer; every item keeps one episode per tile). `peak_p_value` is the share of
permuted peaks at or above it (counting the real one). A task whose prefix peak is not significant at `ALPHA` has no
signal to retain and is left out of the mean, listed under `retention_excluded` with its peak and the permuted peaks'
best. Models without an action expert (Pi0-FAST, PaliGemma, OpenVLA) have prefix streams only: `action_streams` says
so, and there is no retention. Fits that stop at `max_iter` before `tol` are counted per stream and label set
(`unconverged_fits`: `real`, `control`, `null`); any real one is said on stderr, totalled in `unconverged_real_fits`
and noted in the plot's title, since it is the accuracy itself that may be off.
"""

from __future__ import annotations

import pathlib
import sys
import textwrap
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from multinet_jax import plots
from multinet_jax.act2answer.geometry import LAYOUTS
from multinet_jax.metrics.act2answer_scoring import check_layout_pairs
from multinet_jax.metrics.records import RecordError
from multinet_jax.probing.probes import fit_probes
from multinet_jax.probing.retention import retention

PREFIX_STREAMS = ("prefix_last", "prefix_mean")
ACTION_STREAMS = ("action_mean",)
RETENTION_STREAMS = ("prefix_last", "action_mean")
CHANCE = 0.5  # two tiles
PERMUTATIONS = 19  # the fewest with which a peak can reach p <= ALPHA: by beating every permuted peak
ALPHA = 0.05
TITLE_LINE_CHARACTERS = 80  # the figure's title wraps here: it must fit over two panels
NO_ACTION_EXPERT = "none: the model has no action expert (Pi0-FAST, PaliGemma, OpenVLA): prefix streams only, no retention"


def check_folds(groups: Mapping[str, Iterable[str]], num_folds: int) -> None:
    """Each task's distinct groups (its items, or their contents) fill `num_folds` folds."""
    for task, task_groups in sorted(groups.items()):
        distinct = len(set(task_groups))
        if distinct < num_folds:
            raise ValueError(f"task {task!r} has {distinct} distinct items, fewer than --num_folds={num_folds}: probe "
                             "more (--limit) or fewer folds")


def probe_tasks(activations: Mapping[str, np.ndarray], *, num_folds: int = 5, seed: int = 0, C: float = 1.0,
                max_iter: int = 100, tol: float = 1e-4, permutations: int = PERMUTATIONS,
                content: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Fits every stream's probes per category (labels: the target tile; groups: the item, or its content where
    `content` maps item ids to content keys, `items.content_groups`: one item under two ids shares a fold) and their
    permutation tests -> the report dict. Every item must be there in both layouts, its target exchanged."""
    streams = [name for name in (*PREFIX_STREAMS, *ACTION_STREAMS) if name in activations]
    _check_pairs(activations)
    categories = np.asarray(activations["category"])
    item_ids = np.asarray(activations["item_id"])
    tasks: dict[str, Any] = {}
    for task in sorted(set(categories.tolist())):
        rows = categories == task
        labels = activations["label"][rows]
        groups = item_ids[rows] if content is None else np.array([content[str(item)] for item in item_ids[rows]])
        check_folds({task: groups.tolist()}, num_folds)
        tasks[task] = {"episodes": int(rows.sum()), "items": int(len(np.unique(item_ids[rows]))),
                       "distinct_items": int(len(np.unique(groups)))}
        null_labels = _exchanged_targets(labels, groups, permutations, seed)
        for stream in streams:
            try:
                result = fit_probes(activations[stream][rows], labels, groups, num_folds=num_folds, seed=seed, C=C,
                                    max_iter=max_iter, tol=tol, null_labels=null_labels)
            except ValueError as error:
                raise ValueError(f"task {task!r}, stream {stream}: {error}") from None
            null_peaks = result.null_accuracy.max(axis=1)
            peak = float(result.accuracy.max())
            tasks[task][stream] = {
                "accuracy": result.accuracy.tolist(),
                "control_accuracy": result.control_accuracy.tolist(),
                "fold_accuracy": result.fold_accuracy.tolist(),
                "peak_layer": result.peak_layer,
                "peak_accuracy": peak,
                "null_peak_accuracy": null_peaks.tolist(),
                "peak_p_value": float((1 + np.sum(null_peaks >= peak)) / (1 + permutations)),
                "unconverged_fits": result.unconverged(),
            }
    report: dict[str, Any] = {
        "chance": CHANCE, "alpha": ALPHA, "streams": streams, "tasks": tasks,
        "settings": {"num_folds": num_folds, "seed": seed, "C": C, "max_iter": max_iter, "tol": tol,
                     "permutations": permutations},
        "unconverged_real_fits": sum(entry[stream]["unconverged_fits"]["real"] for entry in tasks.values()
                                     for stream in streams),
    }
    if report["unconverged_real_fits"]:
        where = [f"{task}/{stream} {entry[stream]['unconverged_fits']['real']}" for task, entry in tasks.items()
                 for stream in streams if entry[stream]["unconverged_fits"]["real"]]
        print(f"warning: {unconverged_text(report)} ({', '.join(where)})", file=sys.stderr)
    if all(stream in streams for stream in RETENTION_STREAMS):
        report.update(_retention(tasks))
    elif not any(stream in streams for stream in ACTION_STREAMS):
        report["action_streams"] = NO_ACTION_EXPERT
    return report


def _check_pairs(activations: Mapping[str, np.ndarray]) -> None:
    """Both layouts of every item, its target exchanged (`act2answer_scoring.check_layout_pairs`): an item seen in one
    layout only (an odd --limit, a lost batch) makes the labels unbalanced, and chance no longer 0.5."""
    episodes = [(str(item), str(category), LAYOUTS.index(str(layout)), int(label)) for item, category, layout, label
                in zip(activations["item_id"], activations["category"], activations["layout"], activations["label"])]
    try:
        check_layout_pairs(episodes, "label")
    except RecordError as error:
        raise ValueError(f"activations row {error.index}: {error.describe(lambda other: f'row {other}')}") from None


def _exchanged_targets(labels: np.ndarray, groups: np.ndarray, permutations: int, seed: int) -> np.ndarray:
    """`[permutations, n]` label sets of the permutation test: each item's target tiles exchanged between its two
    layouts with probability 1/2, independently per item and set."""
    _, item = np.unique(groups, return_inverse=True)
    exchanged = np.random.default_rng([seed, 1]).integers(2, size=(permutations, item.max() + 1))
    return np.where(exchanged[:, item], 1 - labels[None, :], labels[None, :])


def _retention(tasks: Mapping[str, Any]) -> dict[str, Any]:
    prefix_stream, action_stream = RETENTION_STREAMS
    eligible = [task for task, entry in tasks.items() if entry[prefix_stream]["peak_p_value"] <= ALPHA]
    excluded = {task: {"prefix_peak_accuracy": entry[prefix_stream]["peak_accuracy"],
                       "prefix_peak_p_value": entry[prefix_stream]["peak_p_value"],
                       "best_permuted_peak": max(entry[prefix_stream]["null_peak_accuracy"])}
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
    """One panel per task: each stream's accuracy per layer (solid, its peak marked), its shuffled control (dashed)
    and the best of its permuted peaks (dotted), on a 0-to-1 axis with chance marked; each panel's legend, under it,
    names the peak layers."""
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
            axis.axhline(max(entry["null_peak_accuracy"]), color=colour, linestyle=":", linewidth=0.8)
        axis.axhline(report["chance"], color="gray", linewidth=0.8)
        plots.value_axis(axis, plots.Unit("probe accuracy (0 to 1)", 1.0), [])
        axis.set_title(f"{task} ({report['tasks'][task]['episodes']} episodes)")
        axis.set_xlabel("layer")
        plots.integer_ticks(axis.xaxis)
        panel.legend(loc="outside lower center", ncols=1)
    retained = report.get("retention")
    key = (f"dashed: shuffled-label control; dotted: best permuted peak (a peak above it: p <= {report['alpha']:g}); "
           f"gray: chance ({report['chance']:g})")
    lines = [key] + ([retention_text(report)] if retained is not None else [])
    if report.get("unconverged_real_fits"):
        lines.append(f"warning: {unconverged_text(report)}")
    whole.suptitle("\n".join(textwrap.fill(line, TITLE_LINE_CHARACTERS) for line in lines))
    return whole


def unconverged_text(report: Mapping[str, Any]) -> str:
    """How many real-label fits stopped at max_iter: their accuracies are not the probes' optimum."""
    return (f"{report['unconverged_real_fits']} real-label probe fits stopped at max_iter={report['settings']['max_iter']} "
            "before converging: their accuracies may be off; raise --max_iter")


def retention_text(report: Mapping[str, Any]) -> str:
    """The retention with the tasks it averages, and those left out (prefix peak not significant): a value over one
    task of three must not read as the model's."""
    text = f"retention {plots.number_text(report['retention'], 3)} over {', '.join(report['retention_tasks'])}"
    excluded = report.get("retention_excluded") or {}
    return text + (f" ({', '.join(excluded)} left out: prefix peak not above its permutation test at p <= "
                   f"{report['alpha']:g})" if excluded else "")
