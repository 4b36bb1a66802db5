"""`multinet-jax data` and `multinet-jax convert` end to end, as a user runs them."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, shared_path


def _run(*args: str) -> str:
    command = [sys.executable, "-c", "from multinet_jax.cli import main; main()", *args]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_data_json_piqa():
    report = json.loads(_run("data", "--domain=piqa", f"--data_dir={shared_path('data', 'piqa_validation')}", "--json"))
    assert report["num_samples"] == 1838 and report["action_dim"] is None and report["num_bad_records"] == 0
    assert report["fields"]["image/base_0_rgb"] == {"dtype": "uint8", "shape": [224, 224, 3]}  # images reach the model as uint8


def test_data_text_overcooked():
    text = _run("data", "--domain=overcooked_ai", f"--data_dir={shared_path('data', 'multinet_sample', 'overcooked_ai')}", "--split=public")
    assert "samples: 5 (checked 5)" in text and "action stats (dim 1):" in text and "bad records: 0" in text


def test_convert_then_data(tmp_path):
    pytest.importorskip("tensorflow")
    source = shared_path("data", "multinet_sample", "openx_bimanual", "public")
    summary = json.loads(_run("convert", f"--input={source}", f"--output={tmp_path / 'bimanual'}"))
    assert summary["num_steps"] == 8 and summary["action_dim"] == 14 and summary["source_format"] == "translated_shards"
    report = json.loads(_run("data", "--domain=openx_bimanual", f"--data_dir={tmp_path / 'bimanual'}", "--json"))
    assert report["num_samples"] == 8 and report["action_dim"] == 14 and report["num_episodes"] == 1
    assert report["sample"]["prompt"] == "Reach a towel." and len(report["sample"]["ground_truth"]) == 14


def test_a_conversion_running_past_the_delay_shows_its_progress(tmp_path, monkeypatch, capsys):
    """Past `CONVERSION_PROGRESS_DELAY_S` a conversion draws a bar on stderr, against the steps the snapshots recorded;
    a shorter one (every other conversion in the tests) draws none, so a refused source prints only its error."""
    pytest.importorskip("tensorflow")
    from multinet_jax.data import openx

    source = shared_path("data", "multinet_sample", "openx_bimanual", "public")
    openx.convert(source, tmp_path / "quiet")
    assert "converting" not in capsys.readouterr().err
    monkeypatch.setattr(openx, "CONVERSION_PROGRESS_DELAY_S", 0.0)
    openx.convert(source, tmp_path / "shown")
    assert re.search(r"converting openx_bimanual/public: 100%\|[^\n]*\| 8/8 \[.*1 episodes\]", capsys.readouterr().err)



def test_an_rlds_conversion_shows_its_episodes_against_those_its_split_records(tmp_path, monkeypatch, capsys):
    """TFDS records an RLDS split's episodes, not its steps: the bar counts steps, and says k/N episodes."""
    pytest.importorskip("tensorflow")
    from data_helpers import write_tiny_rlds
    from multinet_jax.data import openx

    source = write_tiny_rlds(tmp_path / "rlds", "tfrecord")
    capsys.readouterr()  # TFDS's own bars, writing it
    monkeypatch.setattr(openx, "CONVERSION_PROGRESS_DELAY_S", 0.0)
    openx.convert(source, tmp_path / "converted")
    assert re.search(r"converting tiny_rlds/1\.0\.0: 9step \[[^\n]*, 3/3 episodes\]\n", capsys.readouterr().err)
