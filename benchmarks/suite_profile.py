"""Where one benchmark call's time goes: cost per loop step, bytes a decode step must read, kernels and top kernels.

`benchmarks.suite` records these beside each case's ms per call, so an accelerator run shows where time goes without
another script (`../shared/gpu_profiles/devprof.py` was that script for the first H200 run):

- ms per step, by difference of two step counts (`step_cost`): the call with `decode_steps` tokens (the case's own
  call but for one-action families, whose action decodes a few) or 10 flow steps against the same call with one
  loop trip (`step_options`), timed in alternation so that the machine's load weighs on both alike;
- the bytes one decode step must read (`decode_step_bytes`): the language model's weights in their dtype and the KV
  cache at the call's length and batch, from the parameter tree and the traced decode-step attention's shapes; over
  the step time and the measured copy bandwidth, that is MBU;
- kernels per call and the top kernels of one profiled call (`profile_call`): on a GPU, from a `jax.profiler` trace's
  device events; on CPU, where there are no device kernels, the count is the compiled HLO's ops (`hlo_ops`)
  and the top "kernels" are XLA:CPU's thunks from the host trace.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import pathlib
import re
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from multinet_jax.models.interface import InferenceOptions

# The shorter call of the per-step difference: one flow step, one decode-loop trip (a token after the prefill's), one
# action token (OpenVLA's loop then makes no trip, Magma's one: the difference divides by the trips of each).
SHORT_OPTIONS = dict(num_flow_steps=1, max_decoding_steps=2, action_dim=1)
TOP_KERNELS = 12
STEP_ITERS = 7  # calls of each length for the per-step difference (the suite's `iters` when larger)
# HLO instructions that launch nothing at run time.
_NO_WORK = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "after-all", "partition-id", "replica-id"}
# Attributes naming computations that run as sequences of their own (loop bodies, branches, calls); everything else
# referenced (`calls=` of a fusion, `to_apply=` of a reduce) runs inside the instruction that references it.
_CONTROL_FLOW = re.compile(r"\b(?:condition|body|true_computation|false_computation)=%?([\w.\-]+)"
                           r"|branch_computations=\{([^}]*)\}")


def step_options(options: InferenceOptions) -> tuple[InferenceOptions, InferenceOptions]:
    """The two ends of the per-step difference: `options` with as many action tokens as decode steps (OpenVLA's and
    Magma's one action is 7-8 tokens, too few to tell a step from the machine's noise), and with one loop trip."""
    long = dataclasses.replace(options, action_dim=options.max_decoding_steps)
    return long, dataclasses.replace(options, **SHORT_OPTIONS)


def step_cost(long: Callable[[], Any], short: Callable[[], Any], long_trips: int, short_trips: int,
              iters: int) -> dict[str, Any]:
    """Milliseconds per loop trip: (median of `long` - median of `short`) / (`long_trips` - `short_trips`), the two
    called in alternation after a warm-up each (both AOT-compiled, each call fenced)."""
    if long_trips <= short_trips:
        raise ValueError(f"the per-step difference needs more trips in the long call: {long_trips} vs {short_trips}")
    jax.block_until_ready(long())
    jax.block_until_ready(short())
    seconds: dict[str, list[float]] = {"short": [], "long": []}
    for _ in range(max(iters, STEP_ITERS)):
        for name, fn in (("short", short), ("long", long)):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            seconds[name].append(time.perf_counter() - start)
    short_s, long_s = statistics.median(seconds["short"]), statistics.median(seconds["long"])
    return {"loop_trips": [short_trips, long_trips], "ms_per_call": [1e3 * short_s, 1e3 * long_s],
            "iters": len(seconds["long"]), "ms_per_step": 1e3 * (long_s - short_s) / (long_trips - short_trips)}


# ---------------------------------------------------------------------------------------------- bytes per step


def language_model(params: Any) -> dict[str, Any]:
    """The decoder-LM's parameters (`gemma.Module`'s: `embedder`, `layers`, `final_norm`) in a model's tree."""
    found = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if {"embedder", "layers"} <= set(node):
                found.append(node)
            else:
                for child in node.values():
                    visit(child)

    visit(params)
    if len(found) != 1:
        raise ValueError(f"parameters: expected one language model (a tree holding embedder and layers), found {len(found)}")
    return found[0]


