"""What the commands tell a person: what the demo builds on its first run, that a finished run resumed has nothing to
recompute (and no progress bars), the next command after an evaluation, and a closed pipe (`| head`) ends quietly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import eval_helpers
from conftest import REPO_ROOT
from multinet_jax import demo


def _with_closed_stdout(*argv: str) -> subprocess.CompletedProcess:
    """The command with stdout a pipe whose reader has already gone, as `multinet-jax ... | head -0` leaves it."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run([sys.executable, "-c", "from multinet_jax.cli import main; main()", *argv], cwd=REPO_ROOT,
                              stdout=writer, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(writer)


@pytest.mark.parametrize("argv", [("--help",), ("eval", "--help"), ("fetch", "--offline", "README.md")],
                         ids=["usage", "command help", "command output"])
def test_a_closed_pipe_ends_the_command_without_a_traceback(argv):
    result = _with_closed_stdout(*argv)
    assert result.returncode == 141 and result.stderr == ""


def test_the_demo_says_what_it_builds_and_then_nothing(tmp_path, capsys):
    paths = eval_helpers.assets()
    built = {"checkpoint": paths["checkpoint"], "tokenizer": paths["tokenizer"], "fast_tokenizer": None, "model": "pi0"}
    capsys.readouterr()  # what building the session's assets printed
    demo.build(data_dir=str(tmp_path / "data"), domains=["piqa", "odinw"], **built)
    assert capsys.readouterr().out == f"demo: building the piqa, odinw data under {tmp_path / 'data'} (first run only)\n"
    demo.build(data_dir=str(tmp_path / "data"), domains=["piqa", "odinw"], **built)
    assert capsys.readouterr().out == ""


def test_the_demo_adds_domains_beside_its_own_the_probe_demos_item_set_included(tmp_path, capsys):
    """Generated data goes only beside generated data: `probe --demo`'s item set, then `eval --demo`'s other domains
    in the same folder, are the demo's own; a real domain beside them is not."""
    paths = eval_helpers.assets()
    built = {"checkpoint": paths["checkpoint"], "tokenizer": paths["tokenizer"]}
    demo.build_probe_demo(item_set=str(tmp_path / "data" / "act2answer" / "public"), model="pi0", **built)
    demo.build(data_dir=str(tmp_path / "data"), domains=["act2answer", "piqa"], fast_tokenizer=None, model="pi0", **built)
    assert "demo: building the piqa data under" in capsys.readouterr().out
    (tmp_path / "data" / "odinw").mkdir()  # a real dataset's folder
    with pytest.raises(ValueError, match=r"which holds data the demo did not write \(odinw;"):
        demo.build(data_dir=str(tmp_path / "data"), domains=["sqa3d"], fast_tokenizer=None, model="pi0", **built)


def test_a_finished_run_resumed_has_nothing_to_recompute_and_names_the_next_command(tmp_path, capsys):
    eval_helpers.evaluate(tmp_path, ("piqa",), limit=4)
    first = capsys.readouterr()
    assert "piqa: 100%" in first.err and "nothing to recompute" not in first.out
    assert first.out.splitlines()[-1].startswith(f"next: multinet-jax report {tmp_path}  ")
    eval_helpers.evaluate(tmp_path, ("piqa",), limit=4, resume=True)
    again = capsys.readouterr()
    assert again.out.startswith("eval: checking piqa, then loading ")  # a line before the model loads
    assert f"piqa: all 4 predictions are in {tmp_path / 'predictions' / 'piqa.jsonl'}: nothing to recompute\n" in again.out
    assert "sample/s" not in again.err  # no progress bar


def test_a_flag_given_twice_with_different_values_is_said_before_the_run(tmp_path):
    """absl applies the last value of a flag given twice (a flagfile's, then the command line's) without a word: each
    such flag gets one line naming the values in order and the one applied; a flag repeated with its value, none."""
    predictions = tmp_path / "piqa.jsonl"
    predictions.write_text('{"id": "0", "prediction": 1, "ground_truth": 1}\n')
    flagfile = tmp_path / "score.flags"
    flagfile.write_text(f"--domain=odinw\n--predictions={predictions}\n--skip_similarity\n")
    result = subprocess.run([sys.executable, "-c", "from multinet_jax.cli import main; main()", "score",
                             f"--flagfile={flagfile}", "--domain=piqa", f"--predictions={predictions}", "--noskip_similarity",
                             f"--output={tmp_path / 'metrics.json'}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "multinet-jax score: --domain given 2 values (odinw, piqa): the last, piqa, applies",
        "multinet-jax score: --skip_similarity given 2 values (true, false): the last, false, applies"]
    assert (tmp_path / "metrics.json").is_file()
