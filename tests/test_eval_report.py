"""`multinet-jax report`: two real tiny runs (Pi0 and Pi0-FAST on the demo data) compared in leaderboard form."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import eval_helpers
from conftest import REPO_ROOT
from multinet_jax import cross_run_report


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """pi0: 4 samples of Open-X, PIQA and Overcooked; pi0_fast: 2 samples of Open-X and PIQA."""
    root = tmp_path_factory.mktemp("runs")
    paths = eval_helpers.assets()
    eval_helpers.evaluate(root / "pi0", ("openx_bimanual", "piqa", "overcooked_ai"), limit=4)
    eval_helpers.evaluate(root / "pi0_fast", ("openx_bimanual", "piqa"), limit=2, model="pi0_fast",
                          checkpoint=paths["fast_checkpoint"], fast_tokenizer=paths["fast_tokenizer"])
    return root


def _metrics(run_dir, domain):
    return json.loads((run_dir / f"{domain}_metrics.json").read_text())["metrics"]


def _markdown_table(text, title):
    block = text.split(f"## {title}\n\n")[1].split("\n\n")[0]
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in block.splitlines() if line.startswith("|")]
    return rows[0], rows[2:]


def test_markdown_tables_per_output_kind_with_unequal_samples_marked(runs):
    text = cross_run_report.to_markdown(cross_run_report.load_runs([runs / "pi0", runs / "pi0_fast"]))
    header, rows = _markdown_table(text, "Runs")
    assert header[:3] == ["run", "model", "checkpoint"] and "limit" in header and "output_dir" not in header
    assert [row[:2] for row in rows] == [["pi0", "pi0"], ["pi0_fast", "pi0_fast"]]

    header, rows = _markdown_table(text, "Continuous actions (Open-X)")
    assert header[1:] == [f"openx_bimanual: {name}" for name in
                          ("avg_dataset_amse", "avg_dataset_amae", "normalized_amae", "action_success_rate", "invalid_percentage")]
    amae = header.index("openx_bimanual: avg_dataset_amae")
    for row, run, count in zip(rows, ("pi0", "pi0_fast"), (4, 2)):
        value = _metrics(runs / run, "openx_bimanual")["avg_dataset_amae"]
        expected = "NaN" if isinstance(value, str) else f"{value:.4g}"
        assert row[amae] == f"{expected} (n={count})"
    assert "- openx_bimanual: the runs scored different samples (pi0 4 of split public, pi0_fast 2 of split public)" in text

    header, rows = _markdown_table(text, "Discrete actions (Overcooked-AI)")
    assert rows[1][1:] == ["—"] * (len(header) - 1)  # pi0_fast did not evaluate Overcooked: empty, not zero
    assert rows[0][header.index("overcooked_ai (n=4): exact_match")] == f"{_metrics(runs / 'pi0', 'overcooked_ai')['exact_match']:.4g}"


def test_protocol_settings_the_runs_applied_differently_are_noted(runs):
    """Pi0 and Pi0-FAST on Open-X: a flow model and a token decoder under their own prompt cuts and action rules; each
    differing setting is named under the table with each run's value (as their metrics files record it)."""
    text = cross_run_report.to_markdown(cross_run_report.load_runs([runs / "pi0", runs / "pi0_fast"]))
    protocols = {run: json.loads((runs / run / "openx_bimanual_metrics.json").read_text())["protocol_settings"]
                 for run in ("pi0", "pi0_fast")}
    differing = sorted(key for key in {*protocols["pi0"], *protocols["pi0_fast"]}
                       if protocols["pi0"].get(key) != protocols["pi0_fast"].get(key))
    assert {"max_prompt_tokens", "max_new_tokens", "openpi_quantile_actions"} <= set(differing)
    notes = [line for line in text.splitlines() if line.startswith("- openx_bimanual: the runs applied different protocol")]
    assert len(notes) == 1 and [part.split(" (")[0] for part in notes[0].split(": ", 2)[2].split("; ")] == differing
    cut = [json.dumps(protocols[run]["max_prompt_tokens"]) for run in ("pi0", "pi0_fast")]
    assert f"max_prompt_tokens (pi0 {cut[0]}, pi0_fast {cut[1]})" in notes[0]
    assert not any(line.startswith("- piqa: the runs applied different protocol") for line in text.splitlines())


