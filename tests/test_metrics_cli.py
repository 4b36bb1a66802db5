"""`multinet-jax score` end to end: the bundled example, NaN/inf as strings, errors naming line and field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from metrics_helpers import assert_metrics_match
from multinet_jax import metrics

EXAMPLE = REPO_ROOT / "examples" / "score" / "openx_bimanual_pi0.jsonl"


def _run_score(*flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "import sys; from multinet_jax.cli import main; main(sys.argv)", "score", *flags]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)


def test_bundled_example_scores_like_the_library(tmp_path):
    output = tmp_path / "metrics.json"
    completed = _run_score("--domain=openx", f"--predictions={EXAMPLE}", f"--output={output}")
    assert completed.returncode == 0, completed.stderr
    records, _ = metrics.load_records(EXAMPLE)
    assert_metrics_match(json.loads(output.read_text()), json.loads(metrics.to_json(metrics.score("openx", records))))
    assert json.loads(output.read_text())["avg_dataset_amae"] == pytest.approx(0.43048823794255614, rel=1e-12)


def test_nan_and_inf_are_written_as_strings(tmp_path):
    predictions = tmp_path / "one.jsonl"
    predictions.write_text(json.dumps({"id": "a", "prediction": None, "ground_truth": [1.0, 2.0]}) + "\n")
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"min": [0.0, 0.0], "max": [2.0, 4.0], "mean": [1.0, 2.0]}))
    output = tmp_path / "metrics.json"
    completed = _run_score("--domain=openx", f"--predictions={predictions}", f"--output={output}", f"--action_stats={stats}")
    assert completed.returncode == 0, completed.stderr
    text = output.read_text()
    result = json.loads(text)  # strict JSON: no bare NaN/Infinity tokens
    assert "NaN" not in text.replace('"NaN"', "") and "Infinity" not in text.replace('"Infinity"', "")
    assert result["normalized_amae"] == "NaN" and result["avg_baseline_relative_mae"] == "Infinity"
    assert result["avg_dataset_amae"] == 3.0


def test_bad_input_errors_name_the_line_and_field(tmp_path):
    predictions = tmp_path / "bad.jsonl"
    lines = [
        {"id": "a", "prediction": 1, "ground_truth": 0},
        {"id": "b", "prediction": 0, "ground_truth": 1},
        {"id": "c", "prediction": 0},
    ]
    predictions.write_text("\n".join(json.dumps(line) for line in lines[:2]) + "\n\n" + json.dumps(lines[2]) + "\n")
    completed = _run_score("--domain=piqa", f"--predictions={predictions}", f"--output={tmp_path / 'm.json'}")
    assert completed.returncode == 2
    assert completed.stderr == f"error: {predictions}:4: field 'ground_truth': missing\n"
    assert not (tmp_path / "m.json").exists()


def test_a_key_given_twice_is_refused_naming_the_line(tmp_path):
    """`json.loads` keeps a repeated key's last value: the file would score whichever the writer put last."""
    predictions = tmp_path / "twice.jsonl"
    predictions.write_text('{"id": "a", "prediction": 1, "ground_truth": 1}\n'
                           '{"id": "b", "prediction": 0, "ground_truth": 0, "ground_truth": 1}\n')
    completed = _run_score("--domain=piqa", f"--predictions={predictions}", f"--output={tmp_path / 'm.json'}")
    assert completed.returncode == 2
    assert completed.stderr == f"error: {predictions}:2: key 'ground_truth' given twice in one object (JSON readers keep either value)\n"


@pytest.mark.parametrize("stats, field", [
    ({"min": ["-1", "-1"], "max": [1, 1], "mean": [0, 0]}, "min"),          # numpy read the strings as numbers
    ({"min": [[-1, -1]], "max": [[1, 1]], "mean": [[0, 0]]}, "min"),        # and flattened the nesting
    ({"min": [-1, -1], "max": [True, True], "mean": [0, 0]}, "max"),         # and the booleans as 1.0
    ({"min": [-1, -1], "max": [1, 1], "mean": [0, 0], "q01": [0.5]}, "q01"),  # not read here, still the file's
])
def test_action_stats_files_hold_flat_lists_of_numbers_one_per_dim(tmp_path, stats, field):
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(stats))
    with pytest.raises(ValueError, match=f"stats.json: field '{field}': expected a flat list of numbers"):
        metrics.load_action_stats(path)


