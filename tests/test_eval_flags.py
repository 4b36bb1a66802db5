"""Every flagfile in flags/ parses against `multinet-jax eval`'s flags and makes a valid `EvalConfig` naming public
assets (a typo there would only show on a TPU)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import eval_helpers
from conftest import REPO_ROOT
from multinet_jax import assets
from multinet_jax.domains import ALL_DOMAINS

PARSE_ALL = """
import dataclasses, json, pathlib
from absl import flags
import multinet_jax.cli.eval
from multinet_jax.eval import EvalConfig
for path in sorted(pathlib.Path("flags").glob("*.flags")):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["multinet-jax eval", f"--flagfile={path}"])
    values = {field.name: getattr(flags.FLAGS, field.name) for field in dataclasses.fields(EvalConfig)}
    # The pod-slice, probe and SmolVLA Open-X flagfiles are completed on the command line (no checkpoint to infer
    # --model from).
    values["model"] = values["model"] or "pi0"
    config = EvalConfig(**{**values, "domains": tuple(values["domains"])})
    print(json.dumps({"file": path.name, "model": config.model, "domains": list(config.domains),
                      "skip_similarity": config.skip_similarity, "action_horizon": config.action_horizon,
                      "max_token_len": config.max_token_len, "max_decoding_steps": config.max_decoding_steps,
                      "unnormalize": config.unnormalize, "dtype": config.dtype,
                      "openpi_exact_decoding": config.openpi_exact_decoding, "assets": config.asset_specs()}))
