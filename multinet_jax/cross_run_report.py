"""Several evaluation runs side by side, in MultiNet's leaderboard form: `multinet-jax report RUN_DIR...`.

Reads each run folder's `<domain>_metrics.json` (the metrics, the sample count and the config that produced them)
and `predictions/<domain>.jsonl` (for Open-X's per-dimension errors), and writes beside each other:
- `report.md`: a table of the runs (model, checkpoint and every setting that differs between them), then one table
  per output kind (continuous actions, discrete actions, multiple choice, classification, VQA, function calls):
  a row per run, the domain's headline metrics as columns;
- `report.csv`: the same numbers, one line per run, domain and metric (every metric, not only the headline ones);
- `report.html`: one self-contained page (inline styles, plots as embedded PNGs) with the tables and, per domain,
  bars per run (each labelled with its sample count) for each headline metric and, for Open-X, the mean absolute
  error per action dimension over each run's valid predictions (their count given).

All three are built before any is written, so a report that fails leaves the previous one whole. Numbers are written
by `plots.number_text`, as the end-of-run table and the plots write them: a value short of a bound (99.996 %) never
reads as the bound.

Nothing is averaged across domains or runs. A domain whose runs scored different sample counts (or splits) shows
each cell's count and a note under its table (and its figure's title); a domain a run did not evaluate is an empty
cell, and a domain its manifest names without a metrics file (failed, or the run unfinished) is named under the runs
table. A setting a run's domains were evaluated under differently (a resume with another `--limit`) shows each
domain's value.

Each run's `run_manifest.json` (written by `eval`) labels it in the runs table: model, checkpoint with its content
fingerprint, and what differs between the runs of what `eval --resume` refuses to change: the prediction settings,
each tokenizer's content fingerprint, the path-implied checkpoint settings, the attention kernel, the device layout and
the runtime entries; protocol settings that differ are noted under each domain's table. Runs are put side by side only on the same
data: a domain whose data fingerprint differs between two runs is refused, naming the domain and the runs; so is a
run without a manifest beside others (its data cannot be checked).
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
import json
import math
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from multinet_jax import domains, plots
from multinet_jax.eval import manifest, summary

# Output kinds in MultiNet's order, with the heading of their table.
KIND_TITLES = {
    "continuous": "Continuous actions (Open-X)",
    "discrete": "Discrete actions (Overcooked-AI)",
    "multiple_choice": "Multiple choice (PIQA)",
    "classification": "Classification (ODinW)",
    "vqa": "Visual question answering (SQA3D, RoboVQA)",
    "function_calls": "Function calling (BFCL)",
    "act2answer_probes": "Knowledge retention (Act2Answer text and action probes)",
}
# Config fields that say where a run wrote, not what it computed.
_NOT_SETTINGS = ("output_dir", "resume")
_MISSING = plots.MISSING



class ReportError(ValueError):
    """A run folder that cannot be reported; the message names the folder or file."""


@dataclasses.dataclass(frozen=True)
class DomainResult:
    """One run's scored domain: its metrics, sample count and, for Open-X, the per-dimension MAE."""

    domain: str
    kind: str
    num_samples: int
    metrics: Mapping[str, Any]
    split: str | None
    per_dim_mae: tuple[float, ...] | None
    protocol: Mapping[str, Any] | None = None  # the protocol the run applied (`protocol_settings`; None: not recorded)
    valid_predictions: int | None = None  # how many predictions `per_dim_mae` averages (None: not counted)


class PerDomain(dict):
    """A setting the run's domains were evaluated under differently (resumed with another `--limit`): each domain's
    value, so that no domain's value stands for the run's."""


@dataclasses.dataclass(frozen=True)
class Run:
    label: str
    config: Mapping[str, Any]
    results: Mapping[str, DomainResult]
    manifest: Mapping[str, Any] | None = None  # `run_manifest.json`, when the run wrote one


