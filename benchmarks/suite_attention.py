"""`auto` attention takes the fast path only where it wins: each attention call shape of a case timed both ways.

On the first H200 run the cuDNN path moved whole-model times by 0.78-1.06x and made Pi0 at batch 1 slower. So before
a case is compiled under `auto`, `benchmarks.suite` traces it once, and for every distinct attention call that the
fast path can take (its query and KV shapes, batch included, and dtype) times `gemma.grouped_attention` at that
shape under the reference and under the fast path, AOT-compiled, warmed up and fenced; the case is then compiled
with the faster of the two per shape (`attention.choices`, a per-shape table passed to the trace) and records both
times and the choice. Per shape, `auto` is then never slower than the reference, by construction.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import time_call
from multinet_jax.models import attention, gemma


def time_both(call: dict[str, Any], iters: int) -> dict[str, float]:
    """Median ms of one attention call shape (`attention.recording()`'s `q`, `kv`, `dtype`) under the reference and
    under the current mode's fast path, with an all-true boolean mask as the models pass one."""
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal(call["q"]) * call["q"][-1] ** -0.5, call["dtype"])
    k, v = (jnp.asarray(rng.standard_normal(call["kv"]), call["dtype"]) for _ in range(2))
    mask = jnp.ones((call["q"][0], call["q"][1], call["kv"][1]), bool)
    times = {}
    for name, mode in (("reference_ms", "reference"), ("fast_ms", attention.current_mode())):
        with attention.mode(mode):
            compiled = jax.jit(gemma.grouped_attention).lower(q, k, v, mask).compile()
        times[name] = 1e3 * time_call(lambda: compiled(q, k, v, mask), warmup=1, iters=iters)["median_s"]
    return times


def select(calls: list[dict[str, Any]], iters: int) -> tuple[dict[attention.ShapeKey, str], list[dict[str, Any]]]:
    """The per-shape table (`attention.choices`) of the faster implementation for each of `calls` (distinct
    recorded attention calls) that took the fast path, and the measurements behind it."""
    table, measured = {}, []
    for call in calls:
        if call["implementation"] == "reference":  # the fast path cannot take it: nothing to choose
            continue
        key = attention.shape_key(call["q"], call["kv"], call["dtype"])
        if key in table:
            continue
        times = time_both(call, iters)
        table[key] = "reference" if times["reference_ms"] < times["fast_ms"] else call["implementation"]
        measured.append({"q": call["q"], "kv": call["kv"], "dtype": call["dtype"], "fast": call["implementation"],
                         **times, "chosen": table[key]})
    return table, measured
