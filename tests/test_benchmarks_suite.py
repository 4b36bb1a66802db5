"""The accelerator benchmark suite's CPU dry run (tiny configs, no data stack) and its FLOP counter."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tarfile
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import suite, suite_profile
from benchmarks.flops import count_flops
from benchmarks.multinet_recreation import MULTINET_BATCH, multinet_pipeline
from conftest import REPO_ROOT, shared_path
from multinet_jax import sharding
from multinet_jax.models import attention, decoding, registry
from multinet_jax.models.observation import random_observation

# The accelerator image has neither grain nor TensorFlow: block both, run the suite, list what got imported. The
# attention fast path is forced with XLA's kernel in cuDNN's place, so the parity stage runs as on a GPU.
DRY_RUN = """
import json, sys
sys.modules["grain"] = sys.modules["tensorflow"] = None
from benchmarks import suite
suite.main(["--dry_run", "--budget_s=1200", "--stages=peak,models,metrics,data,eval", "--attention=xla",
            "--output", sys.argv[1]])
print("IMPORTED", json.dumps(sorted(m for m in sys.modules if m.startswith(("multinet_jax.data", "grain", "tensorflow"))
                                    and sys.modules[m] is not None)))
"""


def test_flops_count_every_loop_trip_and_match_xla_without_loops():
    x, w = jnp.ones((256, 128)), jnp.ones((128, 64))
    assert count_flops(lambda x, w: x @ w, x, w) == jax.jit(lambda x, w: x @ w).lower(x, w).compile().cost_analysis()["flops"]
    a = jnp.ones((64, 64))
    step = lambda i, y: y @ a
    assert count_flops(lambda a: jax.lax.fori_loop(0, 10, step, a), a) == 10 * 2 * 64**3  # a scan of length 10
    assert count_flops(lambda a, n: jax.lax.fori_loop(0, n, step, a), a, 10, while_trips=7) == 7 * 2 * 64**3
    images, kernel = jnp.ones((2, 224, 224, 3)), jnp.ones((14, 14, 3, 48))
    conv = lambda i, k: jax.lax.conv_general_dilated(i, k, (14, 14), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert count_flops(conv, images, kernel) == 2 * (2 * 16 * 16 * 48) * (14 * 14 * 3)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("suite") / "suite.json"
    result = subprocess.run([sys.executable, "-c", DRY_RUN, str(output)], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(output.read_text()), result.stdout


def test_dry_run_times_every_model_with_flops_and_mfu(dry_run):
    report, stdout = dry_run
    assert report["device"]["kind"] == jax.devices()[0].device_kind and report["settings"]["dry_run"]
    assert report["complete"] is True and report["xla_flags"] == os.environ.get("XLA_FLAGS")
    assert report["stages"]["peak"]["flops_per_s"] > 0 and report["stages"]["peak"]["dtype"] == "bfloat16"
    copy = report["stages"]["peak"]["copy"]
    assert copy["copy_bytes"] == report["settings"]["peak_copy_bytes"] and copy["bytes_per_s"] > 0
    models = report["stages"]["models"]
    assert set(models) == set(suite.MODELS) >= {"pi0", "pi05", "pi0_fast", "openvla"}
    for name, entry in models.items():
        cases = entry["cases"]
        assert set(cases) == {"1", "2"}, entry
        for case in cases.values():
            assert case["ms_per_call"] > 0 and case["model_flops_per_call"] > 0 and 0 < case["mfu"]
        # Every matmul of these models works per sample: twice the batch, exactly twice the model FLOPs.
        assert cases["2"]["model_flops_per_call"] == 2 * cases["1"]["model_flops_per_call"]
    for batch, case in models["pi0_fast"]["cases"].items():
        assert 1 <= case["tokens_per_call"] / int(batch) <= report["settings"]["decode_steps"]
    for batch, case in models["openvla"]["cases"].items():  # one action of 7 tokens per sample
        assert case["tokens_per_call"] == 7 * int(batch) and case["tokens_per_s"] == pytest.approx(7 * case["samples_per_s"])
    assert models["openvla"]["config"] == "openvla_tiny" and models["openvla"]["params"] > 0
    for entry in models.values():  # bf16 weights: two bytes each (the suite's default dtype)
        assert entry["param_bytes"] == 2 * entry["params"], entry["config"]
    assert "pi0_fast" in stdout and "MFU" in stdout and "copy bandwidth" in stdout and report["stages"]["metrics"]["samples_per_s"] > 0


def test_dry_run_checks_the_fast_path_first_and_records_each_models_attention(dry_run):
    report, stdout = dry_run
    assert report["attention"] == {"mode": "xla", "fast_path": "xla", "dtype": "bfloat16"}
    parity = report["stages"]["attention_parity"]
    assert set(parity["models"]) == set(suite.MODELS)
    for name, verdict in parity["models"].items():
        assert verdict["passed"] and verdict["refused"] is None and verdict["implementations"] == ["xla"], (name, verdict)
        assert 0 < verdict["relative_difference"] <= suite.MODEL_TOLERANCE["bfloat16"]
    # Full-size geometries are checked too: Gemma 2B's GQA 8:1 at head dim 256, So400m's 72, Llama-2's 128.
    assert {"heads 8 / kv heads 1 / head dim 256", "heads 16 / kv heads 16 / head dim 72",
            "heads 32 / kv heads 32 / head dim 128"} <= set(parity["kernels"])
    for cases in parity["kernels"].values():
        assert set(cases) == {"prefix", "decode_step"} and all(case["passed"] for case in cases.values())
    for name, entry in report["stages"]["models"].items():
        assert entry["attention"] == {"mode": "xla", "dtype": "bfloat16", "fast_path_refused": None}
        for case in entry["cases"].values():
            assert case["attention"] == ["xla"] and {call["dtype"] for call in case["attention_calls"]} == {"bfloat16"}
    decode_calls = report["stages"]["models"]["pi0_fast"]["cases"]["1"]["attention_calls"]
    assert any(call["q"][1] == 1 for call in decode_calls)  # the KV-cache decode step
    assert "attention: mode xla, fast path xla, bfloat16" in stdout


def _mask_ignored(q, k, v, attn_mask, implementation):
    return jax.nn.dot_product_attention(q, k, v, scale=1.0, implementation="xla")


def _kernel_refused(q, k, v, attn_mask, implementation):
    raise RuntimeError("cuDNN refused the graph")


@pytest.mark.parametrize("broken, problem", [(_mask_ignored, "outputs differ by "), (_kernel_refused, "RuntimeError: cuDNN refused")])
def test_a_fast_path_failing_parity_is_refused_and_the_model_timed_on_the_reference(broken, problem, monkeypatch,
                                                                                     fresh_traces):
    monkeypatch.setattr(attention, "fused", broken)
    args = suite.parse_args(["--dry_run", "--models=pi0", "--stages=models", "--attention=xla"])
    mesh = sharding.make_mesh("data:1,model:1", devices=jax.devices()[:1])
    parity = suite.run_parity(args, mesh)
    verdict = parity["models"]["pi0"]
    assert not verdict["passed"] and verdict["refused"].startswith(problem)
    if broken is _mask_ignored:  # every attention geometry's check fails as well
        assert all(not case["passed"] for cases in parity["kernels"].values() for case in cases.values())
    assert suite.attention_mode_for("pi0", "xla", parity) == ("reference", verdict["refused"])
    assert suite.attention_mode_for("pi0", "xla", {"skipped": "budget: 0 s left"}) == (
        "reference", "parity not checked (budget: 0 s left)")
    # the eval stage's model when --models left it out: timed on the reference, not a KeyError after the models stage
    assert suite.attention_mode_for("pi05", "xla", parity) == ("reference", "parity not checked for pi05 (not in --models)")


def test_on_a_gpu_the_parity_stage_runs_the_mode_whose_fast_path_has_another_name(monkeypatch, fresh_traces):
    """On a CUDA GPU `auto` (a mode) takes cuDNN (an implementation): the parity stage and the timed cases must trace
    under the mode, and each case takes, per attention call shape, the faster of cuDNN and the reference, both timed.
    Here a mocked Hopper GPU, with XLA's kernel standing in for cuDNN's."""
    kernels_run = []

    def cudnn_stand_in(q, k, v, attn_mask, implementation):
        kernels_run.append(implementation)
        return jax.nn.dot_product_attention(q, k, v, mask=None if attn_mask is None else attn_mask[:, None],
                                            scale=1.0, implementation="xla")

    monkeypatch.setattr(attention, "current_device", lambda: attention.Device("gpu", True, (9, 0)))
    monkeypatch.setattr(attention, "fused", cudnn_stand_in)
    args = suite.parse_args(["--dry_run", "--models=pi0", "--stages=models", "--attention=auto", "--batch_sizes=1"])
    mesh = sharding.make_mesh("data:1,model:1", devices=jax.devices()[:1])
    parity = suite.run_parity(args, mesh)
    assert (parity["mode"], parity["fast_path"]) == ("auto", "cudnn")
    verdict = parity["models"]["pi0"]
    assert verdict["passed"] and verdict["refused"] is None and verdict["implementations"] == ["cudnn"], verdict
    assert set(kernels_run) == {"cudnn"}
    sizes = dataclasses.replace(suite.DRY, batch_sizes=(1,))
    models = suite.run_models(args, sizes, suite.Budget(600), None, mesh, parity)
    assert models["pi0"]["attention"] == {"mode": "auto", "dtype": "bfloat16", "fast_path_refused": None}
    case = models["pi0"]["cases"]["1"]
    chosen = {attention.shape_key(row["q"], row["kv"], row["dtype"]): row["chosen"] for row in case["attention_selection"]}
    assert len(chosen) == len(case["attention_selection"]) == len(case["attention_calls"]) >= 3  # SigLIP, prefix, suffix
    for row in case["attention_selection"]:  # never slower than the reference, per shape, by construction
        assert row["reference_ms"] > 0 and row["fast_ms"] > 0 and row["fast"] == "cudnn"
        assert row["chosen"] == ("reference" if row["reference_ms"] < row["fast_ms"] else "cudnn")
    for call in case["attention_calls"]:  # the timed program took the chosen implementation at each shape
        assert call["implementation"] == chosen[attention.shape_key(call["q"], call["kv"], call["dtype"])], call


def test_a_fast_path_failing_at_full_size_times_that_case_on_the_reference(monkeypatch, fresh_traces):
    monkeypatch.setattr(attention, "fused", _kernel_refused)
    mesh = sharding.make_mesh("data:1,model:1", devices=jax.devices()[:1])
    model = suite.bench_model("pi0", True, "bfloat16", mesh)
    with attention.mode("xla"):
        case = suite.model_case_or_reference(model, 1, suite.DRY, None)
    assert case["fast_path_failed"] == "RuntimeError: cuDNN refused the graph" and case["attention"] == ["reference"]
    assert case["ms_per_call"] > 0


    def failing_case(*args):
        raise ValueError("not the attention")

    monkeypatch.setattr(suite, "model_case", failing_case)
    with attention.mode("reference"), pytest.raises(ValueError, match="not the attention"):  # no fast path to blame
        suite.model_case_or_reference(model, 1, suite.DRY, None)


def test_model_benchmarks_need_no_data_stack_and_name_no_machine_paths(dry_run):
    report, stdout = dry_run
    for stage in ("data", "eval"):
        assert report["stages"][stage] == {"skipped": "needs grain, tensorflow, absent here"}
    imported = json.loads(stdout.split("IMPORTED ", 1)[1])
    assert imported == []
    text = json.dumps(report)
    assert str(REPO_ROOT) not in text and "/tmp" not in text


def test_the_report_records_the_weights_scale():
    """Random weights' scale sets the token models' decode lengths and the parity margins: the settings record it."""
    settings = suite.suite(suite.parse_args(["--dry_run", "--stages="]))["settings"]
    assert (settings["param_scale"], settings["parity_param_scale"]) == (suite.PARAM_SCALE, suite.PARITY_PARAM_SCALE)


@pytest.mark.parametrize("flags, problem", [
    (["--models=pi0,nope"], "unknown model or stage: nope"),
    (["--stages=peak,gpu"], "unknown model or stage: gpu"),
    (["--multinet_model=pi0_fast"], "--multinet_model must be a flow model"),
    (["--models=pi0_fast", "--stages=models,multinet_recreation"], "add it to --models"),
    (["--models=smolvla", "--multinet_model=smolvla", "--stages=multinet_recreation"], "must be an openpi flow model"),
    (["--attention=flash"], "argument --attention: invalid choice: 'flash'"),
])
def test_bad_suite_flags_are_refused(flags, problem, capsys):
    with pytest.raises(SystemExit):
        suite.parse_args(flags)
    assert problem in capsys.readouterr().err


def test_the_report_on_disk_holds_every_finished_case_when_the_run_dies(monkeypatch, tmp_path, fresh_traces):
    """The JSON is rewritten (atomically) after each case: a run that raises in its second case leaves the first."""
    finished = []

    def first_case_then_crash(*args):
        if finished:
            raise RuntimeError("the device fell over")
        finished.append(real_case(*args))
        return finished[-1]

    real_case = suite.model_case
    monkeypatch.setattr(suite, "model_case", first_case_then_crash)
    output = tmp_path / "suite.json"
    with pytest.raises(RuntimeError, match="the device fell over"):
        suite.main(["--dry_run", "--models=pi0", "--stages=models", "--attention=reference", "--output", str(output)])
    report = json.loads(output.read_text())
    assert report["complete"] is False and list(report["stages"]["models"]["pi0"]["cases"]) == ["1"]
    assert report["stages"]["models"]["pi0"]["cases"]["1"]["ms_per_call"] == finished[0]["ms_per_call"] > 0
    assert [path.name for path in tmp_path.iterdir()] == ["suite.json"]  # no temporary file left behind


def test_dry_run_measures_step_costs_mbu_and_kernels(dry_run):
    """At the dry run's first batch size: ms per flow or decode step by difference, MBU for the token decoders (bytes
    from the parameter tree and the decode step's cache shape), kernels per call from the CPU-compiled HLO, top
    kernels from a real CPU trace. At its second, none of these (each would compile more programs) and a note."""
    report, stdout = dry_run
    models = report["stages"]["models"]
    for name, entry in models.items():
        decoder = registry.family(name).action_decoding != "flow"
        second = entry["cases"]["2"]
        assert second["step_figures"] == "not measured: this run measures them at batch 1 only", name
        assert not {"ms_per_flow_step", "ms_per_decode_step", "mbu", "kernels_per_call", "top_kernels"} & set(second)
        case = entry["cases"]["1"]
        assert case["kernel_count_source"] == "hlo" and case["kernels_per_call"] > 0, name
        assert case["top_kernels_source"] == "host trace: XLA:CPU thunks" and case["top_kernels"], name
        for kernel in case["top_kernels"]:
            assert kernel["name"] and kernel["count"] >= 1 and kernel["total_ms"] >= 0, (name, kernel)
        kind = "decode" if decoder else "flow"
        timing = case[f"{kind}_step_timing"]
        assert case[f"ms_per_{kind}_step"] == timing["ms_per_step"] > 0, (name, timing)
        assert timing["loop_trips"][0] < timing["loop_trips"][1] and min(timing["ms_per_call"]) > 0
        if not decoder:
            assert "mbu" not in case and "decode_step_bytes" not in case
            continue
        read = case["decode_step_bytes"]
        assert 0 < read["language_model_weights"] < entry["param_bytes"] and 0 < case["mbu"], (name, case)
        step = [call for call in case["attention_calls"] if call["q"][1] == 1]  # the case's own decode step
        assert len(step) == 1 and step[0]["kv"][0] == read["kv_shape_per_layer"][0] == 1
        assert step[0]["kv"][2:] == read["kv_shape_per_layer"][2:]  # the same heads; the long call's cache is longer
        assert read["kv_cache"] % (2 * 2 * math.prod(read["kv_shape_per_layer"])) == 0  # K and V, bf16, whole layers
        assert read["total"] == read["language_model_weights"] + read["kv_cache"]
        assert case["mbu"] == pytest.approx(read["total"] / (case["ms_per_decode_step"] / 1e3)
                                            / report["stages"]["peak"]["copy"]["bytes_per_s"])
    assert any(line.split()[:2] == ["pi0_fast", "2"] and line.split()[-4:-1] == ["-", "-", "-"]
               for line in stdout.splitlines()), stdout  # the table's ms/step, MBU and kernels of batch 2
    # Pi0's step count is an argument of one program, and Pi0-FAST's long call is its case's: those run on the case's
    # own executable; OpenVLA decodes `decode_steps` action tokens for the difference (its case: one action).
    assert models["pi0"]["cases"]["1"]["flow_step_timing"]["compiled_anew"] == [False, False]
    assert models["pi0_fast"]["cases"]["1"]["decode_step_timing"]["compiled_anew"] == [True, False]
    assert models["openvla"]["cases"]["1"]["decode_step_timing"]["compiled_anew"] == [True, True]
    assert models["openvla"]["cases"]["1"]["decode_step_timing"]["loop_trips"] == [0, report["settings"]["decode_steps"] - 1]


def test_the_token_case_times_the_program_evals_decoder_runs(fresh_traces):
    """Pi0-FAST's suite call is what `sample_tokens` (eval's decoder, openpi-exact by default) runs on the same
    observation: with MultiNet's one live camera of three, openpi's window reads the masked cameras, so both encode
    all three (the same prefix keys) and decode the same tokens; the call's kind names the decoder it timed."""
    mesh = sharding.make_mesh("data:1,model:1", devices=jax.devices()[:1])
    model = suite.bench_model("pi0_fast", True, "float32", mesh, scale=suite.PARITY_PARAM_SCALE)  # tokens that vary
    options = suite.call_options(suite.DRY)
    call = model.benchmark_call(1, options, suite.LIVE_CAMERAS)
    with attention.recording() as timed:
        tokens = np.asarray(call()[0])
    jax.clear_caches()  # the same program would be served from the cache, recording nothing
    with attention.recording() as evaluated:
        expected = decoding.sample_tokens(model, random_observation(model.config, 1, suite.LIVE_CAMERAS),
                                          max_decoding_steps=options.max_decoding_steps, per_row_stopping=False)
    keys = lambda calls: sorted({tuple(call["kv"]) for call in attention.distinct(calls)})
    assert keys(timed) == keys(evaluated) and len(keys(timed)) > 1, (keys(timed), keys(evaluated))
    assert call.kind == "decode (openpi-exact)" and len(call.kwargs["images"]) == 3
    np.testing.assert_array_equal(tokens, np.asarray(expected))