def _read_json(path: pathlib.Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReportError(f"{path}:{error.lineno}: not JSON ({error.msg})") from None


def per_dim_mae(predictions_path: pathlib.Path) -> tuple[tuple[float, ...] | None, int | None]:
    """(mean |prediction - truth| per action dimension over the predictions the metrics count valid, None without
    any; how many those are, None without a predictions file)."""
    if not predictions_path.exists():
        return None, None
    records = [json.loads(line) for line in predictions_path.read_text().splitlines()]
    errors = summary.valid_absolute_errors(records) if records else np.zeros((0, 0))
    return (tuple(errors.mean(axis=0).tolist()) if len(errors) else None), len(errors)


def merged_config(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The run's config from its domains' metrics files: a key whose value differs between the files holding it is a
    `PerDomain` (a file older than the key does not make it differ)."""
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(key for config in configs.values() for key in config):
        values = {domain: config[key] for domain, config in sorted(configs.items()) if key in config}
        distinct = {json.dumps(value, sort_keys=True) for value in values.values()}
        merged[key] = next(iter(values.values())) if len(distinct) == 1 else PerDomain(values)
    return merged


def config_value(run: Run, key: str, domain: str) -> Any:
    """`key`'s value in the config `domain` was scored under (a `PerDomain` setting's own entry)."""
    value = run.config.get(key)
    return value.get(domain) if isinstance(value, PerDomain) else value


def load_run(run_dir: str | pathlib.Path, label: str | None = None) -> Run:
    """A run folder written by `multinet-jax eval` (every `<domain>_metrics.json` in it)."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run folder")
    results, configs = {}, {}
    for path in sorted(run_dir.glob("*_metrics.json")):
        content = _read_json(path)
        for field in ("domain", "metric_kind", "num_samples", "metrics", "config"):
            if field not in content:
                raise ReportError(f"{path}: no {field!r} field; not a metrics file written by `multinet-jax eval`")
        domain = content["domain"]
        if path.name != f"{domain}_metrics.json":  # a kept copy would stand for the domain, whichever sorts last
            raise ReportError(f"{path}: holds {domain}'s metrics, which `multinet-jax eval` writes to {domain}_metrics.json; "
                              "move other metrics files out of the run folder")
        continuous = content["metric_kind"] == "continuous"
        errors, valid = per_dim_mae(run_dir / "predictions" / f"{domain}.jsonl") if continuous else (None, None)
        results[domain] = DomainResult(
            domain=domain, kind=content["metric_kind"], num_samples=int(content["num_samples"]),
            metrics=content["metrics"], split=content["config"].get("split"), per_dim_mae=errors,
            protocol=content.get("protocol_settings"), valid_predictions=valid,
        )
        configs[domain] = content["config"]
    if not results:
        raise ReportError(f"{run_dir}: no <domain>_metrics.json; not a finished `multinet-jax eval` run folder")
    try:
        recorded = manifest.read(run_dir)
    except manifest.RunChangedError as error:  # unreadable, or not a run manifest
        raise ReportError(str(error)) from None
    return Run(label=label or str(run_dir), config=merged_config(configs), results=results, manifest=recorded)


def load_runs(run_dirs: Sequence[str | pathlib.Path]) -> list[Run]:
    """Every run, labelled by its folder as given (the shortest form that tells them apart); a folder given twice,
    under any spelling, is refused."""
    if not run_dirs:
        raise ReportError("no run folders given")
    paths = [pathlib.Path(path) for path in run_dirs]
    seen: dict[pathlib.Path, pathlib.Path] = {}
    for path in paths:
        if (first := seen.setdefault(path.resolve(), path)) is not path:
            raise ReportError(f"a run folder is given twice: {first} and {path} are {path.resolve()}")
    names = [path.name for path in paths]
    labels = names if len(set(names)) == len(names) else [str(path) for path in paths]
    runs = [load_run(path, label) for path, label in zip(paths, labels)]
    check_same_data(runs)
    return runs


def _data_fingerprint(run: Run, domain: str) -> str | None:
    return ((run.manifest or {}).get("domains", {}).get(domain, {}).get("data") or {}).get("sha256")


def check_same_data(runs: Sequence[Run]) -> None:
    """Refuses runs whose shared domains were evaluated on different data (their manifests' fingerprints)."""
    if len(runs) < 2:
        return
    unverifiable = [run.label for run in runs if run.manifest is None]
    if unverifiable:
        raise ReportError(f"{', '.join(unverifiable)}: no {manifest.FILENAME} (written by `multinet-jax eval`), so its data "
                          "cannot be checked against the other runs'; report it alone or re-run it")
    for domain in sorted({name for run in runs for name in run.results}):
        prints = {run.label: _data_fingerprint(run, domain) for run in runs if domain in run.results}
        if len(set(prints.values())) > 1:
            listed = ", ".join(f"{label} {str(value)[:12]}" for label, value in prints.items())
            raise ReportError(f"{domain}: the runs evaluated different data (data sha256 {listed}); "
                              "their numbers cannot be put side by side")


def _format(value: Any) -> str:
    if value is None:  # not reported (e.g. no valid prediction to average)
        return _MISSING
    number = summary.as_float(value) if not isinstance(value, (dict, list)) else math.nan
    return plots.number_text(number, 4)