def test_settings_no_flag_gave_are_shown_where_the_runs_differ(runs, tmp_path):
    """What the checkpoint's path implied, the device layout and the runtime (device, jax version) change the numbers
    too: a column each where two runs differ, none where they agree."""
    header, _ = _markdown_table(cross_run_report.to_markdown(cross_run_report.load_runs([runs / "pi0", runs / "pi0_fast"])), "Runs")
    prefixes = ("checkpoint:", "layout:", "runtime:")
    assert not [column for column in header if column.startswith(prefixes)]  # one machine, plain paths
    other = tmp_path / "pi0_elsewhere"
    shutil.copytree(runs / "pi0", other)
    recorded = json.loads((other / "run_manifest.json").read_text())
    recorded["checkpoint_settings"] = {"action_horizon": 10}
    recorded["runtime"] = {**recorded["runtime"], "device_kind": "NVIDIA H200", "jax": "0.0.1"}
    recorded["layout"] = {**recorded["layout"], "mesh": {"data": 2, "model": 1}}  # as `--mesh=data:2` on two devices
    (other / "run_manifest.json").write_text(json.dumps(recorded))
    header, rows = _markdown_table(cross_run_report.to_markdown(cross_run_report.load_runs([runs / "pi0", other])), "Runs")
    columns = [column for column in header if column.startswith(prefixes)]
    assert columns == ["checkpoint:action_horizon", "layout:mesh", "runtime:device_kind", "runtime:jax"]
    assert [json.loads(row[header.index("layout:mesh")]) for row in rows] == [{"data": 1, "model": 1}, {"data": 2, "model": 1}]
    assert [row[header.index("runtime:device_kind")] for row in rows] == [
        json.dumps(json.loads((runs / "pi0" / "run_manifest.json").read_text())["runtime"]["device_kind"]), '"NVIDIA H200"']
    assert [row[header.index("checkpoint:action_horizon")] for row in rows] == ["null", "10"]


def test_csv_holds_every_scalar_metric(runs):
    loaded = cross_run_report.load_runs([runs / "pi0", runs / "pi0_fast"])
    lines = list(csv.DictReader(io.StringIO(cross_run_report.to_csv(loaded), newline="")))
    piqa = {line["metric"]: line for line in lines if line["run"] == "pi0_fast" and line["domain"] == "piqa"}
    scored = _metrics(runs / "pi0_fast", "piqa")
    assert set(piqa) == {name for name, value in scored.items() if not isinstance(value, (dict, list))}
    assert float(piqa["overall_accuracy"]["value"]) == scored["overall_accuracy"]
    assert piqa["overall_accuracy"]["num_samples"] == "2" and piqa["overall_accuracy"]["metric_kind"] == "multiple_choice"


def test_per_dimension_error_from_the_predictions(runs):
    (run,) = cross_run_report.load_runs([runs / "pi0"])
    records = eval_helpers.read_jsonl(runs / "pi0" / "predictions" / "openx_bimanual.jsonl")
    valid = [r for r in records if r["prediction"] is not None]
    expected = np.mean([np.abs(np.subtract(r["prediction"], r["ground_truth"])) for r in valid], axis=0)
    np.testing.assert_allclose(run.results["openx_bimanual"].per_dim_mae, expected, rtol=1e-12)
    assert len(expected) == 14 and run.results["piqa"].per_dim_mae is None


def test_cli_writes_a_self_contained_html_page(runs):
    command = [sys.executable, "-c", "from multinet_jax.cli import main; main()", "report", str(runs / "pi0"), str(runs / "pi0_fast")]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "## Continuous actions (Open-X)" in result.stdout and f"report: {runs / 'report' / 'report.html'}" in result.stdout
    page = (runs / "report" / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)  # nothing to fetch: opens anywhere
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3  # openx_bimanual, overcooked_ai, piqa
    assert all(base64.b64decode(image)[:8] == b"\x89PNG\r\n\x1a\n" for image in images)
    assert page.count("<table>") == 1 + 3 and (runs / "report" / "report.md").exists() and (runs / "report" / "report.csv").exists()


