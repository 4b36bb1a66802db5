"""A run SIGKILLed mid-way and resumed ends byte-identical to an uninterrupted run, with equal metrics."""

from __future__ import annotations

import json
import signal
import time

import pytest

import eval_helpers
from multinet_jax.eval import EvaluationFailed, results

DOMAIN = "openx_bimanual"
# Twelve batches of a slowed-down flow (100 Euler steps): seconds of run left to be killed in, even on a busy CPU.
SETTINGS = {"limit": 12, "batch_size": 1, "num_flow_steps": 100}


def test_killed_run_resumes_to_the_same_file_and_metrics(tmp_path):
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    eval_helpers.evaluate(uninterrupted, (DOMAIN,), **SETTINGS)

    predictions = interrupted / "predictions" / f"{DOMAIN}.jsonl"
    process = eval_helpers.start_eval(eval_helpers.flags(interrupted, (DOMAIN,), **SETTINGS))
    deadline = time.monotonic() + 300
    while not (predictions.exists() and predictions.read_bytes().count(b"\n") >= 2):
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no prediction written in 300 s"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    written = len(results.read_completed(predictions))
    assert 2 <= written < SETTINGS["limit"], "the run finished before it could be killed"
    assert not (interrupted / f"{DOMAIN}_metrics.json").exists()

    with pytest.raises(FileExistsError, match="pass --resume"):
        eval_helpers.evaluate(interrupted, (DOMAIN,), **SETTINGS)
    eval_helpers.evaluate(interrupted, (DOMAIN,), resume=True, **SETTINGS)

    assert predictions.read_bytes() == (uninterrupted / "predictions" / f"{DOMAIN}.jsonl").read_bytes()
    resumed_metrics = json.loads((interrupted / f"{DOMAIN}_metrics.json").read_text())
    full_metrics = json.loads((uninterrupted / f"{DOMAIN}_metrics.json").read_text())
    assert resumed_metrics["metrics"] == full_metrics["metrics"]
    assert resumed_metrics["resumed_from_sample"] == written


def test_resume_refuses_a_file_from_other_data(tmp_path):
    eval_helpers.evaluate(tmp_path, ("piqa",), limit=4)
    predictions = tmp_path / "predictions" / "piqa.jsonl"
    lines = predictions.read_text().splitlines()
    record = json.loads(lines[1])
    record["id"] = "not-this-dataset"
    lines[1] = json.dumps(record)
    predictions.write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(EvaluationFailed) as raised:
        eval_helpers.evaluate(tmp_path, ("piqa",), limit=4, resume=True)
    error = raised.value.failures["piqa"]
    assert isinstance(error, results.ResultsError) and "line 2 has id 'not-this-dataset'" in str(error)


def test_a_failed_rescoring_leaves_the_domain_unscored(tmp_path, monkeypatch, capsys):
    """A finished domain resumed is scored again; if that fails, its earlier metrics file, plot and summary row are
    gone (report names it unscored), never shown as this run's numbers; a later run of other domains keeps it failed."""
    from multinet_jax import metrics

    eval_helpers.evaluate(tmp_path, ("piqa",), limit=4)
    assert (tmp_path / "piqa_metrics.json").exists() and (tmp_path / "plots" / "piqa.png").exists()

    def refuse(*args, **kwargs):
        raise ValueError("a record check of a later version")

    monkeypatch.setattr(metrics, "score", refuse)
    with pytest.raises(EvaluationFailed, match="a record check of a later version"):
        eval_helpers.evaluate(tmp_path, ("piqa",), limit=4, resume=True)
    assert not (tmp_path / "piqa_metrics.json").exists() and not (tmp_path / "plots" / "piqa.png").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["piqa"]["status"] == "failed"
    monkeypatch.undo()
    eval_helpers.evaluate(tmp_path, ("odinw",), limit=4, resume=True)
    kept = json.loads((tmp_path / "summary.json").read_text())
    assert set(kept) == {"piqa", "odinw"} and kept["piqa"]["status"] == "failed" and kept["piqa"]["earlier_run"]


def test_rescoring_without_an_earlier_measurement_reports_no_throughput(tmp_path, capsys):
    """Complete predictions whose metrics file is gone are scored again; no sample was predicted, so the throughput
    is not measured (null, "—" in the table), not 0 samples/s."""
    eval_helpers.evaluate(tmp_path, ("piqa",), limit=4)
    measured = json.loads((tmp_path / "piqa_metrics.json").read_text())
    (tmp_path / "piqa_metrics.json").unlink()
    capsys.readouterr()
    rows = eval_helpers.evaluate(tmp_path, ("piqa",), limit=4, resume=True)
    rescored = json.loads((tmp_path / "piqa_metrics.json").read_text())
    assert rescored["samples_per_second"] is None and rows["piqa"]["samples_per_second"] is None
    assert rescored["metrics"] == measured["metrics"] and measured["samples_per_second"] > 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("piqa ")]
    assert line.split()[1:3] == ["4", "—"]