def _entries(section: str, values: Mapping[str, Any] | None) -> dict[str, Any]:
    """A manifest section's entries as settings named `<section>:<entry>`, so each differing entry is a column."""
    return {f"{section}:{key}": value for key, value in (values or {}).items()}


def _fingerprinted(value: Any, entry: Mapping[str, Any] | None) -> str:
    """An input as the run names it (each path a moved copy was read from), with its content fingerprint when the
    manifest recorded one: two runs that read different files at the same path do not show the same cell."""
    name = ", ".join(dict.fromkeys(map(str, value.values()))) if isinstance(value, PerDomain) else str(value)
    fingerprint = (entry or {}).get("sha256")
    return f"{name} (sha256 {fingerprint[:12]})" if fingerprint else name


def _settings(run: Run) -> Mapping[str, Any]:
    """The run's settings: its metrics files' config, the manifest's prediction settings over it (what resume checks),
    each tokenizer with its content fingerprint (resume compares their content, not their paths), then what also
    changes the numbers without a flag, as resume refuses a change of it: the settings the checkpoint's path implied
    (`checkpoint:<setting>`, e.g. openpi's 10-step chunks), the attention kernel (`attention:<key>`: its mode and
    fast path), the device layout (`layout:<key>`: processes and mesh axes) and the runtime (`runtime:<entry>`:
    backend, device kind, jax versions and settings; a manifest from before an entry was recorded reads it as jax's
    default)."""
    recorded = run.manifest or {}
    tokenizers = {name: _fingerprinted(run.config.get(name, entry.get("path")), entry)
                  for name, entry in (recorded.get("tokenizers") or {}).items()}
    runtime = {**manifest.ADDED_RUNTIME_ENTRIES, **recorded["runtime"]} if recorded.get("runtime") else {}
    return {**run.config, **recorded.get("settings", {}), **tokenizers,
            **_entries("checkpoint", recorded.get("checkpoint_settings")), **_entries("attention", recorded.get("attention")),
            **_entries("layout", recorded.get("layout")), **_entries("runtime", runtime)}


def differing_settings(runs: Sequence[Run]) -> list[str]:
    """Settings whose values differ between the runs (model and checkpoint always shown)."""
    keys = sorted({key for run in runs for key in _settings(run)} - set(_NOT_SETTINGS) - {"model", "checkpoint", "domains"})
    return [key for key in keys if len({json.dumps(_settings(run).get(key), sort_keys=True) for run in runs}) > 1
            or any(isinstance(_settings(run).get(key), PerDomain) for run in runs)]


def _checkpoint(run: Run) -> str:
    """The checkpoint as the run names it, with its content fingerprint when the manifest has one."""
    return _fingerprinted(run.config.get("checkpoint"), (run.manifest or {}).get("checkpoint"))


def _domains_by_kind(runs: Sequence[Run]) -> dict[str, list[str]]:
    found: dict[str, set[str]] = {}
    for run in runs:
        for result in run.results.values():
            found.setdefault(result.kind, set()).add(result.domain)
    order = [kind for kind in KIND_TITLES if kind in found] + sorted(set(found) - set(KIND_TITLES))
    return {kind: sorted(found[kind]) for kind in order}


def _headline(domain: str, runs: Sequence[Run]) -> list[str]:
    """The domain's headline metrics present in at least one run."""
    present = {name for run in runs if domain in run.results for name in run.results[domain].metrics}
    return [name for name in domains.lookup(domain).headline_metrics if name in present]


def _samples(domain: str, runs: Sequence[Run]) -> dict[str, tuple[int, str | None]]:
    return {run.label: (run.results[domain].num_samples, run.results[domain].split) for run in runs if domain in run.results}


@dataclasses.dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str]


def protocol_notes(domain: str, runs: Sequence[Run]) -> list[str]:
    """A note naming each protocol setting (`protocol_settings`: prompt cut, decoding budget, prompt format, ...) the
    runs scoring `domain` applied differently, with each run's value: their numbers answer different protocols."""
    protocols = {run.label: run.results[domain].protocol for run in runs if domain in run.results}
    if len(protocols) < 2:
        return []
    unrecorded = [label for label, protocol in protocols.items() if protocol is None]
    if unrecorded:
        return [f"{domain}: {', '.join(unrecorded)} recorded no protocol settings; the protocols cannot be compared"]
    keys = sorted({key for protocol in protocols.values() for key in protocol})
    differing = []
    for key in keys:
        values = {label: json.dumps(protocol.get(key), sort_keys=True) for label, protocol in protocols.items()}
        if len(set(values.values())) > 1:
            differing.append(f"{key} ({', '.join(f'{label} {value}' for label, value in values.items())})")
    return [f"{domain}: the runs applied different protocol settings: {'; '.join(differing)}"] if differing else []