def test_equal_sample_counts_go_in_the_header(runs, tmp_path):
    shutil.copytree(runs / "pi0", tmp_path / "pi0_again")
    text = cross_run_report.to_markdown(cross_run_report.load_runs([runs / "pi0", tmp_path / "pi0_again"]))
    header, rows = _markdown_table(text, "Multiple choice (PIQA)")
    assert header[1] == "piqa (n=4): overall_accuracy" and rows[0][1:] == rows[1][1:]
    assert "different samples" not in text


def test_a_domain_the_run_was_asked_for_but_did_not_score_is_named(runs, tmp_path):
    """A run whose PIQA failed or was not reached (its metrics file absent) names PIQA under the runs table, in the
    Markdown and the HTML page; PIQA then comes from the other run alone. The complete runs get no such note."""
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs / "pi0", unfinished)
    (unfinished / "piqa_metrics.json").unlink()
    loaded = cross_run_report.load_runs([unfinished, runs / "pi0_fast"])
    note = "unfinished: piqa not scored (no <domain>_metrics.json: the domain failed"
    assert f"- {note}" in cross_run_report.to_markdown(loaded)
    assert html.escape(note) in cross_run_report.to_html(loaded)
    _, rows = _markdown_table(cross_run_report.to_markdown(loaded), "Multiple choice (PIQA)")
    assert rows[0][1:] == ["—"] * (len(rows[0]) - 1) and rows[1][1] != "—"
    assert "not scored" not in cross_run_report.to_markdown(cross_run_report.load_runs([runs / "pi0", runs / "pi0_fast"]))


def test_bad_run_folders_fail_naming_the_file(runs, tmp_path):
    with pytest.raises(cross_run_report.ReportError, match=f"{tmp_path}: no <domain>_metrics.json"):
        cross_run_report.load_runs([tmp_path])
    broken = tmp_path / "broken"
    shutil.copytree(runs / "pi0", broken)
    (broken / "piqa_metrics.json").write_text("{\n  oops")
    with pytest.raises(cross_run_report.ReportError, match=f"{broken / 'piqa_metrics.json'}:2: not JSON"):
        cross_run_report.load_runs([broken])
    (broken / "piqa_metrics.json").write_text(json.dumps({"domain": "piqa"}))
    with pytest.raises(cross_run_report.ReportError, match="piqa_metrics.json: no 'metric_kind' field"):
        cross_run_report.load_runs([broken])
    with pytest.raises(cross_run_report.ReportError, match="given twice"):
        cross_run_report.load_runs([runs / "pi0", runs / "pi0"])


def test_a_kept_copy_of_a_domains_metrics_is_refused_rather_than_reported(runs, tmp_path):
    """A copy of older metrics kept in the run folder would stand for its domain if its name sorts after the file
    `eval` writes: the report refuses it, naming it."""
    run = tmp_path / "kept"
    shutil.copytree(runs / "pi0", run)
    shutil.copy(run / "piqa_metrics.json", run / "piqa_v1_metrics.json")
    with pytest.raises(cross_run_report.ReportError, match=re.escape(f"{run / 'piqa_v1_metrics.json'}: holds piqa's "
                                                                     "metrics, which `multinet-jax eval` writes to piqa_metrics.json")):
        cross_run_report.load_runs([run])


