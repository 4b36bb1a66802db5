"""Decode steps over stacked layer weights (the layer scan, `numerics.scan_layers`, what the models run) against
unstacked per-layer weights (a Python loop over layers, each layer's weights separate arrays split once before the
call, as a loader would): issue 22 asks to choose between them by measurement.

Run: `.venv/bin/python -m benchmarks.layer_layout` (writes benchmarks/results/layer_layout.json).

What is timed: `STEPS` decode steps of the bf16 `gemma.Gemma` decoder in one compiled call (a `fori_loop`), each
step one token per row written into a preallocated KV cache of `PREFIX` + `STEPS` slots (kept as uint16 bits, as
`decoding` keeps it) and attending over all of it, the step's output fed back as the next input. Both layouts run
the same `gemma.Block` with the same weights; the stacked one through `Gemma.__call__` (the layer scan), the
unstacked one calls `Block` once per layer with that layer's weights and its static index into the cache stack.
Decoders: Pi0-FAST's Gemma shape (one KV head) and OpenVLA's Llama shape (as many KV heads as heads, SiLU), each
at the suite's tiny size and a small size whose weights (~50 MB) outgrow the CPU's caches; random weights.
Timings: AOT-compiled, warmed up, fenced (`benchmarks.common.time_call`), the two layouts alternating call by call
(`decode_throughput.interleaved_seconds`); medians and minima; ms per step = call time / `STEPS`. Outputs of the two
layouts are compared (`max_abs_diff`).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import write_report
from benchmarks.decode_throughput import interleaved_seconds
from multinet_jax.models import numerics
from multinet_jax.models.configs import GemmaConfig
from multinet_jax.models.gemma import Block, Gemma, RMSNorm

PREFIX = 256
STEPS = 32
VOCAB = 1024
BATCH_SIZES = (1, 8)
# name -> the decoder's config (Gemma's switches or Llama's, as the families set them)
DECODERS = {
    "pi0_fast_tiny": GemmaConfig(width=64, depth=3, mlp_dim=128, num_heads=4, num_kv_heads=1, head_dim=16),
    "pi0_fast_small": GemmaConfig(width=512, depth=8, mlp_dim=2048, num_heads=8, num_kv_heads=1, head_dim=64),
    "openvla_tiny": dataclasses.replace(
        GemmaConfig(width=64, depth=3, mlp_dim=128, num_heads=4, num_kv_heads=4, head_dim=16),
        activation="silu", norm_offset=False, scale_embedding=False),
    "openvla_small": dataclasses.replace(
        GemmaConfig(width=512, depth=8, mlp_dim=1536, num_heads=8, num_kv_heads=8, head_dim=64),
        activation="silu", norm_offset=False, scale_embedding=False),
}


def decode_calls(config: GemmaConfig, batch: int) -> tuple[dict, int]:
    """{layout: a call running `STEPS` decode steps} for both layouts on the same weights, and the weights' bytes."""
    model = Gemma((config,), VOCAB, "bfloat16")
    params = model.init(jax.random.key(0), method=Gemma.init_all)["params"]
    params = jax.tree.map(lambda x: (x * 0.05).astype(jnp.bfloat16), params)
    layers = [jax.tree.map(lambda stack, i=i: stack[i], params["layers"]) for i in range(config.depth)]  # at load
    slots = PREFIX + STEPS
    rng = np.random.default_rng(0)
    cache_shape = (config.depth, batch, slots, config.num_kv_heads, config.head_dim)
    cache = tuple(numerics.bfloat16_as_bits(jnp.asarray(rng.normal(size=cache_shape), jnp.bfloat16)) for _ in "kv")
    x0 = jnp.asarray(rng.normal(size=(batch, 1, config.width)), jnp.bfloat16)
    mask = jnp.ones((batch, 1, slots), bool)
    block = Block((config,), (False,))
    final_norm = RMSNorm(config.norm_eps, config.norm_offset)

    def stacked_step(params, x, cache, index):
        positions = jnp.full((batch, 1), index, jnp.int32)
        (x,), cache = model.apply({"params": params}, [x], positions, mask, kv_cache=cache, cache_write_index=index)
        return x, cache

    def unstacked_step(weights, x, cache, index):
        layers, norm = weights
        positions = jnp.full((batch, 1), index, jnp.int32)
        xs = [x]
        for i, layer in enumerate(layers):
            (xs, cache), _ = block.apply({"params": layer}, (xs, cache), jnp.int32(i), positions, mask, index, [None])
        return final_norm.apply({"params": norm}, xs[0]), cache

    def run(step):
        def steps(weights, x, cache):
            body = lambda i, carry: step(weights, carry[0], carry[1], PREFIX + i)
            return jax.lax.fori_loop(0, STEPS, body, (x, cache))
        return jax.jit(steps)

    weights = {"stacked": params, "unstacked": (layers, params["final_norm"])}
    calls = {}
    for layout, step in (("stacked", stacked_step), ("unstacked", unstacked_step)):
        compiled = run(step).lower(weights[layout], x0, cache).compile()
        # The cache is not donated: each call copies it into the loop once, the same for both layouts.
        calls[layout] = lambda compiled=compiled, w=weights[layout]: compiled(w, x0, cache)
    num_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(params["layers"]))
    return calls, num_bytes


def benchmark(name: str, batch: int, rounds: int) -> dict:
    calls, num_bytes = decode_calls(DECODERS[name], batch)
    outputs = {layout: np.asarray(call()[0], np.float32) for layout, call in calls.items()}
    seconds = interleaved_seconds(calls, rounds=rounds)
    result = {"decoder": name, "batch": batch, "layer_weight_bytes": num_bytes,
              "max_abs_diff": float(np.max(np.abs(outputs["stacked"] - outputs["unstacked"])))}
    for layout, times in seconds.items():
        result[layout] = {"ms_per_step": 1e3 * statistics.median(times) / STEPS,
                          "ms_per_step_min": 1e3 * min(times) / STEPS}
    result["stacked_over_unstacked"] = result["stacked"]["ms_per_step"] / result["unstacked"]["ms_per_step"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoders", default=",".join(DECODERS), help="comma-separated subset of " + ", ".join(DECODERS))
    parser.add_argument("--batch_sizes", default=",".join(map(str, BATCH_SIZES)), help="comma-separated")
    parser.add_argument("--rounds", type=int, default=7, help="alternating calls per layout")
    args = parser.parse_args()
    rows = [benchmark(name, int(batch), args.rounds) for name in args.decoders.split(",")
            for batch in args.batch_sizes.split(",")]
    write_report("layer_layout", {"prefix_slots": PREFIX, "steps_per_call": STEPS, "dtype": "bfloat16", "cases": rows})


if __name__ == "__main__":
    main()
