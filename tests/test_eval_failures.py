"""Broken inputs fail fast with a message naming the file, and leave no misleading results behind."""

from __future__ import annotations

import json
import pathlib
import pickle
import shutil

import pytest

import eval_helpers
from conftest import shared_path


def _outputs(output_dir: pathlib.Path) -> list[str]:
    return sorted(str(path.relative_to(output_dir)) for path in output_dir.rglob("*")) if output_dir.exists() else []


def test_truncated_checkpoint_names_the_checkpoint_and_writes_nothing(tmp_path):
    checkpoint = tmp_path / "pi0_tiny"
    shutil.copytree(eval_helpers.assets()["checkpoint"], checkpoint)
    largest = max((path for path in (checkpoint / "params").rglob("*") if path.is_file()), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
    output_dir = tmp_path / "run"
    from multinet_jax import weights

    with pytest.raises(weights.CheckpointError, match=rf"{checkpoint}/params: could not read the parameter arrays"):
        eval_helpers.evaluate(output_dir, ("piqa",), checkpoint=str(checkpoint))
    assert _outputs(output_dir) == []


def test_corrupt_record_fails_its_domain_naming_record_and_field_and_the_others_finish(tmp_path):
    data_dir = tmp_path / "data"
    for name in ("overcooked_ai", "piqa"):
        shutil.copytree(pathlib.Path(eval_helpers.assets()["data_dir"]) / name, data_dir / name)
    pickle_path = data_dir / "overcooked_ai" / "public" / "2020_hh_trials_train.pickle"
    rows = pickle.loads(pickle_path.read_bytes())
    rows[5]["state"] = "not base64 png"
    pickle_path.write_bytes(pickle.dumps(rows))
    output_dir = tmp_path / "run"
    from multinet_jax import data
    from multinet_jax.eval import EvaluationFailed

    with pytest.raises(EvaluationFailed, match=r"1 domain\(s\) failed.*overcooked_ai: BadRecordError") as raised:
        eval_helpers.evaluate(output_dir, ("overcooked_ai", "piqa"), data_dir=str(data_dir), batch_size=4, limit=8)
    error = raised.value.failures["overcooked_ai"]
    assert isinstance(error, data.BadRecordError)
    assert str(error).startswith("overcooked_ai: record 2020_hh_trials_train.pickle:5: field 'state'")
    # The batch before the bad record was complete and stays as a resumable prefix; the domain is not scored.
    written = eval_helpers.read_jsonl(output_dir / "predictions" / "overcooked_ai.jsonl")
    assert [r["sample_index"] for r in written] == [0, 1, 2, 3]
    assert not (output_dir / "overcooked_ai_metrics.json").exists()
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["overcooked_ai"]["status"] == "failed" and "field 'state'" in summary["overcooked_ai"]["error"]
    assert summary["piqa"]["num_samples"] == 8 and (output_dir / "piqa_metrics.json").exists()


def test_a_missing_domain_fails_before_any_domain_is_evaluated(tmp_path):
    output_dir = tmp_path / "run"
    data_dir = tmp_path / "data"
    for name in ("piqa", "odinw"):
        shutil.copytree(pathlib.Path(eval_helpers.assets()["data_dir"]) / name, data_dir / name)
    with pytest.raises(FileNotFoundError, match=rf"sqa3d: data_dir {data_dir}/sqa3d is not a directory"):
        eval_helpers.evaluate(output_dir, ("piqa", "odinw", "sqa3d"), data_dir=str(data_dir), skip_similarity=True)
    assert _outputs(output_dir) == []


def test_unlabeled_split_fails_before_the_model_runs(tmp_path):
    public_piqa = shared_path("data", "multinet_sample", "piqa")  # MultiNet's public sample has no labels
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "piqa").symlink_to(public_piqa)
    output_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="has no ground truth"):
        eval_helpers.evaluate(output_dir, ("piqa",), data_dir=str(data_dir))
    assert _outputs(output_dir) == []