def test_action_stats_of_another_width_are_named_by_flag(tmp_path):
    predictions = tmp_path / "p.jsonl"
    predictions.write_text(json.dumps({"id": "a", "prediction": [0.0, 0.1, 0.2], "ground_truth": [0.1, 0.2, 0.3]}) + "\n")
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"min": [-1.0] * 14, "max": [1.0] * 14, "mean": [0.0] * 14}))
    completed = _run_score("--domain=openx", f"--predictions={predictions}", f"--action_stats={stats}",
                           f"--output={tmp_path / 'm.json'}")
    assert completed.returncode == 2
    assert completed.stderr.startswith(f"error: --action_stats={stats}: action_stats: 'min' must be 3 finite numbers, "
                                       "one per dim of the actions scored")


def test_evals_act2answer_probe_records_scored_as_episodes_name_the_domain_that_scores_them():
    import multinet_jax

    records = [{"id": "0/original", "category": "color", "layout": "original", "ground_truth": 0, "prediction": 0,
                "raw_output": [0.0, -1.0], "action_prediction": 1, "action_probe": None},
               {"id": "0/swapped", "category": "color", "layout": "swapped", "ground_truth": 1, "prediction": 1,
                "raw_output": [-1.0, 0.0], "action_prediction": 1, "action_probe": None}]
    assert multinet_jax.score("act2answer_probes", records)["text_probe_accuracy"] == 1.0
    with pytest.raises(metrics.RecordError, match="field 'target': missing: these are the probe records .* "
                                                  "--domain=act2answer_probes"):
        multinet_jax.score("act2answer", records)


def test_invalid_json_and_missing_embedder_are_reported(tmp_path):
    predictions = tmp_path / "broken.jsonl"
    predictions.write_text('{"id": "a", "prediction": "x", "ground_truth": "y"}\n{"id": "b",\n')
    completed = _run_score("--domain=sqa3d", f"--predictions={predictions}", f"--output={tmp_path / 'm.json'}")
    assert completed.returncode == 2 and f"{predictions}:2: not valid JSON" in completed.stderr
    predictions.write_text('{"id": "a", "prediction": "x", "ground_truth": "y"}\n')
    completed = _run_score("--domain=sqa3d", f"--predictions={predictions}", f"--output={tmp_path / 'm.json'}")
    # The public embedder is the default; tests run offline with an empty cache, so it is named with its fetch command.
    assert completed.returncode == 2 and "error: sentence-transformers/all-MiniLM-L6-v2: not in the Hugging Face cache" in completed.stderr
    assert "`multinet-jax fetch sentence-transformers/all-MiniLM-L6-v2`" in completed.stderr
    assert not (tmp_path / "m.json").exists()


def test_skip_similarity_writes_the_other_metrics_and_the_marker(tmp_path):
    predictions = tmp_path / "vqa.jsonl"
    lines = [{"id": "a", "prediction": "Red.", "ground_truth": "red"}, {"id": "b", "prediction": "", "ground_truth": "two"}]
    predictions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    completed = _run_score("--domain=sqa3d", f"--predictions={predictions}", f"--output={tmp_path / 'm.json'}", "--skip_similarity")
    assert completed.returncode == 0, completed.stderr
    assert json.loads((tmp_path / "m.json").read_text()) == {  # hand-computed: one exact match, one empty answer
        "exact_match_accuracy": 0.5, "total_samples": 2, "total_invalid_preds": 1, "invalid_percentage": 50.0,
        "similarity_metrics": "skipped (no sentence embedder given)",
    }


def test_load_records_reads_line_numbers(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "prediction": 0, "ground_truth": 0}\n\n{"id": "b", "prediction": 1, "ground_truth": 1}\n')
    records, line_numbers = metrics.load_records(path)
    assert [r["id"] for r in records] == ["a", "b"] and line_numbers == [1, 3]


def test_options_the_domain_does_not_read_are_refused_by_flag(tmp_path):
    """`score`'s own refusal (`metrics.check_options_apply`), named by the flag."""
    predictions = tmp_path / "piqa.jsonl"
    predictions.write_text(json.dumps({"id": "a", "prediction": 1, "ground_truth": 0}) + "\n")
    completed = _run_score("--domain=piqa", f"--predictions={predictions}", f"--output={tmp_path / 'm.json'}", "--skip_similarity")
    assert (completed.returncode, completed.stderr) == (
        2, "error: --skip_similarity is for the text-similarity metrics of sqa3d, robovqa and bfcl; --domain=piqa has none\n")