def test_multinet_recreation_calls_the_sampler_as_multinet_does(fresh_traces):
    """MultiNet calls openpi's `sample_actions` plainly: its flow loop's body is traced and compiled as one program,
    not run step by step in Python as under `jax.disable_jit()` (which times a loop MultiNet never ran), and
    `jax.clear_caches()` after each batch makes the next batch trace and compile it all again."""
    mesh = sharding.make_mesh("data:1,model:1", devices=jax.devices()[:1])
    model = suite.bench_model("pi0", True, "bfloat16", mesh)
    observation = random_observation(model.config, MULTINET_BATCH, suite.LIVE_CAMERAS)
    traced = []
    for _ in range(2):
        with attention.recording() as calls:
            result = multinet_pipeline(model, [observation], 1)
        # the action expert's queries over the prefix cache (a flow step) vs attention over a whole sequence
        traced.append(Counter("step" if call["q"][1] < call["kv"][1] else "sequence" for call in calls))
    assert traced[0] == traced[1] and 0 < traced[0]["step"] < suite.NUM_FLOW_STEPS, traced
    assert result["batches_timed"] == 1 and result["seconds_per_sample"] == result["seconds_per_batch"][0] / MULTINET_BATCH


def test_eval_throughput_gives_each_model_a_tokenizer_eval_accepts(tmp_path):
    """eval refuses a tokenizer that does not fit the model's embedding: a model with PaliGemma's full vocabulary
    (the So400m one) is evaluated with PaliGemma's tokenizer, built from ../shared's Gemma vocabulary; the tiny
    vocabulary keeps the demo's."""
    from multinet_jax import tokenizers

    eval_throughput = pytest.importorskip("benchmarks.eval_throughput")  # needs the data stack
    shared_path("tokenizers", "gemma_tokenizer.model")
    demo = tmp_path / "demo_tokenizer.model"
    assert eval_throughput.eval_tokenizer(1024, demo, tmp_path) == demo
    full = eval_throughput.eval_tokenizer(tokenizers.PALIGEMMA_VOCAB_SIZE, demo, tmp_path)
    tokenizers.PaliGemmaTokenizer(full).check_vocabulary("<random So400m>", tokenizers.PALIGEMMA_VOCAB_SIZE)