def unscored_domains(run: Run) -> list[str]:
    """Domains the run's manifest names (every domain it was asked to evaluate) without a metrics file: failed or not
    reached. Without a note they would vanish from the report, or read as a domain the run was never asked about."""
    return [domain for domain in (run.manifest or {}).get("domains", {}) if domain not in run.results]


def runs_table(runs: Sequence[Run]) -> Table:
    settings = differing_settings(runs)
    header = ["run", "model", "checkpoint", *settings]
    rows = [[run.label, str(_settings(run).get("model")), _checkpoint(run),
             *(json.dumps(_settings(run).get(key)) for key in settings)] for run in runs]
    notes = [f"{run.label}: {', '.join(missing)} not scored (no <domain>_metrics.json: the domain failed, as its "
             "summary.json says, or the run has not reached it, and `eval --resume` continues it)"
             for run in runs if (missing := unscored_domains(run))]
    notes += [f"{run.label}: its domains were evaluated under different {', '.join(keys)} (each domain's value shown)"
              for run in runs if (keys := [key for key in settings if isinstance(_settings(run).get(key), PerDomain)])]
    return Table("Runs", header, rows, notes)


def kind_tables(runs: Sequence[Run]) -> list[Table]:
    """One table per output kind: a row per run, a column per (domain, headline metric)."""
    tables = []
    for kind, names in _domains_by_kind(runs).items():
        header, columns, notes = ["run"], [], []
        for domain in names:
            samples = _samples(domain, runs)
            uniform = len(set(samples.values())) == 1
            count = f" (n={next(iter(samples.values()))[0]})" if uniform else ""
            for metric in _headline(domain, runs):
                header.append(f"{domain}{count}: {metric}")
                columns.append((domain, metric, uniform))
            if not uniform:
                listed = ", ".join(f"{label} {n} of split {split}" for label, (n, split) in samples.items())
                notes.append(f"{domain}: the runs scored different samples ({listed}); their numbers are not comparable one to one")
            notes += protocol_notes(domain, runs)
        rows = []
        for run in runs:
            row = [run.label]
            for domain, metric, uniform in columns:
                result = run.results.get(domain)
                if result is None or metric not in result.metrics:
                    row.append(_MISSING)
                else:
                    row.append(_format(result.metrics[metric]) + ("" if uniform else f" (n={result.num_samples})"))
            rows.append(row)
        tables.append(Table(KIND_TITLES.get(kind, kind), header, rows, notes))
    return tables