def decode_step_bytes(params: Any, attention_calls: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Bytes one decode step must read at least: the language model's weights in their dtype (all of them, but an
    untied input embedding, of which a step gathers one row per sequence) and the K and V cache of every layer at the
    length and batch the decode-step attention (query length 1) was traced with."""
    lm = language_model(params)
    weights = sum(leaf.nbytes for leaf in jax.tree.leaves(lm))
    if "lm_head" in lm["embedder"]:
        weights -= lm["embedder"]["input_embedding"].nbytes
    steps = {(tuple(call["kv"]), call["dtype"]) for call in attention_calls if call["q"][1] == 1}
    if len(steps) != 1:
        raise ValueError(f"attention calls: expected one decode-step shape (query length 1), found {sorted(steps)}")
    (kv_shape, dtype), = steps
    depths = {leaf.shape[0] for leaf in jax.tree.leaves(lm["layers"])}
    if len(depths) != 1:
        raise ValueError(f"parameters: the language model's layers are not stacked on one depth axis: {sorted(depths)}")
    kv_cache = 2 * depths.pop() * math.prod(kv_shape) * np.dtype(dtype).itemsize
    return {"language_model_weights": weights, "kv_cache": kv_cache, "total": weights + kv_cache,
            "kv_shape_per_layer": list(kv_shape)}


# ---------------------------------------------------------------------------------------------- kernels


def hlo_ops(hlo_text: str) -> list[str]:
    """The ops of a compiled program's HLO that run at all, by name (each loop body once): the instructions of the
    entry computation and of the loop bodies, conditions and branches it reaches, less those that launch nothing. A
    fusion is one op, whatever it fuses."""
    computations: dict[str, list[str]] = {}
    entry, current = None, None
    for line in hlo_text.splitlines():
        if line.endswith("{") and not line.startswith(" "):
            current = line.removeprefix("ENTRY ").split()[0].lstrip("%")
            computations[current] = []
            entry = current if line.startswith("ENTRY ") else entry
        elif line.startswith(" ") and current is not None and " = " in line:
            computations[current].append(line)
        elif line.startswith("}"):
            current = None
    if entry is None:
        raise ValueError("HLO text: no ENTRY computation")
    ops, seen, pending = [], set(), [entry]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in computations[name]:
            target, expression = line.split(" = ", 1)
            opcode = re.search(r"\s([a-z][a-z0-9\-]*)\(", expression)
            if opcode is None:
                raise ValueError(f"HLO text: no opcode in {line.strip()[:200]!r}")
            if opcode.group(1) not in _NO_WORK:
                ops.append(target.split()[-1].lstrip("%"))
            for single, several in _CONTROL_FLOW.findall(line):
                pending += [single] if single else [part.strip().lstrip("%") for part in several.split(",")]
            if opcode.group(1) == "call":
                pending += re.findall(r"\bto_apply=%?([\w.\-]+)", line)
    return ops


def trace_kernels(log_dir: pathlib.Path) -> tuple[list[dict[str, Any]], str]:
    """The kernel events of the one `jax.profiler` trace under `log_dir`, and what they are: a device's events
    (GPU/TPU kernels and copies) where the trace has a device, else XLA:CPU's thunks on the host (an event with an
    `hlo_op`; a while thunk's time includes its body's)."""
    paths = sorted(log_dir.glob("**/*.trace.json.gz"))
    if len(paths) != 1:
        raise ValueError(f"{log_dir}: expected one *.trace.json.gz from jax.profiler, found {len(paths)}")
    events = json.loads(gzip.decompress(paths[0].read_bytes()))["traceEvents"]
    processes = {event["pid"]: event["args"]["name"] for event in events
                 if event.get("ph") == "M" and event.get("name") == "process_name"}
    complete = [event for event in events if event.get("ph") == "X"]
    device = [event for event in complete if processes.get(event["pid"], "").startswith("/device:")]
    if device:
        return device, "device trace"
    return [event for event in complete if "hlo_op" in event.get("args", {})], "host trace: XLA:CPU thunks"


def top_kernels(events: Sequence[dict[str, Any]], top: int = TOP_KERNELS) -> list[dict[str, Any]]:
    """The `top` kernel names by total time: name, launches, total ms."""
    totals: dict[str, float] = defaultdict(float)
    counts = Counter(event["name"] for event in events)
    for event in events:
        totals[event["name"]] += event.get("dur", 0.0) / 1e3  # trace durations are in microseconds
    ranked = sorted(totals, key=lambda name: -totals[name])[:top]
    return [{"name": name, "count": counts[name], "total_ms": totals[name]} for name in ranked]


def profile_call(run: Callable[[], Any], compiled: Any) -> dict[str, Any]:
    """One call of `run` (warmed up already) under `jax.profiler`: kernels per call (from the trace's device events
    on an accelerator; on CPU, the compiled HLO's op count, `kernel_count_source` says which) and the top kernels."""
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory):
            jax.block_until_ready(run())
        events, source = trace_kernels(pathlib.Path(directory))
    on_device = source == "device trace"
    return {"kernels_per_call": len(events) if on_device else len(hlo_ops(compiled.as_text())),
            "kernel_count_source": "trace" if on_device else "hlo",
            "top_kernels": top_kernels(events), "top_kernels_source": source,
            "profiled_busy_ms": sum(event.get("dur", 0.0) for event in events) / 1e3 if on_device else None}