def test_a_decode_step_reads_the_same_weights_and_a_cache_growing_with_the_batch(fresh_traces):
    """`decode_step_bytes` from the attention calls the long decode call really traces (no compile): at batch 2 the
    same language-model weights as at batch 1, twice the KV cache, the cache's batch the call's."""
    mesh = sharding.make_mesh("data:1,model:1", devices=jax.devices()[:1])
    model = suite.bench_model("pi0_fast", True, "bfloat16", mesh)
    long_options, _ = suite_profile.step_options(suite.call_options(suite.DRY))
    read = {}
    for batch in (1, 2):
        call = model.benchmark_call(batch, long_options, suite.LIVE_CAMERAS)
        with attention.recording() as traced:
            jax.eval_shape(call.function, *call.args, **call.kwargs)
        read[batch] = suite_profile.decode_step_bytes(model.params, attention.distinct(traced))
        assert read[batch]["kv_shape_per_layer"][0] == batch
    assert read[1]["language_model_weights"] == read[2]["language_model_weights"] > 0
    assert read[2]["kv_cache"] == 2 * read[1]["kv_cache"] > 0


def test_hlo_ops_count_what_the_cpu_runs_each_loop_body_once(tmp_path):
    """On a real CPU trace of a loop: every thunk XLA:CPU ran is an op `hlo_ops` counts, each once however often
    the loop runs it; the fusions' insides and the tuples are not counted."""
    step = lambda i, y: jnp.tanh(y @ w) + 1
    w = jnp.ones((32, 32))
    compiled = jax.jit(lambda x: jax.lax.fori_loop(0, 5, step, x)).lower(w).compile()
    jax.block_until_ready(compiled(w))
    with jax.profiler.trace(str(tmp_path)):
        jax.block_until_ready(compiled(w))
    events, source = suite_profile.trace_kernels(tmp_path)
    ops = suite_profile.hlo_ops(compiled.as_text())
    ran = {event["args"]["hlo_op"] for event in events}
    assert source == "host trace: XLA:CPU thunks" and ran <= set(ops) and len(ops) == len(set(ops))
    assert any(count == 5 for count in Counter(event["name"] for event in events).values())  # the loop body's ops
    assert not {"parameter", "tuple"} & {op.split(".")[0] for op in ops}


def test_top_kernels_of_the_h200_trace_are_those_its_readme_reports(tmp_path):
    """The parser on a real GPU trace (`../shared/gpu_profiles`, OpenVLA at batch 1 on an H200): 8,484 device events,
    the per-step float32 copy of the MLP weights 224x = 29 ms and memcpy128 1,761x = 21 ms, as its README says."""
    with tarfile.open(shared_path("gpu_profiles", "trace_openvla_b1.tar.gz")) as archive:
        archive.extractall(tmp_path, filter="data")
    events, source = suite_profile.trace_kernels(tmp_path)
    assert source == "device trace" and len(events) == 8484
    top = {kernel["name"]: kernel for kernel in suite_profile.top_kernels(events)}
    assert top["loop_slice_fusion"]["count"] == 224 and round(top["loop_slice_fusion"]["total_ms"]) == 29
    assert top["memcpy128"]["count"] == 1761 and round(top["memcpy128"]["total_ms"]) == 21
    assert list(top) == sorted(top, key=lambda name: -top[name]["total_ms"])