def test_runs_are_labelled_by_their_manifests_and_different_data_is_refused(runs, tmp_path):
    header, rows = _markdown_table(cross_run_report.to_markdown(cross_run_report.load_runs([runs / "pi0", runs / "pi0_fast"])), "Runs")
    for row, run in zip(rows, ("pi0", "pi0_fast")):
        recorded = json.loads((runs / run / "run_manifest.json").read_text())
        assert row[1] == recorded["settings"]["model"] == run
        assert row[2].endswith(f"(sha256 {recorded['checkpoint']['sha256'][:12]})")
    # PIQA evaluated on other data (one answer changed): refused beside the pi0 run, naming the domain and the runs
    paths = eval_helpers.assets()
    data_dir = tmp_path / "data"
    shutil.copytree(pathlib.Path(paths["data_dir"]) / "piqa", data_dir / "piqa")
    piqa = next((data_dir / "piqa").rglob("*.jsonl"))
    lines = piqa.read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "label": 1 - int(first["label"])})
    piqa.write_text("\n".join(lines) + "\n")
    eval_helpers.evaluate(tmp_path / "other", ("piqa",), limit=2, data_dir=str(data_dir))
    with pytest.raises(cross_run_report.ReportError, match=r"piqa: the runs evaluated different data \(data sha256 pi0 \w{12}, other \w{12}\)"):
        cross_run_report.load_runs([runs / "pi0", tmp_path / "other"])
    (tmp_path / "other" / "run_manifest.json").unlink()
    with pytest.raises(cross_run_report.ReportError, match="other: no run_manifest.json"):
        cross_run_report.load_runs([runs / "pi0", tmp_path / "other"])
    assert cross_run_report.load_runs([tmp_path / "other"])[0].manifest is None  # alone it is reported as it is


def _edited_copy(source: pathlib.Path, target: pathlib.Path, domain: str, **edits) -> pathlib.Path:
    """A copy of a run whose `domain` metrics file has `edits` applied ({"metrics": {...}} or {"config": {...}})."""
    shutil.copytree(source, target)
    path = target / f"{domain}_metrics.json"
    content = json.loads(path.read_text())
    for part, values in edits.items():
        content[part] = {**content[part], **values}
    path.write_text(json.dumps(content))
    return target


def test_no_value_short_of_a_bound_is_shown_as_the_bound(runs, tmp_path):
    """A large run's 99.996 % invalid or 0.99996 accuracy beside an exact 100 % and 1: the tables and the bars tell
    them apart (one formatting rule for both, `plots.number_text`)."""
    exact = _edited_copy(runs / "pi0", tmp_path / "exact", "piqa", metrics={"invalid_percentage": 100.0, "overall_accuracy": 1.0})
    near = _edited_copy(runs / "pi0", tmp_path / "near", "piqa", metrics={"invalid_percentage": 99.996, "overall_accuracy": 0.99996})
    loaded = cross_run_report.load_runs([exact, near])
    header, rows = _markdown_table(cross_run_report.to_markdown(loaded), "Multiple choice (PIQA)")
    columns = [header.index(f"piqa (n=4): {name}") for name in ("overall_accuracy", "invalid_percentage")]
    assert [[row[column] for column in columns] for row in rows] == [["1", "100"], ["0.99996", "99.996"]]
    figure = cross_run_report.domain_figure("piqa", loaded)
    bars = {axes.get_title(): [text.get_text() for text in axes.texts] for axes in figure.axes if axes.get_visible()}
    assert bars["overall_accuracy"] == ["1", "0.99996"] and bars["invalid_percentage"] == ["100", "99.996"]


def test_figures_give_each_runs_sample_count_and_the_valid_predictions_per_dimension_errors_average(runs):
    """pi0 scored 4 Open-X samples, pi0_fast 2: every tick names the count and the title says they differ. The
    per-dimension panel averages valid predictions only (avg_dataset_amae beside it scores invalid ones at the
    worst case), so it says so and gives each run's valid count."""
    loaded = cross_run_report.load_runs([runs / "pi0", runs / "pi0_fast"])
    figure = cross_run_report.domain_figure("openx_bimanual", loaded)
    *metric_panels, per_dimension = (axes for axes in figure.axes if axes.get_visible())
    for axes in metric_panels:
        assert [tick.get_text() for tick in axes.get_xticklabels()] == ["pi0 (n=4)", "pi0_fast (n=2)"]
    assert "different sample counts" in figure.get_suptitle()
    assert "valid predictions only" in per_dimension.get_title()
    expected = []
    for run in loaded:
        records = eval_helpers.read_jsonl(runs / run.label / "predictions" / "openx_bimanual.jsonl")
        valid = len(cross_run_report.summary.valid_absolute_errors(records))
        assert run.results["openx_bimanual"].valid_predictions == valid
        if valid:  # a run without any has no bars, and the panel's title names it
            expected.append(f"{run.label}: {valid} valid of {len(records)}")
    assert expected and [text.get_text() for legend in figure.legends for text in legend.get_texts()] == expected
    assert cross_run_report.domain_figure("openx_bimanual", loaded[:1]).get_suptitle() == "openx_bimanual"


