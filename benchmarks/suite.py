"""Every figure in one call, on whatever `jax.devices()` offers, within a time budget.

    python -m benchmarks.suite --budget_s=480            # full-size models, batch 1 / 8 / 32: the accelerator run
    python -m benchmarks.suite --dry_run --output=/tmp/suite.json   # tiny configs, batch 1 / 2: what CI runs

Stages, in this order (what does not fit in the budget is recorded as skipped, never estimated):
- `peak`: the device's measured bfloat16 matmul peak (FLOP/s), the denominator of MFU, and its measured copy
  bandwidth (`peak.copy.bytes_per_s`: bytes read plus written per second by an elementwise pass over
  `peak_copy_bytes`), the denominator of memory-bandwidth utilization (MBU) for decode steps;
- `attention_parity`, before the models wherever `--attention` (default `$MULTINET_JAX_ATTENTION`, else `auto`)
  takes a fast path on this device (`models.attention`: cuDNN on a CUDA GPU; `xla` forces XLA's kernel in its
  place, which the CPU dry run does): each model's tiny config (parameters `PARITY_PARAM_SCALE` N(0, 1)) and
  `gemma.grouped_attention` at every attention geometry of its full and tiny configs (a prefix and a decode step,
  boolean masks with a query row that has no valid key) through the fast path and the reference on the device;
  the max differences against `MODEL_TOLERANCE` / `KERNEL_TOLERANCE`. A model that fails, or whose check raises,
  is timed on the reference attention and its entry says why (`attention.fast_path_refused`); a case whose fast
  path fails at full size is timed on the reference too (`fast_path_failed`); every case records the
  implementation of each attention call it traced (`attention`, `attention_calls`);
- `models`: each model of `MODELS` with random weights (in `--dtype`, bfloat16 by default) at each batch size:
  Pi0-like models sample one action chunk with 10 flow steps (`ms_per_call` is one chunk for the whole batch),
  token models decode `DECODE_STEPS` tokens (tokens/s counts the steps the loop really ran), OpenVLA predicts one
  action per sample (`predict_action`: its image and a `openvla.BENCHMARK_PROMPT_TOKENS`-token prompt, then 7 greedy action
  tokens; `samples_per_s` is actions/s, `tokens_per_s` its decode rate, prefill included). Each call is
  AOT-compiled, warmed up and fenced (`benchmarks.common.time_call`); model FLOPs per call are counted on the
  jaxpr (`benchmarks.flops`: matmuls and convolutions, loops times their trips, as MaxText counts them) and
  MFU = FLOPs per call / median seconds / the measured peak. Each case (in the dry run, its first batch size only:
  `step_figures` says so in the others) also records (`benchmarks.suite_profile`) ms per flow or decode step
  (`ms_per_flow_step`, `ms_per_decode_step`: by difference with the same call making one loop trip), for token
  decoders the bytes a step must read (`decode_step_bytes`: the language model's weights and the KV cache) and MBU =
  those bytes / step time / the measured copy bandwidth, kernels per call (`kernel_count_source`: `trace` on an
  accelerator, the compiled HLO's ops, `hlo`, on CPU) and the top kernels of one `jax.profiler` call. Under `auto`
  with a fast path, each attention call shape of the case is first timed through both implementations and the case
  compiled with the faster per shape (`benchmarks.suite_attention`, `attention_selection`);
- `multinet_recreation`: MultiNet's own Pi0 loop (`benchmarks.multinet_recreation`: openpi's un-jitted sampler called
  plainly, every camera encoded, caches cleared per batch of 4) on `--multinet_model` (an openpi flow model),
  against our per-sample time at the largest batch measured: the speed-up ratio;
- `metrics`: the jitted Open-X metric kernels on `metrics_samples` samples;
- `data`, `eval`: the Open-X bimanual sample of ../shared through the Grain pipeline, and the end-to-end evaluator
  with the first flow model; they need grain and TensorFlow, and are recorded as skipped where those are not
  installed (the accelerator image has neither; the model stages import no data stack).

Adding a model is one line in `MODELS` (its family's named configs at full size and for the dry run); what one call
is, and what the parity stage compares, are the family's (`interface.Model.benchmark_call` / `parity_output`).
The JSON (`benchmarks/results/suite_<device>.json` unless `--output`) names the device, the settings and, per
figure, what was measured; data is named by its path relative to the repo.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import itertools
import json
import math
import os
import pathlib
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import (REPORT_DIR, REPO_ROOT, copy_bandwidth, data_label, machine_info, matmul_peak, time_call,
                               write_json)
from benchmarks import suite_attention, suite_profile
from benchmarks.flops import count_flops
from benchmarks.multinet_recreation import MULTINET_BATCH, multinet_pipeline, recreates
from multinet_jax import sharding
from multinet_jax.models import attention, configs, gemma, registry
from multinet_jax.models.interface import BenchmarkCall, InferenceOptions, Model
from multinet_jax.models.observation import random_observation

NUM_FLOW_STEPS = 10
LIVE_CAMERAS = 1  # MultiNet's Open-X setup: three camera slots, one image
PARAM_SCALE = 0.02
STAGES = ("peak", "models", "multinet_recreation", "metrics", "data", "eval")
SHARED_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "multinet_sample"
# The fast path's parity check: parameters 0.2 N(0, 1), so that attention is far from uniform and a wrong mask shows,
# yet bf16 rounding does not grow chaotically (at the golden fixtures' 0.3, tiny Pi0.5's bf16 actions move by 27%
# between two attentions equal to 1e-7 in float32). Measured on CPU in bf16 with XLA's kernel for the fast path: the
# four tiny models differ from the reference by 0.3-1.1%; with the mask ignored, by 9-51%. Tolerances are on
# max |fast - reference| / max |reference|: float32 rounding, or a few bf16 roundings, for one attention call; the
# golden tests' float32 tolerance, and 3% in bf16 between the two, for a whole model.
PARITY_PARAM_SCALE = 0.2
PARITY_BATCH = 2
KERNEL_TOLERANCE = {"float32": 1e-5, "bfloat16": 2.0**-6}
MODEL_TOLERANCE = {"float32": 5e-3, "bfloat16": 0.03}
KERNEL_SHAPES = {"prefix": (48, 64), "decode_step": (1, 64)}  # (queries, keys) per attention geometry


@dataclasses.dataclass(frozen=True)
class ModelBench:
    """A model family the suite times (`MODELS`' key, a registered family): its named configs at full size and for
    the dry run. What one call is comes from the family's model (`interface.Model.benchmark_call`)."""

    full: str
    tiny: str


MODELS = {
    "pi0": ModelBench("pi0_full", "pi0_tiny"),
    "pi05": ModelBench("pi05_full", "pi05_tiny"),
    "pi0_fast": ModelBench("pi0_fast_full", "pi0_fast_tiny"),
    "openvla": ModelBench("openvla_7b", "openvla_tiny"),
    "magma": ModelBench("magma_8b", "magma_tiny"),
    "smolvla": ModelBench("smolvla_base", "smolvla_tiny"),
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    batch_sizes: tuple[int, ...]
    decode_steps: int
    peak_matmul: int
    peak_copy_bytes: int
    metrics_samples: int
    iters: int
    # Whether every case, or only the first batch size's, also times a loop step (MBU) and profiles one call: the
    # dry run checks that code once per model, since each adds programs to compile (a third of its CPU time).
    step_figures_every_batch: bool


FULL = Sizes(batch_sizes=(1, 8, 32), decode_steps=64, peak_matmul=8192, peak_copy_bytes=2**31, metrics_samples=1_000_000,
             iters=5, step_figures_every_batch=True)
DRY = Sizes(batch_sizes=(1, 2), decode_steps=64, peak_matmul=256, peak_copy_bytes=2**24, metrics_samples=10_000, iters=2,
            step_figures_every_batch=False)


# ---------------------------------------------------------------------------------------------- pieces


RANDOM_DRAW_VALUES = 2**28  # values per random draw when filling parameters (1 GiB of float32 at most per draw)


def _draw_groups(sizes: list[int]) -> list[list[int]]:
    """Consecutive leaf indices packed into draws of at most `RANDOM_DRAW_VALUES` values (a bigger leaf alone)."""
    groups: list[list[int]] = [[]]
    total = 0
    for index, size in enumerate(sizes):
        if groups[-1] and total + size > RANDOM_DRAW_VALUES:
            groups.append([])
            total = 0
        groups[-1].append(index)
        total += size
    return groups


def _random_params(shapes: Any, scale: float = PARAM_SCALE) -> Any:
    """A parameter tree of ShapeDtypeStructs filled on the device with seeded normal values (no host copy), in one
    program of a few random draws, each cut into consecutive leaves: XLA compiles each draw's generator for
    about 0.1-0.3 s on CPU, so one draw per leaf took 12-25 s per tiny model (the CPU dry run's slowest part)."""
    leaves, treedef = jax.tree.flatten(shapes)
    sizes = [math.prod(leaf.shape) for leaf in leaves]
    groups = _draw_groups(sizes)

    def fill(key: jax.Array) -> list[jax.Array]:
        filled = []
        for group_key, group in zip(jax.random.split(key, len(groups)), groups):
            values = jax.random.normal(group_key, (sum(sizes[i] for i in group),), jnp.float32) * scale
            offsets = itertools.accumulate((sizes[i] for i in group), initial=0)
            filled += [values[start:start + sizes[i]].reshape(leaves[i].shape).astype(leaves[i].dtype)
                       for start, i in zip(offsets, group)]
        return filled

    return treedef.unflatten(jax.jit(fill)(jax.random.key(0)))


def bench_config(name: str, tiny: bool, dtype: str) -> Any:
    """The config of family `name`'s benchmark (tiny or full size) in `dtype`."""
    bench = MODELS[name]
    return registry.checkpoint_format(name).named_config(bench.tiny if tiny else bench.full, dtype)


def bench_model(name: str, dry_run: bool, dtype: str, mesh: jax.sharding.Mesh, scale: float = PARAM_SCALE) -> Model:
    """The benchmarked model of family `name` (its tiny config in a dry run) with random weights."""
    bench = MODELS[name]
    return registry.random_model(name, bench.tiny if dry_run else bench.full, dtype=dtype, mesh=mesh,
                                 params=lambda shapes: _random_params(shapes, scale))


def call_options(sizes: Sizes) -> InferenceOptions:
    """What one timed call decodes: `NUM_FLOW_STEPS` flow steps, or `sizes.decode_steps` tokens."""
    return InferenceOptions(num_flow_steps=NUM_FLOW_STEPS, max_decoding_steps=sizes.decode_steps)


@dataclasses.dataclass(frozen=True)
class Peak:
    """The device's measured limits (the `peak` stage): MFU's and MBU's denominators."""

    flops_per_s: float
    copy_bytes_per_s: float


@dataclasses.dataclass
class Prepared:
    """One model call ready to time: the compiled call, its model FLOPs, what one call produces."""

    kind: str
    run: Callable[[], Any]
    flops: int
    compile_s: float
    compiled: Any
    hlo: str  # the lowered program, to tell whether another call's program is the same one
    tokens: Callable[[Any], int] | None = None


def prepare(call: BenchmarkCall, batch: int) -> Prepared:
    """A family's benchmark call (`Model.benchmark_call`: Pi0-like models one action chunk per sample, token models
    `decode_steps` tokens with every row run to the end, OpenVLA one action), AOT-compiled, its FLOPs counted."""
    start = time.perf_counter()
    lowered = call.function.lower(*call.args, **call.kwargs)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    flops = count_flops(call.function, *call.args, while_trips=call.loop_trips, **call.kwargs)
    # A decode loop stops early only if every row emits EOS at once: count the steps it really ran.
    tokens = (lambda output: batch * int(output[1])) if call.counts_tokens else None
    return Prepared(call.kind, lambda: compiled(*call.args, **call.kwargs), flops, compile_s, compiled,
                    lowered.as_text(), tokens)


# ---------------------------------------------------------------------------------------------- fast-path parity


def attention_geometries(config: Any) -> list[tuple[int, int, int]]:
    """(heads, kv heads, head dim) of every attention in a model config: its Gemma experts' and its ViTs'."""
    found = set()
    for value in (getattr(config, field.name) for field in dataclasses.fields(config)):
        if isinstance(value, configs.GemmaConfig):
            found.add((value.num_heads, value.num_kv_heads, value.head_dim))
        elif isinstance(value, configs.ViTConfig):
            found.add((value.num_heads, value.num_heads, value.width // value.num_heads))
        elif dataclasses.is_dataclass(value):
            found.update(attention_geometries(value))
    return sorted(found)


def _relative_difference(fast: Any, reference: Any) -> float:
    fast, reference = (np.concatenate([np.ravel(np.asarray(leaf, np.float64)) for leaf in jax.tree.leaves(tree)])
                       for tree in (fast, reference))
    return float(np.abs(fast - reference).max() / max(np.abs(reference).max(), np.finfo(np.float32).tiny))


def _fast_and_reference(fast_mode: str, compute: Callable[[], Any]) -> tuple[Any, Any, list[dict[str, Any]]]:
    """`compute()` traced and run under the reference attention and under `fast_mode` (with its recorded calls)."""
    with attention.mode("reference"):
        reference = jax.device_get(compute())
    with attention.mode(fast_mode), attention.recording() as calls:
        fast = jax.device_get(compute())
    return fast, reference, attention.distinct(calls)


def _verdict(difference: float, tolerance: float, calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {"relative_difference": difference, "tolerance": tolerance, "passed": difference <= tolerance,
            "implementations": sorted({call["implementation"] for call in calls})}


def kernel_parity(geometry: tuple[int, int, int], dtype: str, fast_mode: str) -> dict[str, Any]:
    """`gemma.grouped_attention` at one attention geometry, a prefix and a decode step, random boolean masks with a
    query row that has no valid key (its output must stay the mean of all values)."""
    heads, kv_heads, head_dim = geometry
    rng = np.random.default_rng(0)
    results = {}
    for case, (queries, keys) in KERNEL_SHAPES.items():
        q = jnp.asarray(rng.standard_normal((PARITY_BATCH, queries, heads, head_dim)) * head_dim**-0.5, dtype)
        k, v = (jnp.asarray(rng.standard_normal((PARITY_BATCH, keys, kv_heads, head_dim)), dtype) for _ in range(2))
        mask = rng.random((PARITY_BATCH, queries, keys)) > 0.3
        mask[0, 0] = False
        fast, reference, calls = _fast_and_reference(fast_mode, lambda: jax.jit(gemma.grouped_attention)(q, k, v, mask))
        results[case] = _verdict(_relative_difference(fast, reference), KERNEL_TOLERANCE[dtype], calls)
    return results


def model_parity(name: str, dtype: str, fast_mode: str, mesh: Any) -> dict[str, Any]:
    """The tiny config of family `name` (parameters perturbed by `PARITY_PARAM_SCALE`) through both attentions: its
    `Model.parity_output` (actions, first-token logits or pooled streams)."""
    model = bench_model(name, True, dtype, mesh, scale=PARITY_PARAM_SCALE)
    fast, reference, calls = _fast_and_reference(
        fast_mode, lambda: model.parity_output(PARITY_BATCH, call_options(DRY), LIVE_CAMERAS))
    return {"config": MODELS[name].tiny, **_verdict(_relative_difference(fast, reference), MODEL_TOLERANCE[dtype], calls)}


def _geometry_name(geometry: tuple[int, int, int]) -> str:
    return "heads {} / kv heads {} / head dim {}".format(*geometry)


def run_parity(args: argparse.Namespace, mesh: Any) -> dict[str, Any]:
    """Before any figure: each model's tiny config, and every attention geometry of its full and tiny configs, under
    the suite's attention mode (`args.attention`, which takes the device's fast path) against the reference on this
    device. A model that fails (or whose check raises) is refused the fast path."""
    fast_mode = args.attention
    kernels: dict[str, dict[str, Any]] = {}
    with attention.mode(fast_mode):
        fast_path = attention.fast_path()
    result: dict[str, Any] = {"mode": fast_mode, "fast_path": fast_path, "dtype": args.dtype, "kernels": kernels,
                              "models": {}}
    for name in args.models:
        try:
            entry = model_parity(name, args.dtype, fast_mode, mesh)
            failed = [] if entry["passed"] else [f"outputs differ by {entry['relative_difference']:.3g} > {entry['tolerance']}"]
            for geometry in sorted({geometry for tiny in (True, False)
                                    for geometry in attention_geometries(bench_config(name, tiny, args.dtype))}):
                key = _geometry_name(geometry)
                if key not in kernels:
                    kernels[key] = kernel_parity(geometry, args.dtype, fast_mode)
                failed += [f"{key}, {case}" for case, verdict in kernels[key].items() if not verdict["passed"]]
        except Exception as error:  # e.g. a kernel the device refuses: recorded; the model is timed on the reference
            entry, failed = {"config": MODELS[name].tiny, "passed": False}, [f"{type(error).__name__}: {error}"[:500]]
        entry["refused"] = "; ".join(failed) or None
        result["models"][name] = entry
        print(f"attention parity {name}: {entry['refused'] or 'passed'}", flush=True)
    return result


def attention_mode_for(name: str, attention_mode: str, parity: dict[str, Any] | None) -> tuple[str, str | None]:
    """The mode model `name` is timed under and why not the suite's: the reference where its fast path failed parity."""
    if parity is None:
        return attention_mode, None
    if "skipped" in parity:
        refused = f"parity not checked ({parity['skipped']})"
    elif name not in parity["models"]:  # e.g. the eval stage's model, left out of --models
        refused = f"parity not checked for {name} (not in --models)"
    else:
        refused = parity["models"][name]["refused"]
    return ("reference", refused) if refused else (attention_mode, None)


def _memory_bytes(compiled: Any) -> int | None:
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes)


def attention_table(call: BenchmarkCall, iters: int) -> tuple[dict[attention.ShapeKey, str], list[dict[str, Any]] | None,
                                                               list[dict[str, Any]]]:
    """Under `auto` with a fast path on this device: the faster implementation per attention call shape of `call`,
    each timed both ways (`suite_attention.select`), those measurements, and the calls of that trace; elsewhere
    nothing to choose (None) and nothing traced."""
    if attention.current_mode() != "auto" or attention.fast_path() is None:
        return {}, None, []
    with attention.recording() as traced:
        jax.eval_shape(call.function, *call.args, **call.kwargs)
    return *suite_attention.select(attention.distinct(traced), iters), attention.distinct(traced)


def _program(call: BenchmarkCall, prepared: Prepared,
             calls: list[dict[str, Any]]) -> tuple[BenchmarkCall, Callable[[], Any], list[dict[str, Any]], bool]:
    """`call` ready to run, the attention calls its program makes, and whether it was compiled anew: the case's own
    compiled program serves where the lowered one is the same (Pi0's step count is an argument; Pi0-FAST's long
    call is the case's)."""
    with attention.recording() as traced:
        lowered = call.function.lower(*call.args, **call.kwargs)
    same = lowered.as_text() == prepared.hlo
    compiled = prepared.compiled if same else lowered.compile()
    return call, lambda: compiled(*call.args, **call.kwargs), calls if same else attention.distinct(traced), not same


def loop_step_figures(model: Model, call: BenchmarkCall, prepared: Prepared, batch: int, sizes: Sizes,
                      peak: Peak | None, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """ms per flow or decode step, by difference of a long and a one-trip call (`suite_profile.step_options`); for
    token decoders also the bytes a step of the long call must read and MBU = those bytes / step time / the
    measured copy bandwidth."""
    (long, long_run, long_calls, long_new), (short, short_run, _, short_new) = (
        _program(model.benchmark_call(batch, options, LIVE_CAMERAS), prepared, calls)
        for options in suite_profile.step_options(call_options(sizes)))
    cost = suite_profile.step_cost(long_run, short_run, long.loop_trips, short.loop_trips, sizes.iters)
    kind = "decode" if call.counts_tokens else "flow"
    figures: dict[str, Any] = {f"ms_per_{kind}_step": cost["ms_per_step"],
                               f"{kind}_step_timing": {**cost, "compiled_anew": [short_new, long_new]}}
    if call.counts_tokens:
        read = suite_profile.decode_step_bytes(model.params, long_calls)
        figures["decode_step_bytes"] = read
        # A step time within noise (not above zero) gives no MBU rather than a meaningless one.
        figures["mbu"] = (read["total"] / (cost["ms_per_step"] / 1e3) / peak.copy_bytes_per_s
                          if peak and cost["ms_per_step"] > 0 else None)
    return figures


def model_case(model: Model, batch: int, sizes: Sizes, peak: Peak | None) -> dict[str, Any]:
    """One timed case: ms per call, throughput, MFU; ms per loop step (and MBU for decoders); kernels per call and
    the top kernels of one profiled call; under `auto`, the attention implementation chosen per shape."""
    call = model.benchmark_call(batch, call_options(sizes), LIVE_CAMERAS)
    table, selection, traced = attention_table(call, sizes.iters)
    with attention.choices(table), attention.recording() as recorded:
        prepared = prepare(call, batch)
    # With nothing chosen against the fast path, the program is the selection's own trace, served from jax's cache
    # (nothing recorded anew): its calls are those.
    calls = attention.distinct(recorded) or (traced if not table else [])
    output = jax.block_until_ready(prepared.run())
    timing = time_call(prepared.run, warmup=1, iters=sizes.iters)
    seconds = timing["median_s"]
    result = {
        "batch": batch,
        "call": prepared.kind,
        "ms_per_call": 1e3 * seconds,
        "ms_per_call_min": 1e3 * timing["min_s"],
        "samples_per_s": batch / seconds,
        "compile_s": prepared.compile_s,
        "compiled_peak_bytes": _memory_bytes(prepared.compiled),
        "model_flops_per_call": prepared.flops,
        "mfu": prepared.flops / seconds / peak.flops_per_s if peak else None,
        "iters": timing["iters"],
        "attention": sorted({call["implementation"] for call in calls}),
        "attention_calls": calls,
    }
    if selection is not None:
        result["attention_selection"] = selection
    if prepared.tokens is not None:
        result["tokens_per_call"] = prepared.tokens(output)
        result["tokens_per_s"] = result["tokens_per_call"] / seconds
    if not sizes.step_figures_every_batch and batch != sizes.batch_sizes[0]:
        result["step_figures"] = f"not measured: this run measures them at batch {sizes.batch_sizes[0]} only"
        return result
    with attention.choices(table):
        result.update(loop_step_figures(model, call, prepared, batch, sizes, peak, calls))
    result.update(suite_profile.profile_call(prepared.run, prepared.compiled))
    return result


def model_case_or_reference(model: Model, batch: int, sizes: Sizes, peak: Peak | None) -> dict[str, Any]:
    """`model_case`; where its fast path fails at this size (a shape cuDNN refuses that the parity stage's small ones
    did not show), the failure is recorded and the case timed on the reference attention, not the suite ended."""
    try:
        return model_case(model, batch, sizes, peak)
    except Exception as error:
        if attention.fast_path() is None:
            raise
        failure = f"{type(error).__name__}: {error}"[:500]
    with attention.mode("reference"):
        return {**model_case(model, batch, sizes, peak), "fast_path_failed": failure}


def _missing_modules(*names: str) -> list[str]:
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


# ---------------------------------------------------------------------------------------------- the suite


class Budget:
    """Wall-clock budget: a piece starts only if its estimate (its last like piece's duration) still fits."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def run(self, estimate_s: float, fn: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], float]:
        if self.left() <= estimate_s:
            return {"skipped": f"budget: {self.left():.0f} s left, about {estimate_s:.0f} s needed"}, 0.0
        start = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - start


def run_models(args: argparse.Namespace, sizes: Sizes, budget: Budget, peak: Peak | None, mesh: Any,
               parity: dict[str, Any] | None, results: dict[str, Any] | None = None,
               save: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Every model's cases into `results` (a new dict unless given), `save()` called after each case so that the
    report on disk holds every finished one."""
    results = {} if results is None else results
    last_case_s = 0.0
    for name in args.models:
        model_mode, refused = attention_mode_for(name, args.attention, parity)
        results[name] = {"attention": {"mode": model_mode, "dtype": args.dtype, "fast_path_refused": refused}}
        with attention.mode(model_mode):
            last_case_s = time_model(args, name, sizes, budget, peak, mesh, last_case_s, results[name], save)
    return results


def time_model(args: argparse.Namespace, name: str, sizes: Sizes, budget: Budget, peak: Peak | None, mesh: Any,
               last_case_s: float, entry: dict[str, Any], save: Callable[[], None]) -> float:
    """One model's cases (and MultiNet's loop for `--multinet_model`) into `entry`, `save()` after each; returns
    the last case's duration."""
    bench = MODELS[name]
    entry.update({"config": bench.tiny if args.dry_run else bench.full, "cases": {}})
    built, build_s = budget.run(last_case_s, lambda: {"model": bench_model(name, args.dry_run, args.dtype, mesh)})
    if "skipped" in built:
        entry.update(built)
        save()
        return last_case_s
    model = built.pop("model")
    entry["params"] = sum(leaf.size for leaf in jax.tree.leaves(model.params))
    # Every weight in its dtype; a decode step reads only the language model's (not yet MBU's numerator).
    entry["param_bytes"] = sum(leaf.nbytes for leaf in jax.tree.leaves(model.params))
    entry["build_s"] = build_s
    for batch in sizes.batch_sizes:
        case, last_case_s = budget.run(last_case_s, lambda: model_case_or_reference(model, batch, sizes, peak))
        entry["cases"][str(batch)] = case
        save()
        print(f"{name} batch {batch}: {case}", flush=True)
    if name == args.multinet_model and "multinet_recreation" in args.stages:
        entry["multinet_recreation"] = multinet_case(model, entry, budget, last_case_s)
        save()
    return last_case_s


def multinet_case(model: Any, entry: dict[str, Any], budget: Budget, estimate_s: float) -> dict[str, Any]:
    """MultiNet's per-sample time (eager, batch 4) against ours at the largest batch measured."""
    ours = [case for case in entry["cases"].values() if "samples_per_s" in case]
    if not ours:
        return {"skipped": "no batch of ours was measured"}
    observation = random_observation(model.config, MULTINET_BATCH, LIVE_CAMERAS)
    result, _ = budget.run(estimate_s, lambda: multinet_pipeline(model, [observation], 1))
    if "skipped" in result:
        return result
    best = max(ours, key=lambda case: case["batch"])
    return {**result, "ours_batch": best["batch"], "ours_seconds_per_sample": 1 / best["samples_per_s"],
            "speedup_per_sample": result["seconds_per_sample"] * best["samples_per_s"]}


def run_metrics(sizes: Sizes) -> dict[str, Any]:
    from benchmarks.metrics_speed import openx_data
    from multinet_jax import metrics

    predictions, truth = openx_data(sizes.metrics_samples, np.random.default_rng(0))
    stats = metrics.action_stats_from_ground_truth(truth)
    timing = time_call(lambda: metrics.continuous(metrics.pack_continuous(predictions, truth), stats), iters=sizes.iters)
    return {"samples": sizes.metrics_samples, "action_dim": truth.shape[1], "median_s": timing["median_s"],
            "samples_per_s": sizes.metrics_samples / timing["median_s"]}


def run_data(work: pathlib.Path) -> dict[str, Any]:
    from benchmarks.data_throughput import BATCH_SIZE, measure
    from multinet_jax import data, demo
    from multinet_jax.demo import datasets
    from multinet_jax.tokenizers import PaliGemmaTokenizer

    directory = SHARED_SAMPLE / "openx_bimanual"
    tokenizer = PaliGemmaTokenizer(demo.build_tokenizer(work / "demo_tokenizer.model", datasets.corpus()))
    dataset = data.load("openx_bimanual", directory, split="public", tokenizer=tokenizer, batch_size=BATCH_SIZE,
                        cache_dir=work / "cache")
    return {"data": data_label(directory, "openx_bimanual sample"), "batch_size": BATCH_SIZE, **measure(dataset)}


def run_eval(work: pathlib.Path, args: argparse.Namespace, mesh: Any) -> dict[str, Any]:
    from benchmarks.eval_throughput import DOMAIN, evaluator_throughput
    from multinet_jax import demo
    from multinet_jax.demo import datasets
    from multinet_jax.eval import EvalConfig

    model = bench_model(args.multinet_model, args.dry_run, args.dtype, mesh)
    tokenizer = demo.build_tokenizer(work / "demo_tokenizer.model", datasets.corpus())
    eval_config = EvalConfig(model=args.multinet_model, checkpoint=f"<random {model.config}>", tokenizer=str(tokenizer),
                             domains=(DOMAIN,), data_dir=str(SHARED_SAMPLE), split="public", dtype=args.dtype,
                             output_dir=str(work / "runs"), batch_size=8, cache_dir=str(work / "cache"))
    result = evaluator_throughput(model, eval_config, repeats=1)
    return {"data": data_label(SHARED_SAMPLE / DOMAIN, "openx_bimanual sample"), "model": args.multinet_model, **result}


def _device_slug() -> str:
    device = jax.devices()[0]
    return re.sub(r"[^a-z0-9]+", "_", f"{device.platform}_{device.device_kind}".lower()).strip("_")


def suite(args: argparse.Namespace, write: Callable[[dict[str, Any]], None] = lambda report: None) -> dict[str, Any]:
    """The report of every stage in `args.stages`; `write(report)` after each stage and each model case, so a crash
    loses at most the piece in flight (`complete` stays false in such a file)."""
    sizes = DRY if args.dry_run else FULL
    if args.batch_sizes:
        sizes = dataclasses.replace(sizes, batch_sizes=tuple(int(size) for size in args.batch_sizes.split(",")))
    budget = Budget(args.budget_s)
    mesh = sharding.make_mesh("data:1,model:1", devices=jax.devices()[:1])  # one chip: batch 1 fits any mesh
    device = jax.devices()[0]
    report: dict[str, Any] = {
        "benchmark": "suite",
        "machine": machine_info(),
        "device": {"kind": device.device_kind, "platform": device.platform, "devices_used": 1,
                   "devices_available": len(jax.devices())},
        "load_average_1m_at_start": os.getloadavg()[0],
        "complete": False,
        # XLA's own flags in effect (e.g. `--xla_gpu_enable_command_buffer`; None: XLA's defaults, README.md).
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "settings": {"dry_run": args.dry_run, "dtype": args.dtype, "budget_s": args.budget_s,
                     **dataclasses.asdict(sizes), "num_flow_steps": NUM_FLOW_STEPS, "live_cameras": LIVE_CAMERAS,
                     # the random weights' N(0, 1) scale: token models' decode lengths and the parity margins depend on it
                     "param_scale": PARAM_SCALE, "parity_param_scale": PARITY_PARAM_SCALE},
        "stages": {},
    }
    stages = report["stages"]
    save = lambda: write(report)
    peak = None
    if "peak" in args.stages:
        stages["peak"] = {**matmul_peak(sizes.peak_matmul, sizes.iters, "bfloat16"),
                          "copy": copy_bandwidth(sizes.peak_copy_bytes, sizes.iters)}
        peak = Peak(stages["peak"]["flops_per_s"], stages["peak"]["copy"]["bytes_per_s"])
        save()
    with attention.mode(args.attention):
        fast_path = attention.fast_path()
    report["attention"] = {"mode": args.attention, "fast_path": fast_path, "dtype": args.dtype}
    parity = None
    if fast_path is not None and {"models", "eval"} & set(args.stages):
        parity, _ = budget.run(0.0, lambda: run_parity(args, mesh))
        stages["attention_parity"] = parity
        save()
    if "models" in args.stages:
        run_models(args, sizes, budget, peak, mesh, parity, stages.setdefault("models", {}), save)
    if "metrics" in args.stages:
        stages["metrics"], _ = budget.run(0.0, lambda: run_metrics(sizes))
        save()
    eval_mode, _ = attention_mode_for(args.multinet_model, args.attention, parity)
    with tempfile.TemporaryDirectory() as tmp, attention.mode(eval_mode):
        for name, fn in (("data", lambda: run_data(pathlib.Path(tmp))), ("eval", lambda: run_eval(pathlib.Path(tmp), args, mesh))):
            if name not in args.stages:
                continue
            missing = _missing_modules("grain", "tensorflow")
            if missing or not SHARED_SAMPLE.exists():
                stages[name] = {"skipped": f"needs {', '.join(missing) or '../shared'}, absent here"}
                continue
            stages[name], _ = budget.run(0.0, fn)
            save()
    report["not_run"] = [stage for stage in STAGES if stage not in args.stages]
    report["wall_s"] = args.budget_s - budget.left()
    report["complete"] = True
    save()
    return report


def format_table(report: dict[str, Any]) -> str:
    """The printed summary: the device, then one line per model case."""
    device, stages = report["device"], report["stages"]
    peak = stages.get("peak", {}).get("flops_per_s")
    bandwidth = stages.get("peak", {}).get("copy", {}).get("bytes_per_s")
    lines = [f"device: {device['kind']} ({device['platform']}), measured bf16 matmul peak "
             + (f"{peak / 1e12:.3g} TFLOP/s" if peak else "not measured") + ", copy bandwidth "
             + (f"{bandwidth / 1e9:.3g} GB/s" if bandwidth else "not measured"),
             "attention: mode {mode}, fast path {fast_path}, {dtype}".format(**report["attention"]),
             f"{'model':<10} {'batch':>5} {'ms/call':>10} {'samples/s':>10} {'tokens/s':>10} {'GFLOP/call':>11} {'MFU':>7}"
             f" {'ms/step':>8} {'MBU':>7} {'kernels':>8}  attention"]
    for name, entry in stages.get("models", {}).items():
        if entry["attention"]["fast_path_refused"]:
            lines.append(f"{name:<10} fast path refused, timed on the reference: {entry['attention']['fast_path_refused']}")
        for batch, case in entry.get("cases", {}).items():
            if "skipped" in case:
                lines.append(f"{name:<10} {batch:>5}  skipped ({case['skipped']})")
                continue
            tokens = f"{case['tokens_per_s']:.1f}" if "tokens_per_s" in case else "-"
            mfu = f"{100 * case['mfu']:.2f}%" if case["mfu"] is not None else "-"
            step = case.get("ms_per_decode_step", case.get("ms_per_flow_step"))
            step = f"{step:.3f}" if step is not None else "-"
            mbu = f"{100 * case['mbu']:.1f}%" if case.get("mbu") is not None else "-"
            kernels = (f"{case['kernels_per_call']}{'' if case['kernel_count_source'] == 'trace' else '*'}"
                       if "kernels_per_call" in case else "-")
            lines.append(f"{name:<10} {batch:>5} {case['ms_per_call']:>10.2f} {case['samples_per_s']:>10.2f} "
                         f"{tokens:>10} {case['model_flops_per_call'] / 1e9:>11.3f} {mfu:>7} {step:>8} {mbu:>7} "
                         f"{kernels:>8}  {'+'.join(case['attention'])}"
                         + (" (fast path failed)" if "fast_path_failed" in case else ""))
        if "skipped" in entry:
            lines.append(f"{name:<10} skipped ({entry['skipped']})")
        recreation = entry.get("multinet_recreation")
        if recreation and "speedup_per_sample" in recreation:
            lines.append(f"{name:<10} vs MultiNet's pipeline: {recreation['speedup_per_sample']:.1f}x per sample "
                         f"({recreation['seconds_per_sample']:.3g} s vs {recreation['ours_seconds_per_sample']:.3g} s)")
    lines.append("ms/step: per flow or decode step; MBU: a decode step's bytes / its time / the copy bandwidth; "
                 "kernels* (CPU): the compiled HLO's ops, each loop body once")
    for name in ("metrics", "data", "eval"):
        if name in stages:
            lines.append(f"{name}: {json.dumps(stages[name], default=str)[:160]}")
    return "\n".join(lines)


def flow_families() -> list[str]:
    """The `MODELS` whose family samples actions by flow matching, as the MultiNet loop re-created here does."""
    return [name for name in MODELS if registry.family(name).action_decoding == "flow"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget_s", type=float, default=480.0, help="Wall-clock budget for the whole suite.")
    parser.add_argument("--dry_run", action="store_true", help="Tiny configs and sizes (the CPU test).")
    parser.add_argument("--models", default=",".join(MODELS), help=f"Comma-separated subset of {', '.join(MODELS)}.")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"Comma-separated subset of {', '.join(STAGES)}.")
    parser.add_argument("--batch_sizes", default=None, help="Comma-separated batch sizes (default 1,8,32; dry run 1,2).")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--attention", default=None, choices=attention.MODES,
                        help=f"Attention mode (default ${attention.ENV_VAR}, else auto: cuDNN on a CUDA GPU; xla: the "
                             "fast path with XLA's kernel, what the CPU dry run checks).")
    parser.add_argument("--multinet_model", default=flow_families()[0],
                        help="The flow model compared with MultiNet's loop and run end to end.")
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/suite_<device>.json).")
    args = parser.parse_args(argv)
    args.attention = args.attention or attention.current_mode()
    args.models = [name for name in args.models.split(",") if name]
    args.stages = [name for name in args.stages.split(",") if name]
    unknown = [name for name in args.models if name not in MODELS] + [name for name in args.stages if name not in STAGES]
    if unknown:
        parser.error(f"unknown model or stage: {', '.join(unknown)}")
    flow_models = flow_families()
    if args.multinet_model not in flow_models:
        parser.error(f"--multinet_model must be a flow model ({', '.join(flow_models)}), got {args.multinet_model!r}")
    if "multinet_recreation" in args.stages and not recreates(args.multinet_model):
        parser.error(f"the multinet_recreation stage re-creates MultiNet's loop over openpi's sampler: --multinet_model "
                     f"must be an openpi flow model, got {args.multinet_model!r} (leave the stage out)")
    if {"multinet_recreation", "eval"} & set(args.stages) and args.multinet_model not in args.models:
        parser.error(f"the multinet_recreation and eval stages time --multinet_model={args.multinet_model}: "
                     "add it to --models or leave those stages out")
    return args


def main(argv: list[str] | None = None) -> pathlib.Path:
    args = parse_args(argv)
    output = pathlib.Path(args.output) if args.output else REPORT_DIR / f"suite_{_device_slug()}.json"
    report = suite(args, lambda report: write_json(output, report))
    print(format_table(report))
    print(f"results: {output}")
    return output


if __name__ == "__main__":
    main()
