"""The run manifest: a folder's results are only ever continued by the same run (settings, checkpoint, data)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import numpy as np
import pytest

import eval_helpers
from conftest import shared_path
from multinet_jax import demo, domains, fingerprints
from multinet_jax.eval import EvalConfig, manifest
from multinet_jax.eval.loop import EvaluationFailed, protocol_settings
from multinet_jax.models import attention, registry

DOMAIN = "piqa"
SETTINGS = {"limit": 4}


def _snapshot(output_dir: pathlib.Path) -> dict[str, bytes]:
    return {str(path.relative_to(output_dir)): path.read_bytes() for path in sorted(output_dir.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> pathlib.Path:
    output_dir = tmp_path_factory.mktemp("finished")
    eval_helpers.evaluate(output_dir, (DOMAIN,), **SETTINGS)
    return output_dir


def _copy_run(finished_run: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    output_dir = tmp_path / "run"
    shutil.copytree(finished_run, output_dir)
    return output_dir


def test_manifest_records_settings_and_fingerprints(finished_run):
    recorded = json.loads((finished_run / manifest.FILENAME).read_text())
    assert recorded["settings"]["seed"] == 0 and recorded["settings"]["num_flow_steps"] is None  # the checkpoint's own
    assert set(recorded["settings"]) == set(manifest.PREDICTION_SETTINGS)
    assert recorded["checkpoint"]["files"] > 0 and len(recorded["checkpoint"]["sha256"]) == 64
    assert recorded["checkpoint_settings"] == {}  # the demo's folder names no openpi training config
    assert list(recorded["tokenizers"]) == ["tokenizer"]
    assert recorded["domains"][DOMAIN]["data"]["path"].endswith("piqa/public")
    assert recorded["domains"][DOMAIN]["protocol"] == {  # MultiNet's PIQA, the tests' --max_decoding_steps=6 applied
        "name": "multinet_v1", "prompt_format": "paligemma_processor", "max_prompt_tokens": None, "max_new_tokens": 6,
        "decoding": "openpi_window", "logits_vocab_size": 257_216, "image_resize": "paligemma_processor", "blank_image": 0,
        "turn_by_turn": False, "action_from_dict": None, "temperature": None, "chat": None, "answer": "pi0_scripts",
        "ground_truth": domains.GROUND_TRUTH_AS_IS, "answers_in_text": False, "openpi_quantile_actions": False,
    }
    metrics_file = json.loads((finished_run / f"{DOMAIN}_metrics.json").read_text())
    assert metrics_file["protocol"] == "multinet_v1" and metrics_file["protocol_settings"] == recorded["domains"][DOMAIN]["protocol"]


def test_resume_under_another_protocol_is_refused_naming_the_setting(finished_run, tmp_path):
    """A run recorded under other prompt lengths or decoding budgets (another version's protocol, or overrides)."""
    output_dir = _copy_run(finished_run, tmp_path)
    path = output_dir / manifest.FILENAME
    recorded = json.loads(path.read_text())
    recorded["domains"][DOMAIN]["protocol"]["max_new_tokens"] = 32  # as an earlier version decoded PIQA
    path.write_text(json.dumps(recorded))
    before = _snapshot(output_dir)
    with pytest.raises(manifest.RunChangedError, match=r"protocol of piqa: max_new_tokens \(domains\.piqa\.protocol\.max_new_tokens\) recorded 32, now 6"):
        eval_helpers.evaluate(output_dir, (DOMAIN,), resume=True, **SETTINGS)
    del recorded["domains"][DOMAIN]["protocol"]  # written before protocols were recorded
    path.write_text(json.dumps(recorded))
    with pytest.raises(manifest.RunChangedError, match=r"protocol of piqa: not recorded by the earlier run"):
        eval_helpers.evaluate(output_dir, (DOMAIN,), resume=True, **SETTINGS)
    assert {name: data for name, data in _snapshot(output_dir).items() if name != manifest.FILENAME} == {
        name: data for name, data in before.items() if name != manifest.FILENAME}


def test_resume_across_another_ground_truth_transform_is_refused_and_a_manifest_before_it_resumes(finished_run, tmp_path):
    """The protocol's ground-truth transform (`domains.Protocol.ground_truth`) is recorded: predictions scored against
    another ground truth are never continued. A manifest written before it was recorded reads as the data's own, so
    families whose ground truth was never transformed resume as before (and one before `answers_in_text` as actions
    predicted, which they were)."""
    output_dir = _copy_run(finished_run, tmp_path)
    path = output_dir / manifest.FILENAME
    recorded = json.loads(path.read_text())
    recorded["domains"][DOMAIN]["protocol"]["ground_truth"] = "last_7_of_14_dims"
    path.write_text(json.dumps(recorded))
    before = _snapshot(output_dir)
    with pytest.raises(manifest.RunChangedError) as refused:
        eval_helpers.evaluate(output_dir, (DOMAIN,), resume=True, **SETTINGS)
    assert str(refused.value).startswith(f"{path}: the results in this folder come from another run: protocol of piqa: "
                                         f"ground_truth (domains.piqa.protocol.ground_truth) recorded 'last_7_of_14_dims', "
                                         f"now {domains.GROUND_TRUTH_AS_IS!r}")
    assert _snapshot(output_dir) == before
    del recorded["domains"][DOMAIN]["protocol"]["ground_truth"]  # written before the transform was recorded
    del recorded["domains"][DOMAIN]["protocol"]["answers_in_text"]  # ... and before text answers to actions were
    del recorded["domains"][DOMAIN]["protocol"]["openpi_quantile_actions"]  # ... and before openpi's quantile rule
    path.write_text(json.dumps(recorded))
    eval_helpers.evaluate(output_dir, (DOMAIN,), resume=True, **SETTINGS)
    assert _snapshot(output_dir)["predictions/piqa.jsonl"] == before["predictions/piqa.jsonl"]


def test_protocol_settings_apply_the_overrides_and_know_flow_models_decode_no_tokens():
    config = EvalConfig(**eval_helpers.settings(pathlib.Path("unused"), ("piqa", "openx_bimanual", "overcooked_ai"), max_decoding_steps=None))
    assert registry.own_prompts("pi0", eval_helpers.assets()["checkpoint"]) is None  # Pi0's prompts are the pipeline's
    assert protocol_settings(config, "piqa", None)["max_new_tokens"] == 10 and protocol_settings(config, "bfcl", None)["turn_by_turn"]
    assert protocol_settings(config, "openx_bimanual", None) == {
        "name": "multinet_v1", "prompt_format": "openpi", "max_prompt_tokens": 48, "max_new_tokens": None, "decoding": None,
        "logits_vocab_size": None, "image_resize": "openpi", "blank_image": None, "turn_by_turn": False, "action_from_dict": None,
        "temperature": None, "chat": None, "answer": "pi0_scripts", "ground_truth": domains.GROUND_TRUTH_AS_IS,
        "answers_in_text": False, "openpi_quantile_actions": False,
    }
    assert protocol_settings(config, "openx_mobile_manipulation", None)["action_from_dict"] == "rt1"
    assert protocol_settings(config, "overcooked_ai", None)["max_prompt_tokens"] == 256
    overridden = EvalConfig(**eval_helpers.settings(pathlib.Path("unused"), ("piqa",), max_token_len=64, max_decoding_steps=7))
    assert (protocol_settings(overridden, "piqa", None)["max_prompt_tokens"], protocol_settings(overridden, "piqa", None)["max_new_tokens"]) == (64, 7)
    fast = EvalConfig(**eval_helpers.settings(pathlib.Path("unused"), ("openx_bimanual",), model="pi0_fast", max_decoding_steps=None))
    fast_prompts = registry.own_prompts("pi0_fast", eval_helpers.assets()["fast_checkpoint"])
    assert protocol_settings(fast, "openx_bimanual", fast_prompts)["max_new_tokens"] == 256  # openpi's budget for FAST action tokens
    assert protocol_settings(fast, "openx_bimanual", fast_prompts)["logits_vocab_size"] is None  # MultiNet's padded vocabulary: text only
    # Pi0.5's and Pi0-FAST's actions are unnormalized with openpi's quantile rule; their text domains have no actions
    pi05 = EvalConfig(**eval_helpers.settings(pathlib.Path("unused"), ("openx_bimanual",), model="pi05"))
    assert [protocol_settings(c, name, None)["openpi_quantile_actions"] for c, name in
            ((fast, "openx_bimanual"), (pi05, "openx_bimanual"), (fast, "piqa"), (config, "openx_bimanual"))] == [True, True, False, False]
    hf = EvalConfig(**eval_helpers.settings(pathlib.Path("unused"), ("piqa",), openpi_exact_decoding=False))
    assert protocol_settings(hf, "piqa", None)["decoding"] == "contiguous"  # a resume under the other mode is refused


def test_records_cut_elsewhere_than_the_manifest_records_are_refused(finished_run, tmp_path):
    """The metrics state the protocol's cut (`protocol_settings`, from the manifest) beside the records' own
    (`prompt_truncation`): a predictions file whose prompts were cut elsewhere is refused, naming the file and where
    the manifest records the cut, rather than described with a cut it never had."""
    output_dir = _copy_run(finished_run, tmp_path)
    path = output_dir / "predictions" / f"{DOMAIN}.jsonl"
    records = eval_helpers.read_jsonl(path)
    assert {record["prompt_token_limit"] for record in records} == {None}  # MultiNet's PaliGemma processor: never cut
    path.write_text("".join(json.dumps({**record, "prompt_token_limit": 16}) + "\n" for record in records))
    with pytest.raises(EvaluationFailed) as failed:
        eval_helpers.evaluate(output_dir, (DOMAIN,), resume=True, **SETTINGS)
    assert str(failed.value).endswith(f"{DOMAIN}: ResultsError: {path}: prompt_token_limit is 16, but the run manifest "
                                      f"records prompts cut at None ({manifest.FILENAME}: domains.{DOMAIN}.protocol)")
    assert not (output_dir / f"{DOMAIN}_metrics.json").exists()  # no metrics describing a cut the prompts never had


def test_each_family_records_where_its_own_prompts_are_cut():
    """Pi0.5's and Pi0-FAST's action prompts hold the state and are cut at their config's `max_token_len`, as the
    loaded model's config says, not at the protocol's length; their text prompts, and Act2Answer's questions, at the
    protocol's. OpenVLA never cuts its prompts and decodes one token per action dim, so
    no budget is recorded for its actions. The in-memory model answers as its checkpoint."""
    from multinet_jax import models

    paths = eval_helpers.assets()
    pi05_checkpoint = str(shared_path("openpi_reference", "pi05", "ckpt", "0"))
    for family, checkpoint in (("pi0_fast", paths["fast_checkpoint"]), ("pi05", pi05_checkpoint)):
        model = models.load_model(checkpoint)
        own = registry.own_prompts(family, checkpoint)
        assert own == registry.own_prompts(family, model) == registry.OwnPrompts(model.config.max_token_len, every_prompt=False)
        config = EvalConfig(**eval_helpers.settings(pathlib.Path("unused"), ("piqa",), model=family, checkpoint=checkpoint,
                                                    max_decoding_steps=None))
        protocol_cut = domains.lookup("openx_bimanual").protocol.max_prompt_tokens
        assert protocol_settings(config, "openx_bimanual", own)["max_prompt_tokens"] == model.config.max_token_len != protocol_cut
        assert protocol_settings(config, "piqa", own)["max_prompt_tokens"] is None  # the PaliGemma processor's
        probes = protocol_settings(config, "act2answer", own)
        assert (probes["max_prompt_tokens"], probes["action_max_prompt_tokens"]) == (protocol_cut, model.config.max_token_len)
    openvla = EvalConfig(**eval_helpers.settings(pathlib.Path("unused"), ("openx_bimanual",), model="openvla", tokenizer=None,
                                                 checkpoint=paths["checkpoint"]))
    own = registry.OwnPrompts(None, True)
    assert registry.own_prompts("openvla", "any path") == own
    for name in ("openx_bimanual", "piqa", "act2answer"):
        assert protocol_settings(openvla, name, own)["max_prompt_tokens"] is None, name
    assert protocol_settings(openvla, "openx_bimanual", own)["max_new_tokens"] is None
    assert protocol_settings(openvla, "piqa", own)["max_new_tokens"] == domains.lookup("piqa").protocol.max_new_tokens


def _refusals_of_a_manifest_without(entry: str, domain: str, **overrides) -> tuple[dict, list[str]]:
    """(the protocol `domain` runs under now, what resuming a manifest written without its `entry` is refused for)."""
    config = EvalConfig(**eval_helpers.settings(pathlib.Path("unused"), (domain,), **overrides))
    current = protocol_settings(config, domain, registry.own_prompts(config.model, config.checkpoint))
    before = {key: value for key, value in current.items() if key != entry}
    found = manifest.differences({"domains": {domain: {"protocol": before, "data": None}}},
                                 {"settings": {}, "attention": None, "layout": None, "checkpoint": None, "checkpoint_settings": {},
                                  "tokenizers": {}, "domains": {domain: {"protocol": current, "data": None}}}, [domain])
    return current, found


def test_a_pi0_fast_action_run_from_before_the_quantile_rule_is_refused():
    """A Pi0-FAST (or Pi0.5) Open-X run written before its actions were unnormalized with openpi's quantile rule holds
    z-score predictions: its manifest (no `openpi_quantile_actions`) reads as False, and the resume is refused."""
    _, found = _refusals_of_a_manifest_without("openpi_quantile_actions", "openx_bimanual", model="pi0_fast")
    assert "protocol of openx_bimanual: openpi_quantile_actions (domains.openx_bimanual.protocol.openpi_quantile_actions) " \
           "not recorded (written before it was: read as False), now True" in found


def test_an_act2answer_run_from_before_the_base_frame_probe_is_refused():
    """Act2Answer action probes written before displacements were read in the robot's base frame hold mirrored
    left/right decisions: such a manifest (no `action_probe_frame`) reads as "world", and the resume is refused."""
    current, found = _refusals_of_a_manifest_without("action_probe_frame", "act2answer")
    assert current["action_probe_frame"] == "robot_base"
    assert "action_probe_frame" not in _refusals_of_a_manifest_without("action_probe_frame", "piqa")[0]
    assert "protocol of act2answer: action_probe_frame (domains.act2answer.protocol.action_probe_frame) " \
           "not recorded (written before it was: read as 'world'), now 'robot_base'" in found


def test_resume_with_changed_settings_is_refused_naming_each(finished_run, tmp_path):
    output_dir = _copy_run(finished_run, tmp_path)
    before = _snapshot(output_dir)
    with pytest.raises(manifest.RunChangedError) as raised:
        eval_helpers.evaluate(output_dir, (DOMAIN,), resume=True, seed=1, temperature=0.5, **SETTINGS)
    message = str(raised.value)
    assert "--seed: recorded 0, now 1" in message and "--temperature: recorded 0.0, now 0.5" in message
    assert "\n" not in message
    assert _snapshot(output_dir) == before  # nothing rewritten: predictions, metrics and manifest stay the old run's


def test_resume_with_another_checkpoint_is_refused_and_a_copy_resumes(finished_run, tmp_path, monkeypatch):
    output_dir = _copy_run(finished_run, tmp_path)
    monkeypatch.setattr(demo, "DEMO_SEED", 1)
    other = demo.build_checkpoint("pi0", tmp_path / "other_pi0")
    with pytest.raises(manifest.RunChangedError, match="checkpoint: content differs"):
        eval_helpers.evaluate(output_dir, (DOMAIN,), resume=True, checkpoint=str(other), **SETTINGS)

    copy = tmp_path / "copied_pi0"
    shutil.copytree(eval_helpers.assets()["checkpoint"], copy)
    before = _snapshot(output_dir)["predictions/piqa.jsonl"]
    eval_helpers.evaluate(output_dir, (DOMAIN,), resume=True, checkpoint=str(copy), **SETTINGS)
    assert _snapshot(output_dir)["predictions/piqa.jsonl"] == before


def test_resume_from_a_copy_whose_name_implies_other_settings_is_refused(finished_run, tmp_path):
    """The same weights in a folder named pi0_droid are sampled in openpi's pi0_droid chunks (10 steps, not 50): a
    renamed copy is not the same run, and a manifest from before the entry was recorded reads as none applied."""
    output_dir = _copy_run(finished_run, tmp_path)
    renamed = shutil.copytree(eval_helpers.assets()["checkpoint"], tmp_path / "pi0_droid")
    with pytest.raises(manifest.RunChangedError, match=r"settings the checkpoint's path implies \(openpi's training "
                                                       r"config\): recorded \{\}, now \{'action_horizon': 10\}"):
        eval_helpers.evaluate(output_dir, (DOMAIN,), resume=True, checkpoint=str(renamed), **SETTINGS)
    recorded = json.loads((output_dir / manifest.FILENAME).read_text())
    del recorded["checkpoint_settings"]
    (output_dir / manifest.FILENAME).write_text(json.dumps(recorded))
    eval_helpers.evaluate(output_dir, (DOMAIN,), resume=True, **SETTINGS)  # the original path: nothing implied


def test_resume_after_the_data_changed_is_refused(tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(pathlib.Path(eval_helpers.assets()["data_dir"]) / DOMAIN, data_dir / DOMAIN)
    output_dir = tmp_path / "run"
    eval_helpers.evaluate(output_dir, (DOMAIN,), data_dir=str(data_dir), limit=2)
    rows_file = next((data_dir / DOMAIN / "public").glob("*.jsonl"))
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    rows[0]["label"] = 1 - rows[0]["label"]  # same ids, another ground truth
    rows_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(manifest.RunChangedError, match=r"data of piqa: content differs"):
        eval_helpers.evaluate(output_dir, (DOMAIN,), data_dir=str(data_dir), limit=4, resume=True)


def test_resume_after_a_large_data_file_changed_in_its_middle_is_refused(tmp_path):
    """Whole files are fingerprinted: an answer changed in the middle of a 9 MB file (same size, same mtime) is seen."""
    data_dir = tmp_path / "data"
    shutil.copytree(pathlib.Path(eval_helpers.assets()["data_dir"]) / DOMAIN, data_dir / DOMAIN)
    rows_file = next((data_dir / DOMAIN / "public").glob("*.jsonl"))
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    rows[0]["padding"] = rows[-1]["padding"] = "x" * (5 << 20)  # the edited row lies MiBs from either end of the file
    rows_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output_dir = tmp_path / "run"
    eval_helpers.evaluate(output_dir, (DOMAIN,), data_dir=str(data_dir), limit=2)
    content = rows_file.read_bytes()
    label = content.index(b'"label": ', content.index(b'"id": "demo-piqa-3"')) + len(b'"label": ')
    stat = rows_file.stat()
    rows_file.write_bytes(content[:label] + (b"1" if content[label:label + 1] == b"0" else b"0") + content[label + 1:])
    os.utime(rows_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as a copy that kept the times would
    with pytest.raises(manifest.RunChangedError, match=r"data of piqa: content differs"):
        eval_helpers.evaluate(output_dir, (DOMAIN,), data_dir=str(data_dir), limit=4, resume=True)


def test_file_digests_are_cached_by_file_identity(tmp_path, monkeypatch):
    """A second fingerprint of an unchanged file reads no byte of it; a changed one (even with its old size and mtime)
    is read again, since any write changes its ctime."""
    monkeypatch.setenv("MULTINET_JAX_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "big.bin").write_bytes(np.random.default_rng(0).bytes(9 << 20))
    first = fingerprints.fingerprint(data)
    hashed = []
    real_hash = fingerprints._hash_file
    monkeypatch.setattr(fingerprints, "_hash_file", lambda path: hashed.append(path) or real_hash(path))
    assert fingerprints.fingerprint(data) == first and hashed == []
    assert len(list((tmp_path / "cache" / "digests").iterdir())) == 1
    stat = (data / "big.bin").stat()
    with open(data / "big.bin", "r+b") as handle:
        handle.seek(5 << 20)
        handle.write(b"\x00edited\x00")
    os.utime(data / "big.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprints.fingerprint(data)["sha256"] != first["sha256"] and len(hashed) == 1


def test_resuming_under_another_attention_mode_is_refused(finished_run, tmp_path):
    output_dir = _copy_run(finished_run, tmp_path)
    assert json.loads((output_dir / manifest.FILENAME).read_text())["attention"] == {"mode": "auto", "fast_path": None}
    with attention.mode("xla"), pytest.raises(manifest.RunChangedError) as refused:
        eval_helpers.evaluate(output_dir, (DOMAIN,), resume=True, **SETTINGS)
    assert ("attention ($MULTINET_JAX_ATTENTION): recorded {'mode': 'auto', 'fast_path': None}, "
            "now {'mode': 'xla', 'fast_path': 'xla'}") in str(refused.value)


def test_resuming_on_another_device_layout_is_refused(finished_run, tmp_path):
    """Each per-device batch shape rounds its own way (`manifest.device_layout`): a resume must keep the layout."""
    output_dir = _copy_run(finished_run, tmp_path)
    path = output_dir / manifest.FILENAME
    recorded = json.loads(path.read_text())
    assert recorded["layout"] == {"processes": 1, "mesh": {"data": 1, "model": 1}}
    recorded["layout"]["mesh"]["data"] = 2  # as the run would record on two devices
    path.write_text(json.dumps(recorded))
    with pytest.raises(manifest.RunChangedError, match=r"device layout: recorded \{'processes': 1, 'mesh': \{'data': 2, "
                       r"'model': 1\}\}, now \{'processes': 1, 'mesh': \{'data': 1, 'model': 1\}\}"):
        eval_helpers.evaluate(output_dir, (DOMAIN,), resume=True, **SETTINGS)


def test_resuming_on_another_device_kind_or_jax_is_refused_and_an_older_manifest_resumes(finished_run, tmp_path):
    """Another device kind or jax / jaxlib rounds differently (`manifest.runtime`): a resume must keep them. A manifest
    written before they were recorded resumes (nothing to compare)."""
    import jax

    output_dir = _copy_run(finished_run, tmp_path)
    path = output_dir / manifest.FILENAME
    recorded = json.loads(path.read_text())
    assert recorded["runtime"] == manifest.runtime() and recorded["runtime"]["jax"] == jax.__version__
    path.write_text(json.dumps({**recorded, "runtime": {**recorded["runtime"], "device_kind": "NVIDIA H100", "jax": "0.4.38"}}))
    with pytest.raises(manifest.RunChangedError, match=rf"runtime: device_kind 'NVIDIA H100' -> 'cpu', jax '0.4.38' -> "
                       rf"'{jax.__version__}' \(other kernels round differently"):
        eval_helpers.evaluate(output_dir, (DOMAIN,), resume=True, **SETTINGS)
    path.write_text(json.dumps({key: value for key, value in recorded.items() if key != "runtime"}))
    eval_helpers.evaluate(output_dir, (DOMAIN,), resume=True, **SETTINGS)
    assert json.loads(path.read_text())["runtime"] == manifest.runtime()  # recorded from now on
    # A runtime recorded before the jax settings were: read as jax's defaults, which this run has.
    older = {key: value for key, value in recorded["runtime"].items() if key not in manifest.ADDED_RUNTIME_ENTRIES}
    path.write_text(json.dumps({**recorded, "runtime": older}))
    eval_helpers.evaluate(output_dir, (DOMAIN,), resume=True, **SETTINGS)


@pytest.mark.parametrize(("environment", "difference"), [
    ({"JAX_DEFAULT_PRNG_IMPL": "rbg"}, "prng_impl 'threefry2x32' -> 'rbg'"),
    ({"XLA_FLAGS": "--xla_backend_optimization_level=0"}, "xla_flags [] -> ['--xla_backend_optimization_level=0']"),
])
def test_a_jax_setting_from_the_environment_is_recorded_and_a_resume_under_another_is_refused(finished_run, tmp_path,
                                                                                             environment, difference):
    """JAX_DEFAULT_PRNG_IMPL draws other noise from one --seed (Pi0's flow), XLA_FLAGS compile other programs (another
    optimization level moved tiny Pi0's Open-X actions by up to 4.6e-4): a resume under either would append samples
    of another kind to the file."""
    output_dir = _copy_run(finished_run, tmp_path)
    result = eval_helpers.run_eval(eval_helpers.flags(output_dir, (DOMAIN,), resume=True, **SETTINGS), **environment)
    assert result.returncode == 2, result.stdout[-2000:]
    assert f"runtime: {difference}" in result.stdout


def test_predictions_without_a_manifest_are_refused(finished_run, tmp_path):
    output_dir = _copy_run(finished_run, tmp_path)
    (output_dir / manifest.FILENAME).unlink()
    with pytest.raises(manifest.RunChangedError, match=r"holds predictions \(piqa\) but no run_manifest.json"):
        eval_helpers.evaluate(output_dir, (DOMAIN,), resume=True, **SETTINGS)


def test_differences_compare_only_what_results_depend_on():
    config = EvalConfig(**eval_helpers.settings(pathlib.Path("unused"), ("piqa", "odinw")))
    protocols = {name: protocol_settings(config, name, None) for name in config.domains}
    current = manifest.describe(config, {"checkpoint": config.checkpoint, "tokenizer": config.tokenizer}, protocols)
    recorded = json.loads(json.dumps(current))
    recorded["domains"]["odinw"]["data"]["sha256"] = "0" * 64
    assert manifest.differences(recorded, current, ["piqa"]) == []
    assert [line.split(":")[0] for line in manifest.differences(recorded, current, ["piqa", "odinw"])] == ["data of odinw"]
    del recorded["settings"]["dtype"]  # written by a version without that setting
    assert manifest.differences(recorded, current, []) == [f"--dtype: not recorded by the earlier run, now {config.dtype!r}"]


def test_every_eval_setting_is_declared_as_changing_predictions_or_not():
    assert manifest.unclassified_settings(EvalConfig) == []
    assert not set(manifest.PREDICTION_SETTINGS) & set(manifest.OTHER_SETTINGS)


def test_resuming_a_finished_run_keeps_its_throughput(finished_run, tmp_path):
    output_dir = _copy_run(finished_run, tmp_path)
    before = json.loads((output_dir / f"{DOMAIN}_metrics.json").read_text())
    rows = eval_helpers.evaluate(output_dir, (DOMAIN,), resume=True, **SETTINGS)
    after = json.loads((output_dir / f"{DOMAIN}_metrics.json").read_text())
    assert before["samples_per_second"] > 0
    for key in ("samples_per_second", "timing_seconds", "timing_shares", "resumed_from_sample", "metrics"):
        assert after[key] == before[key], key
    assert rows[DOMAIN]["samples_per_second"] == before["samples_per_second"]


def test_a_run_adding_domains_keeps_the_earlier_ones_in_the_summary(finished_run, tmp_path):
    output_dir = _copy_run(finished_run, tmp_path)
    eval_helpers.evaluate(output_dir, ("odinw",), **SETTINGS)
    summary = json.loads((output_dir / "summary.json").read_text())
    assert list(summary) == [DOMAIN, "odinw"]
    earlier = json.loads((finished_run / "summary.json").read_text())[DOMAIN]
    assert summary[DOMAIN] == earlier
    assert list(json.loads((output_dir / manifest.FILENAME).read_text())["domains"]) == [DOMAIN, "odinw"]


def test_a_run_whose_manifest_recorded_the_nominal_cut_resumes_where_its_predictions_prove_the_models(tmp_path, capsys):
    """Before the prompt cut a model applies itself was recorded, a Pi0-FAST Open-X manifest said the protocol's
    nominal length where its state prompts were cut at the checkpoint's. Its records hold the cut each prompt had, so
    a resume accepts the manifest's correction when every record proves it, and is refused when one does not."""
    paths = eval_helpers.assets()
    settings = {"model": "pi0_fast", "checkpoint": paths["fast_checkpoint"], "fast_tokenizer": paths["fast_tokenizer"], "limit": 2}
    eval_helpers.evaluate(tmp_path, ("openx_bimanual",), **settings)
    path, predictions = tmp_path / manifest.FILENAME, tmp_path / "predictions" / "openx_bimanual.jsonl"
    written = json.loads(path.read_text())
    applied = written["domains"]["openx_bimanual"]["protocol"]["max_prompt_tokens"]
    nominal = domains.lookup("openx_bimanual").protocol.truncation_length(None)  # what the earlier version recorded
    assert applied != nominal and {record["prompt_token_limit"] for record in eval_helpers.read_jsonl(predictions)} == {applied}
    written["domains"]["openx_bimanual"]["protocol"]["max_prompt_tokens"] = nominal
    path.write_text(json.dumps(written))
    capsys.readouterr()
    eval_helpers.evaluate(tmp_path, ("openx_bimanual",), resume=True, **settings)
    assert f"protocol of openx_bimanual: max_prompt_tokens recorded {nominal!r} by an earlier version, now {applied!r} " \
           f"(its 2 predictions each record prompt_token_limit {applied!r})" in capsys.readouterr().err
    assert json.loads(path.read_text())["domains"]["openx_bimanual"]["protocol"]["max_prompt_tokens"] == applied
    written["domains"]["openx_bimanual"]["protocol"]["max_prompt_tokens"] = nominal
    path.write_text(json.dumps(written))
    records = eval_helpers.read_jsonl(predictions)
    predictions.write_text("".join(json.dumps({**record, "prompt_token_limit": nominal if row else applied}) + "\n"
                                   for row, record in enumerate(records)))
    with pytest.raises(manifest.RunChangedError, match=f"max_prompt_tokens.* recorded {nominal!r}, now {applied!r}"):
        eval_helpers.evaluate(tmp_path, ("openx_bimanual",), resume=True, **settings)


def test_an_openvla_action_budget_an_earlier_version_recorded_is_not_compared():
    """OpenVLA decodes one token per action dim: a manifest recording a budget for its actions describes one that never
    applied, and is read as none; the same budget on a text domain, where it applies, is still compared."""
    config = EvalConfig(**eval_helpers.settings(pathlib.Path("unused"), ("openx_bimanual", "piqa"), model="openvla",
                                                tokenizer=None))
    own = registry.own_prompts("openvla", config.checkpoint)
    for name, compared in (("openx_bimanual", False), ("piqa", True)):
        current = protocol_settings(config, name, own)
        earlier = {**current, "max_new_tokens": 256} if current["max_new_tokens"] is None else {**current, "max_new_tokens": 7}
        corrected = manifest._corrections(pathlib.Path("unused"), name, earlier, current, "openvla")
        assert ("max_new_tokens" not in corrected) == compared, name


def test_an_act2answer_budget_and_window_an_earlier_version_recorded_for_a_text_probe_are_not_compared():
    """Act2Answer's text probe scores options: a model without a token action head (PaliGemma, Pi0) decodes nothing
    there, so the budget and decoding window an earlier version recorded for it never applied and are read as none;
    Pi0-FAST's action probe decodes tokens, and its recorded ones are still compared."""
    for model, checkpoint, compared in (("paligemma", "paligemma_pt_224", False), ("pi0", "pi0_base", False),
                                        ("pi0_fast", "pi0_fast_base", True)):
        config = EvalConfig(model=model, checkpoint=checkpoint, tokenizer="tokenizer.model", domains=("act2answer",),
                            output_dir="unused", data_dir="unused", split="public")
        current = protocol_settings(config, "act2answer", None)
        earlier = {**current, "max_new_tokens": 5, "decoding": "contiguous"}
        corrected = manifest._corrections(pathlib.Path("unused"), "act2answer", earlier, current, model)
        assert ({"max_new_tokens", "decoding"} <= set(corrected)) != compared, model
        assert ("max_new_tokens" in corrected or "decoding" in corrected) != compared, model


def test_an_action_probe_cut_is_corrected_only_where_every_record_holds_it(tmp_path):
    """Act2Answer records the action probe's prompt cut as `action_max_prompt_tokens`, which earlier manifests lacked:
    accepted where every written record's `action_prompt_token_limit` is the cut now recorded, not where one differs
    or lacks it (written before records held it)."""
    current = {"max_prompt_tokens": 48, "action_max_prompt_tokens": 250}
    earlier = {"max_prompt_tokens": 48}
    path = tmp_path / "predictions" / "act2answer.jsonl"
    path.parent.mkdir()
    for limits, corrected in (([250, 250], True), ([250, 48], False), ([250, None], False)):
        path.write_text("".join(json.dumps({"id": str(row)} if limit is None else {"id": str(row), "action_prompt_token_limit": limit})
                                + "\n" for row, limit in enumerate(limits)))
        found = manifest._corrections(tmp_path, "act2answer", earlier, current, "pi0_fast")
        assert ("action_max_prompt_tokens" in found) == corrected, limits
        assert "max_prompt_tokens" not in found  # recorded as it is now: nothing to correct
    path.write_text('{"id": "0", "action_prompt_token_limit": 250}\n{"id": "1", oops\n')
    with pytest.raises(manifest.RunChangedError, match=rf"{path}: line 2 is not JSON"):
        manifest._corrections(tmp_path, "act2answer", earlier, current, "pi0_fast")


def test_an_overcooked_run_from_before_multinets_running_statistics_is_refused():
    """Overcooked actions unnormalized under --unnormalize=split now use MultiNet's float32 running statistics
    (0.04% of indices move): a manifest written before (no `split_statistics`) reads as the exact ones, refused."""
    current, found = _refusals_of_a_manifest_without("split_statistics", "overcooked_ai")
    assert current["split_statistics"] == "openpi_running_float32"
    assert "protocol of overcooked_ai: split_statistics (domains.overcooked_ai.protocol.split_statistics) not recorded " \
           "(written before it was: read as 'exact'), now 'openpi_running_float32'" in found
    assert "split_statistics" not in _refusals_of_a_manifest_without("split_statistics", "overcooked_ai",
                                                                     unnormalize="split_exact")[0]
    # Pi0-FAST unnormalizes with the quantiles, which stay exact: nothing to record
    assert "split_statistics" not in _refusals_of_a_manifest_without("split_statistics", "overcooked_ai", model="pi0_fast")[0]


def test_runs_from_before_lerobots_unnormalization_or_hf_sampling_filters_are_refused():
    """SmolVLA's actions now unnormalized by LeRobot's rule (no epsilon) and Magma's sampled domains drawn through HF's
    top-k / top-p: manifests written before (without the entries) read as the old rules, refused; a domain the change
    never touched (greedy Magma text, Pi0's actions) records nothing new."""
    from magma_helpers import magma_dir
    from smolvla_helpers import smolvla_dir

    current, found = _refusals_of_a_manifest_without("lerobot_unnormalize", "openx_bimanual", model="smolvla",
                                                     checkpoint=smolvla_dir(), tokenizer=None)
    assert current["lerobot_unnormalize"] is True
    assert "protocol of openx_bimanual: lerobot_unnormalize (domains.openx_bimanual.protocol.lerobot_unnormalize) not " \
           "recorded (written before it was: read as False), now True" in found
    current, found = _refusals_of_a_manifest_without("sampling_filters", "openx_bimanual", model="magma",
                                                     checkpoint=magma_dir(), tokenizer=None, max_decoding_steps=None)
    assert current["sampling_filters"] == "hf_generate" and current["temperature"] == 0.7
    assert "protocol of openx_bimanual: sampling_filters (domains.openx_bimanual.protocol.sampling_filters) not " \
           "recorded (written before it was: read as 'whole_vocabulary'), now 'hf_generate'" in found
    greedy = _refusals_of_a_manifest_without("sampling_filters", "sqa3d", model="magma", checkpoint=magma_dir(), tokenizer=None,
                                             max_decoding_steps=None)
    assert "sampling_filters" not in greedy[0] and not any("sampling_filters" in line for line in greedy[1])
    sampled = _refusals_of_a_manifest_without("sampling_filters", "sqa3d", model="magma", checkpoint=magma_dir(),
                                              tokenizer=None, temperature=0.5,
                                              max_decoding_steps=None)[0]
    assert sampled["sampling_filters"] == "hf_generate"
    pi0 = _refusals_of_a_manifest_without("lerobot_unnormalize", "openx_bimanual")[0]
    assert "lerobot_unnormalize" not in pi0 and "sampling_filters" not in pi0


def test_openvla_text_sampled_under_temperature_records_hf_sampling_filters():
    from openvla_helpers import openvla_dir

    settings = {"model": "openvla", "checkpoint": openvla_dir(), "tokenizer": None, "max_decoding_steps": None}
    assert _refusals_of_a_manifest_without("sampling_filters", "piqa", **settings, temperature=0.5)[0]["sampling_filters"] \
        == "hf_generate"
    assert "sampling_filters" not in _refusals_of_a_manifest_without("sampling_filters", "piqa", **settings)[0]


def test_a_setting_recorded_and_now_absent_says_how_to_extend_the_folder():
    """Extending a folder made with a text domain and --max_decoding_steps by an action-only domain: given, the flag is
    refused (nothing decodes); left out, the manifest differs. The difference says the way through."""
    current = {"settings": {"max_decoding_steps": None}, "attention": None, "layout": None, "checkpoint": None,
               "checkpoint_settings": {}, "tokenizers": {}, "domains": {}}
    found = manifest.differences({"settings": {"max_decoding_steps": 8}}, current, [])
    assert "--max_decoding_steps: recorded 8, now None (if the domains added now do not read it, which refuses it, list " \
           "one of the folder's earlier domains too)" in found