def test_each_dimensions_bars_are_centred_on_its_tick(runs, tmp_path):
    """Two runs with valid Open-X predictions: dimension d's two bars straddle tick d (they started at it, so the
    last group stood beside an extra tick)."""
    import shutil

    copy = shutil.copytree(runs / "pi0", tmp_path / "pi0_again")
    loaded = cross_run_report.load_runs([runs / "pi0", copy])
    per_dimension = [axes for axes in cross_run_report.domain_figure("openx_bimanual", loaded).axes if axes.get_visible()][-1]
    dimensions = len(loaded[0].results["openx_bimanual"].per_dim_mae)
    assert len(per_dimension.patches) == 2 * dimensions
    centres = np.array([patch.get_x() + patch.get_width() / 2 for patch in per_dimension.patches]).reshape(2, dimensions)
    np.testing.assert_allclose(centres.mean(axis=0), np.arange(dimensions), atol=1e-9)


def test_a_dollar_in_a_run_folder_is_drawn_as_written_and_a_failed_report_leaves_the_old_one(runs, tmp_path, monkeypatch):
    """Folder names are labels: `$` is not mathtext (it crashed the HTML step, or drew a formula). A report whose
    build fails writes nothing, so report.md, report.csv and report.html still describe one set of runs."""
    dollar = tmp_path / "a$\\x$"
    shutil.copytree(runs / "pi0", dollar)
    output = tmp_path / "report"
    cross_run_report.write_report([dollar, runs / "pi0_fast"], output)
    page = (output / "report.html").read_text()
    assert html.escape("a$\\x$") in page
    figure = cross_run_report.domain_figure("piqa", cross_run_report.load_runs([dollar, runs / "pi0_fast"]))
    ticks = figure.axes[0].get_xticklabels()
    assert [tick._preprocess_math(tick.get_text()) for tick in ticks][0] == ("a$\\x$ (n=4)", False)
    before = {name: (output / f"report.{name}").read_text() for name in ("md", "csv", "html")}

    def broken(domain, runs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(cross_run_report, "domain_figure", broken)
    with pytest.raises(RuntimeError, match="drawing failed"):
        cross_run_report.write_report([runs / "pi0", runs / "pi0_fast"], output)
    assert {name: (output / f"report.{name}").read_text() for name in ("md", "csv", "html")} == before


def test_a_run_folder_under_two_spellings_is_refused(runs, monkeypatch):
    monkeypatch.chdir(runs)
    with pytest.raises(cross_run_report.ReportError, match=f"given twice: pi0 and {runs / 'pi0'} are {runs / 'pi0'}"):
        cross_run_report.load_runs(["pi0", runs / "pi0"])


def test_a_setting_the_runs_domains_differed_in_shows_each_domains_value(runs, tmp_path):
    """A folder resumed for PIQA under another --limit: the runs table shows each domain's limit, not the first
    metrics file's as the run's; so even for a run reported alone."""
    mixed = _edited_copy(runs / "pi0", tmp_path / "mixed", "piqa", config={"limit": 2})
    for loaded in (cross_run_report.load_runs([mixed]), cross_run_report.load_runs([mixed, runs / "pi0"])):
        text = cross_run_report.to_markdown(loaded)
        header, rows = _markdown_table(text, "Runs")
        assert json.loads(rows[0][header.index("limit")]) == {"openx_bimanual": 4, "overcooked_ai": 4, "piqa": 2}
        assert "- mixed: its domains were evaluated under different limit (each domain's value shown)" in text


def test_markdown_cells_show_run_labels_as_written(runs, tmp_path):
    odd = tmp_path / "<b>x*y*"
    shutil.copytree(runs / "pi0_fast", odd)
    _, rows = _markdown_table(cross_run_report.to_markdown(cross_run_report.load_runs([odd])), "Runs")
    assert rows[0][0] == "\\<b\\>x\\*y\\*"


def test_a_checkpoint_moved_between_resumes_shows_its_paths_and_each_csv_line_its_own(runs, tmp_path):
    """The checkpoint read from another path for PIQA (a moved copy resumes, as the guarantees say): the runs table
    names both paths and each CSV line its domain's; a key an older metrics file lacks makes no difference."""
    moved = _edited_copy(runs / "pi0", tmp_path / "moved", "piqa", config={"checkpoint": "/elsewhere/pi0_tiny"})
    path = moved / "overcooked_ai_metrics.json"
    older = json.loads(path.read_text())
    del older["config"]["split"]  # as a file written before the key was
    path.write_text(json.dumps(older))
    (run,) = cross_run_report.load_runs([moved])
    original = run.config["checkpoint"]["openx_bimanual"]
    assert cross_run_report._checkpoint(run).startswith(f"{original}, /elsewhere/pi0_tiny")
    assert not isinstance(run.config["split"], cross_run_report.PerDomain)
    lines = list(csv.DictReader(io.StringIO(cross_run_report.to_csv([run]))))
    assert {line["domain"]: line["checkpoint"] for line in lines} == {
        "openx_bimanual": original, "overcooked_ai": original, "piqa": "/elsewhere/pi0_tiny"}


def test_runs_under_other_attention_kernels_show_them(runs, tmp_path):
    """A run under the reference attention kernel beside one under the default: `eval --resume` refuses the change
    (its numbers differ), so the runs table shows the manifests' `attention:<key>` where they differ."""
    from multinet_jax.models import attention

    with attention.mode("reference"):
        eval_helpers.evaluate(tmp_path / "reference", ("piqa",), limit=4)
    header, rows = _markdown_table(cross_run_report.to_markdown(
        cross_run_report.load_runs([runs / "pi0", tmp_path / "reference"])), "Runs")
    recorded = [json.loads((folder / "run_manifest.json").read_text())["attention"] for folder in (runs / "pi0", tmp_path / "reference")]
    assert recorded[0] != recorded[1] and recorded[1]["mode"] == "reference"
    assert [row[header.index("attention:mode")] for row in rows] == [json.dumps(entry["mode"]) for entry in recorded]
    assert not [column for column in header if column.startswith("layout:")]  # one layout: no column


def test_runs_with_other_tokenizers_at_one_path_show_their_fingerprints(runs, tmp_path, monkeypatch):
    """Two runs given the same relative --tokenizer from two folders holding tokenizers of different content: the
    runs table shows each tokenizer's content fingerprint, as `eval --resume` compares them by content."""
    from multinet_jax.demo import builders, datasets

    paths = eval_helpers.assets()
    for name, corpus in (("a", None), ("b", [text[::-1] for text in datasets.corpus()])):
        (tmp_path / name).mkdir()
        target = tmp_path / name / "demo_tokenizer.model"
        if corpus is None:
            shutil.copy(paths["tokenizer"], target)
        else:
            builders.build_tokenizer(target, corpus)
        monkeypatch.chdir(tmp_path / name)
        eval_helpers.evaluate(tmp_path / f"run_{name}", ("piqa",), limit=2, tokenizer="demo_tokenizer.model")
    header, rows = _markdown_table(cross_run_report.to_markdown(
        cross_run_report.load_runs([tmp_path / "run_a", tmp_path / "run_b"])), "Runs")
    prints = [json.loads((tmp_path / run / "run_manifest.json").read_text())["tokenizers"]["tokenizer"]["sha256"]
              for run in ("run_a", "run_b")]
    assert prints[0] != prints[1]
    assert [row[header.index("tokenizer")] for row in rows] == [
        json.dumps(f"demo_tokenizer.model (sha256 {value[:12]})") for value in prints]