def test_unknown_domain_fails_before_anything_loads(tmp_path):
    with pytest.raises(ValueError, match="unknown domain 'procgen'"):
        eval_helpers.evaluate(tmp_path, ("procgen",))


def test_pi05_checkpoint_evaluated_as_pi0_fails_before_any_prediction(tmp_path):
    """A Pi0.5 needs its own prompt (the discretized state): run as --model=pi0 it would be silently wrong."""
    checkpoint = shared_path("openpi_reference", "pi05", "ckpt", "0")
    with pytest.raises(ValueError, match=rf"^{checkpoint}: holds a pi05 model \(from its parameters\), but --model=pi0; "
                                         "pass --model=pi05 or leave --model out$"):
        eval_helpers.evaluate(tmp_path / "run", ("piqa",), checkpoint=str(checkpoint))
    assert _outputs(tmp_path / "run") == []


def test_an_embedder_directory_of_another_model_is_refused_before_the_checkpoint_loads(tmp_path, monkeypatch):
    """A similarity domain's --embedder_dir is read before the model: a directory declaring CLS pooling is refused
    without the minutes a full-size checkpoint takes to load (here: loading it would fail the test)."""
    from multinet_jax.eval import loop

    embedder = tmp_path / "embedder"
    shutil.copytree(shared_path("models", "all-MiniLM-L6-v2"), embedder)
    pooling = embedder / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "pooling_mode_cls_token": True,
                                   "pooling_mode_mean_tokens": False}))
    monkeypatch.setattr(loop, "_load_model", lambda *args: pytest.fail("the checkpoint was loaded first"))
    with pytest.raises(ValueError, match=r"1_Pooling/config.json: pooling \['pooling_mode_cls_token'\]: only mean pooling"):
        eval_helpers.evaluate(tmp_path / "run", ("sqa3d",), embedder_dir=str(embedder))


def test_a_resume_that_dies_leaves_the_domain_unscored_not_scored_on_its_old_samples(tmp_path, monkeypatch):
    """A finished run resumed to more samples: its metrics file, plot and summary row describe the old samples, so they
    go before new predictions are appended. Killed then (here: interrupted once a batch is written), the domain reads
    as unscored in `report`; the next resume scores all the samples."""
    from multinet_jax import cross_run_report
    from multinet_jax.eval import results

    output_dir = tmp_path / "run"
    eval_helpers.evaluate(output_dir, ("piqa", "odinw"), batch_size=4, limit=4)
    assert json.loads((output_dir / "piqa_metrics.json").read_text())["num_samples"] == 4
    write = results.PredictionWriter.write

    def write_then_die(self, records):
        write(self, records)
        if records:
            raise KeyboardInterrupt  # not an Exception: no failed row, as with a kill

    monkeypatch.setattr(results.PredictionWriter, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        eval_helpers.evaluate(output_dir, ("piqa", "odinw"), batch_size=4, limit=8, resume=True)
    assert len(eval_helpers.read_jsonl(output_dir / "predictions" / "piqa.jsonl")) == 8
    assert not (output_dir / "piqa_metrics.json").exists() and not (output_dir / "plots" / "piqa.png").exists()
    assert list(json.loads((output_dir / "summary.json").read_text())) == ["odinw"]  # not reached: its 4 samples
    assert "piqa" not in (output_dir / "summary.csv").read_text()
    assert cross_run_report.unscored_domains(cross_run_report.load_run(output_dir)) == ["piqa"]
    monkeypatch.setattr(results.PredictionWriter, "write", write)
    eval_helpers.evaluate(output_dir, ("piqa", "odinw"), batch_size=4, limit=8, resume=True)
    assert json.loads((output_dir / "piqa_metrics.json").read_text())["num_samples"] == 8
    assert json.loads((output_dir / "summary.json").read_text())["piqa"]["num_samples"] == 8
