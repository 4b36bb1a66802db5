"""The end-of-run summary (`summary.json`, `summary.csv`, the printed table): every domain a run folder was asked for
keeps a row, and no number is printed as a value it is not."""

from __future__ import annotations

import json

from multinet_jax import domains
from multinet_jax.eval import summary


def _failed_first_run(output_dir):
    """What a first run of piqa and odinw leaves when odinw fails: piqa's metrics file and both rows."""
    piqa = summary.row(domains.lookup("piqa"), 12, 1.5, 8.0, {"overall_accuracy": 0.5, "valid_accuracy": 0.5, "invalid_percentage": 0.0})
    summary.write_json(summary.metrics_path(output_dir, "piqa"), {
        "num_samples": 12, "samples_per_second": 1.5, "timing_seconds": {"wall": 8.0},
        "metrics": {"overall_accuracy": 0.5, "valid_accuracy": 0.5, "invalid_percentage": 0.0}})
    summary.write_summary(output_dir, {"piqa": piqa, "odinw": summary.failed_row(ValueError("odinw: record 5: bad image"))})


def test_a_failed_domain_stays_failed_after_a_resume_of_other_domains(tmp_path):
    """A resume of piqa alone rebuilds the rows of the domains it was not asked for (`eval/loop.py`): odinw, failed
    before, stays failed (marked as not retried), and bfcl, which an earlier run never scored, reads unscored."""
    _failed_first_run(tmp_path)
    rows = summary.read_rows(tmp_path, ["odinw", "bfcl"])
    assert rows["odinw"] == {"status": "failed", "error": "ValueError: odinw: record 5: bad image", "earlier_run": True}
    assert rows["bfcl"]["status"] == "unscored" and "bfcl_metrics.json" in rows["bfcl"]["reason"]
    summary.write_summary(tmp_path, {**rows, "piqa": summary.read_rows(tmp_path, ["piqa"])["piqa"]})
    assert set(json.loads((tmp_path / "summary.json").read_text())) == {"odinw", "bfcl", "piqa"}
    assert "odinw,status,failed" in (tmp_path / "summary.csv").read_text().splitlines()
    table = summary.format_table(json.loads((tmp_path / "summary.json").read_text())).splitlines()
    assert table[1].split()[:2] == ["odinw", "FAILED"] and "(an earlier run of this folder; not retried) ValueError" in table[1]
    assert table[2].split()[:2] == ["bfcl", "UNSCORED"]
    # a second resume keeps it so
    assert summary.read_rows(tmp_path, ["odinw"])["odinw"]["status"] == "failed"


def test_the_table_prints_no_value_as_a_bound_or_zero_it_is_not():
    """99.996 % invalid is not "100", 0.99996 accuracy not "1", 0.0041 samples/s not "0.00"; NaN reads as the
    report writes it."""
    entry = summary.row(domains.lookup("piqa"), 1838, 0.0041, 448000.0,
                        {"overall_accuracy": 0.99996, "valid_accuracy": "NaN", "invalid_percentage": 99.996})
    line = summary.format_table({"piqa": entry}).splitlines()[1].split()
    assert line[:3] == ["piqa", "1838", "0.0041"]
    assert line[3:] == ["overall_accuracy=0.99996", "valid_accuracy=NaN", "invalid_percentage=99.996"]
    exact = summary.row(domains.lookup("piqa"), 4, 2.0, 2.0, {"overall_accuracy": 1.0, "valid_accuracy": 0.0, "invalid_percentage": 100.0})
    assert summary.format_table({"piqa": exact}).splitlines()[1].split()[2:] == [
        "2", "overall_accuracy=1", "valid_accuracy=0", "invalid_percentage=100"]