"""
# Flagfiles whose checkpoint the user names: the pod slice's, and SmolVLA's Open-X one (smolvla_base reads SO-100's
# state; a checkpoint trained on the domains' robot is needed).
COMPLETED_ON_COMMAND_LINE = ("tpu_pod_slice.flags", "smolvla_openx.flags")


def test_flagfiles_parse_into_valid_configs():
    result = subprocess.run([sys.executable, "-c", PARSE_ALL], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    parsed = {line["file"]: line for line in map(json.loads, result.stdout.splitlines())}
    assert set(parsed) == {path.name for path in (REPO_ROOT / "flags").glob("*.flags")}
    assert parsed["pi0_fast_openx.flags"]["model"] == "pi0_fast"
    assert parsed["pi05_openx.flags"]["model"] == parsed["pi05_text.flags"]["model"] == "pi05"
    for name, model in (("demo.flags", "pi0"), ("demo_fast.flags", "pi0_fast")):  # the demos show every domain
        assert parsed[name]["model"] == model
        assert sorted(parsed[name]["domains"]) == sorted(ALL_DOMAINS)
        assert parsed[name]["skip_similarity"]  # the demo downloads nothing
    for name in COMPLETED_ON_COMMAND_LINE:  # they name no checkpoint: one is given with the run
        assert parsed[name]["assets"]["checkpoint"] is None, name
    for name, line in parsed.items():  # real runs need nothing fetched by hand: every asset is a public name
        if not name.startswith("demo") and name not in COMPLETED_ON_COMMAND_LINE:
            assert all(assets.asset_for(spec) is not None for spec in line["assets"].values()), line
            assert ("embedder_dir" in line["assets"]) == any(d in ("sqa3d", "bfcl") for d in line["domains"])


def test_multinet_flagfiles_carry_multinets_settings():
    result = subprocess.run([sys.executable, "-c", PARSE_ALL], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    parsed = {line["file"]: line for line in map(json.loads, result.stdout.splitlines())}
    for name in ("pi0_openx.flags", "pi0_overcooked.flags"):  # Pi0Config(action_horizon=1), the split's statistics
        assert (parsed[name]["action_horizon"], parsed[name]["unnormalize"]) == (1, "split")
    for name in ("pi0_openx.flags", "pi0_overcooked.flags", "pi0_text.flags", "pi0_fast_text.flags", "pi05_text.flags"):
        # prompt lengths and decoding budgets come from each domain's protocol, not a flag
        assert parsed[name]["max_token_len"] is None and parsed[name]["max_decoding_steps"] is None, name
    # MultiNet's text runs: Hugging Face's PaliGemma (contiguous positions, valid tokens only), in float32
    assert (parsed["pi0_text.flags"]["dtype"], parsed["pi0_text.flags"]["openpi_exact_decoding"]) == ("float32", False)


def test_non_positive_lengths_are_refused(tmp_path):
    for flag in ("--max_token_len=0", "--max_decoding_steps=-1"):
        result = eval_helpers.run_eval([*eval_helpers.flags(tmp_path / "out", ("piqa",)), flag], timeout=120)
        assert result.returncode != 0 and f"error: {flag.split('=')[0]} must be positive" in result.stdout, result.stdout[-2000:]
    assert not (tmp_path / "out").exists()


def test_contradicting_similarity_flags_fail_before_the_demo_builds_anything(tmp_path):
    paths = {name: tmp_path / name for name in ("checkpoint", "tokenizer", "data_dir", "output_dir")}
    result = eval_helpers.run_eval(["--flagfile=flags/demo.flags", "--embedder_dir=all-MiniLM-L6-v2",
                                    *(f"--{name}={path}" for name, path in paths.items())], timeout=120)
    assert result.returncode != 0
    assert "error: --skip_similarity and --embedder_dir contradict each other" in result.stdout
    assert "Traceback" not in result.stdout and not any(tmp_path.iterdir())


def test_action_shape_flags_reach_the_loaded_models(tmp_path):
    from multinet_jax.eval import EvalConfig, Evaluator

    paths = eval_helpers.assets()
    fast = Evaluator(EvalConfig(**eval_helpers.settings(
        tmp_path, ("openx_bimanual",), model="pi0_fast", checkpoint=paths["fast_checkpoint"],
        fast_tokenizer=paths["fast_tokenizer"], action_horizon=10, action_dim=14)))
    assert (fast.model.config.action_horizon, fast.model.config.action_dim) == (10, 14)
    pi0 = Evaluator(EvalConfig(**eval_helpers.settings(tmp_path, ("openx_bimanual",), action_horizon=7)))
    assert pi0.model.config.action_horizon == 7


def test_action_dim_is_refused_for_pi0_whose_checkpoint_fixes_it(tmp_path):
    result = eval_helpers.run_eval([*eval_helpers.flags(tmp_path / "out", ("openx_bimanual",)), "--action_dim=14"], timeout=120)
    assert result.returncode != 0
    assert "error: --action_dim is for --model=pi0_fast, not --model=pi0 (its checkpoint fixes it)" in result.stdout
    assert not (tmp_path / "out").exists()


def test_demo_without_model_fails_before_building_anything(tmp_path):
    """--demo builds a checkpoint of the family --model names; without it there is nothing to infer from."""
    result = eval_helpers.run_eval(["--demo", f"--checkpoint={tmp_path / 'ckpt'}", f"--data_dir={tmp_path / 'data'}",
                                    f"--output_dir={tmp_path / 'out'}"], timeout=120)
    assert result.returncode != 0
    assert "error: --demo builds the checkpoint, so it needs --model" in result.stdout
    assert "Traceback" not in result.stdout and not any(tmp_path.iterdir())


@pytest.mark.parametrize("flagfile, extra", [("magma_act2answer.flags", []), ("smolvla_act2answer.flags", ["--num_flow_steps=2"])])
def test_act2answer_flagfiles_run_on_the_demo_checkpoints(flagfile, extra, tmp_path):
    """The real-model Act2Answer flagfiles, with the family's demo checkpoint (built by --demo) in place of the
    published one: both probes give a record per episode where the checkpoint's actions are end-effector deltas
    (Magma, SimplerEnv's bridge_orig statistics), the action probe a displacement from real statistics; SmolVLA's
    LeRobot config names no action frame, so its records and metrics say why its action probe does not apply."""
    data_dir = eval_helpers.assets()["data_dir"]
    result = eval_helpers.run_eval([f"--flagfile=flags/{flagfile}", "--demo", f"--checkpoint={tmp_path / 'checkpoint'}",
                                    f"--data_dir={data_dir}", f"--output_dir={tmp_path / 'run'}", "--limit=2",
                                    "--batch_size=2", "--dtype=float32", *extra], timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    records = eval_helpers.read_jsonl(tmp_path / "run" / "predictions" / "act2answer.jsonl")
    assert len(records) == 2 and all(record["action_head"] for record in records)
    assert all(len(record["raw_output"]) == 2 for record in records)
    metrics = json.loads((tmp_path / "run" / "act2answer_metrics.json").read_text())["metrics"]
    if flagfile.startswith("smolvla"):
        note = re.compile(f"not applicable: {re.escape(str(tmp_path / 'checkpoint' / 'config.json'))}: "
                          "output_features.action is \\d+ dims with no frame named .*: its actions are unnamed, .*")
        assert all(note.fullmatch(record["action_probe"]) and record["action_displacement"] is None for record in records)
        assert metrics["action_probe"] == records[0]["action_probe"] and "action_probe_accuracy" not in metrics
    else:
        assert all(record["action_probe"] is None and len(record["action_displacement"]) == 3 for record in records)
        assert "action_probe" not in metrics and "action_probe_accuracy" in metrics


@pytest.mark.parametrize("domain, settings, message", [
    ("piqa", {"action_horizon": 4, "model": "pi0_fast"}, r"--action_horizon sets how actions are predicted; --domains \['piqa'\]"),
    ("openx_bimanual", {"openpi_exact_decoding": False},
     r"--noopenpi_exact_decoding changes openpi's token decoding; --model=pi0 decodes no tokens on --domains \['openx_bimanual'\]"),
    ("piqa", {"openpi_exact_decoding": False, "model": "openvla"},
     r"--noopenpi_exact_decoding changes openpi's token decoding; --model=openvla decodes as Hugging Face's generate"),
])
def test_flags_no_requested_domain_reads_are_refused_before_anything_runs(tmp_path, domain, settings, message):
    """Recorded in the manifest, they would tell two runs apart in `report` although the predictions are the same."""
    from multinet_jax.eval import EvalConfig

    if settings.get("model") == "openvla":
        from openvla_helpers import openvla_dir
        settings = {**settings, "checkpoint": openvla_dir(), "tokenizer": None}
    if settings.get("model") == "pi0_fast":
        settings = {**settings, "checkpoint": eval_helpers.assets()["fast_checkpoint"]}
    with pytest.raises(ValueError, match=message):
        EvalConfig(**eval_helpers.settings(tmp_path / "out", (domain,), **settings))


def test_nonormalize_state_where_no_prompt_holds_the_state_is_refused(tmp_path):
    """Pi0's prompts hold no state (its state is an input): --nonormalize_state would change nothing it predicts."""
    from multinet_jax.eval import EvalConfig, evaluate

    with pytest.raises(ValueError, match=r"--nonormalize_state changes the state action prompts hold; --domains "
                                         r"\['openx_bimanual'\] under --model=pi0 \(.*\) prompt with no state"):
        evaluate(EvalConfig(**eval_helpers.settings(tmp_path / "out", ("openx_bimanual",), normalize_state=False)))
    assert not (tmp_path / "out" / "run_manifest.json").exists()