# What Markdown (and the HTML it passes through) would read as markup in a cell: a run folder `<b>x` or `a*b*` is
# shown as named. An underscore inside a word (`openx_bimanual`) is plain text already and stays readable.
_MARKDOWN_SPECIAL = re.compile(r"[\\`*\[\]<>|&~$#]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def markdown_cell(text: str) -> str:
    """`text` as a table cell that renders as written."""
    return _MARKDOWN_SPECIAL.sub(lambda match: "\\" + match.group(0), text)


def to_markdown(runs: Sequence[Run]) -> str:
    lines = ["# MultiNet evaluation report", ""]
    for table in [runs_table(runs), *kind_tables(runs)]:
        lines += [f"## {table.title}", "", "| " + " | ".join(map(markdown_cell, table.header)) + " |",
                  "|" + "---|" * len(table.header)]
        lines += ["| " + " | ".join(map(markdown_cell, row)) + " |" for row in table.rows]
        lines += [""] + [f"- {note}" for note in table.notes] + ([""] if table.notes else [])
    return "\n".join(lines)


def to_csv(runs: Sequence[Run]) -> str:
    """Every scalar metric of every run and domain, one line each."""
    with io.StringIO(newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run", "model", "checkpoint", "domain", "metric_kind", "split", "num_samples", "metric", "value"])
        for run in runs:
            for result in run.results.values():
                for metric, value in result.metrics.items():
                    if isinstance(value, (dict, list)):
                        continue  # per-arm / per-turn breakdowns stay in <domain>_metrics.json
                    writer.writerow([run.label, config_value(run, "model", result.domain),
                                     config_value(run, "checkpoint", result.domain), result.domain,
                                     result.kind, result.split, result.num_samples, metric, value])
        return handle.getvalue()


def domain_figure(domain: str, runs: Sequence[Run]) -> Any:
    """One domain across runs: bars per run for each headline metric (each on its unit's axis; a metric a run did
    not report is labelled as the tables show it; each run's sample count under its name, and the title says when
    they differ), and Open-X's per-dimension MAE over each run's valid predictions, with their count."""
    present = [run for run in runs if domain in run.results]
    counts = {run.label: run.results[domain].num_samples for run in present}
    metrics = _headline(domain, runs)
    per_dim = [run for run in present if run.results[domain].per_dim_mae is not None]
    panels = len(metrics) + (1 if per_dim else 0)
    columns = min(panels, 3)
    rows = -(-panels // columns)
    figure = plots.new_figure(4.6 * columns, 3.6 * rows + 0.6)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for unused in axes[panels:]:
        unused.set_visible(False)
    colors = [f"C{runs.index(run) % 10}" for run in present]
    positions = np.arange(len(present))
    for axis, metric in zip(axes, metrics):
        values = [summary.as_float(run.results[domain].metrics[metric]) if metric in run.results[domain].metrics
                  else None for run in present]
        plots.value_axis(axis, summary.metric_unit(domains.lookup(domain), metric), values)
        plots.bars(axis, positions, values, color=colors)
        axis.set_xticks(positions, [plots.plain_text(f"{label} (n={n})") for label, n in counts.items()],
                        rotation=30, ha="right")
        axis.set_title(metric)
    if per_dim:
        axis = axes[panels - 1]
        width = 0.8 / len(per_dim)
        errors = {run.label: run.results[domain].per_dim_mae for run in per_dim}
        plots.value_axis(axis, summary.metric_unit(domains.lookup(domain), "avg_dataset_amae"),
                         [value for values in errors.values() for value in values])
        for index, run in enumerate(per_dim):
            valid = run.results[domain].valid_predictions
            label = run.label + (f": {valid} valid of {counts[run.label]}" if valid is not None else "")
            offset = (index - (len(per_dim) - 1) / 2) * width  # each dimension's group centred on its tick
            axis.bar(np.arange(len(errors[run.label])) + offset, errors[run.label], width=width,
                     label=plots.plain_text(label), color=colors[present.index(run)])
        axis.set_xlabel("action dimension")
        plots.integer_ticks(axis.xaxis)
        without = [run.label for run in present if run.results[domain].per_dim_mae is None]
        # avg_dataset_amae beside it scores each invalid prediction at the worst error: these bars do not
        axis.set_title("mean absolute error per dimension,\nvalid predictions only"
                       + plots.plain_text(f"\n(no valid predictions: {', '.join(without)})" if without else ""))
        plots.legend_below(figure)
    differing = len(set(counts.values())) > 1
    figure.suptitle(domain + ("\n(the runs scored different sample counts: not comparable one to one)" if differing else ""))
    return figure


def _png(figure: Any) -> str:
    """The figure as base64 PNG, for an `<img>` of the page."""
    buffer = io.BytesIO()
    plots.save(figure, buffer)
    return base64.b64encode(buffer.getvalue()).decode()


_STYLE = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3}.note{color:#a33;font-size:13px}img{max-width:100%}"""


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in table.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows)
    notes = "".join(f'<p class="note">{html.escape(note)}</p>' for note in table.notes)
    return f"<h2>{html.escape(table.title)}</h2><table><tr>{head}</tr>{body}</table>{notes}"


def to_html(runs: Sequence[Run]) -> str:
    """One self-contained page: the tables, then every domain's plots (embedded PNGs)."""
    parts = [_html_table(table) for table in [runs_table(runs), *kind_tables(runs)]]
    parts.append("<h2>Per domain</h2>")
    for names in _domains_by_kind(runs).values():
        for domain in names:
            parts.append(f'<h3>{html.escape(domain)}</h3><img alt="{html.escape(domain)}" '
                         f'src="data:image/png;base64,{_png(domain_figure(domain, runs))}">')
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>MultiNet evaluation report</title>'
            f"<style>{_STYLE}</style></head><body><h1>MultiNet evaluation report</h1>{''.join(parts)}</body></html>\n")


def write_report(run_dirs: Sequence[str | pathlib.Path], output_dir: str | pathlib.Path) -> dict[str, pathlib.Path]:
    """`report.md`, `report.csv` and `report.html` for the runs in `output_dir`; returns their paths. Every output
    is built before the first is written: a report that fails leaves the previous one as it was, not half replaced."""
    runs = load_runs(run_dirs)
    contents = {"md": to_markdown(runs), "csv": to_csv(runs), "html": to_html(runs)}
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: output_dir / f"report.{name}" for name in contents}
    for name, text in contents.items():
        paths[name].write_text(text, newline="")  # as built: the csv module's line ends
    return paths
