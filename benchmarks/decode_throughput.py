"""Decode throughput: per-row stopping vs openpi's run-every-row-to-the-maximum, at batch 1, 8 and 32; and the cost
of openpi's exact decode window on MultiNet's one-camera Open-X inputs.

Run: `.venv/bin/python -m benchmarks.decode_throughput` (writes benchmarks/results/decode_throughput.json).

Model: the `pi0_fast_tiny` config (SigLIP width 48 x 2 layers, Gemma width 64 x 3 layers, vocab 1024), float32
(`--dtype=bfloat16`: parameters and computation in bf16; bf16 rounding breaks the counter, so no row stops early
and both modes run every step, which still times a step),
random parameters with the LLM rewired into a counter so that every row finishes at a chosen step: the embedding
puts token t (t < 256) on a circle at angle 2*pi*t/256, attention outputs are zero, and the first layer's MLP
rotates by one notch, so greedy decoding after token t emits t+1, t+2, ... (mod 256) whatever the context. A row
whose prompt ends with 256 - f therefore emits EOS (id 1) at step f. The network still does all of its work
(every weight is a dense array; zeros are multiplied like any other value), so the timings are those of a real
model of this size; only the outputs are controlled.

Scenarios: "text" (no images: every camera is masked and dropped, as for PIQA or BFCL; prefix = the 64-token
prompt) and "fast" (three 224x224 cameras + prompt: 832 prefix slots, as for Pi0-FAST actions). Prompts are
ragged (8..64 valid tokens); finish steps are uniform in `FINISH_RANGE`, within openpi's 256-step budget.
Both modes emit identical tokens (checked); the baseline keeps the loop running until `max_decoding_steps`, as
openpi does unless every row emits EOS at the same step. Useful tokens = each row's tokens up to its EOS.

Scenario "openx_one_camera" (MultiNet's Open-X layout: the first camera live, the other two masked in every row)
times per-row stopping both ways of `DecodeSettings.openpi_exact`: openpi's window reads the masked cameras' tokens,
so they are encoded (3 SigLIP passes per row), while the corrected masking drops them (1 pass).

Timings: AOT-compiled (`lower().compile()`), warmed up, fenced calls (`benchmarks.common.time_call`); the two
modes alternate call by call (5 rounds) so a shared machine's changing load hits both alike; medians and minima.
`ttft_ms` = the sampler with max_decoding_steps=1 (SigLIP + prefill + first token); `prefill_ms` = SigLIP +
prefill alone; `ms_per_step` = (total - ttft) / (loop steps - 1); `ms_per_step_differential` = the two modes'
time difference over their loop-step difference (same prefill, so it cancels: steadier on a loaded machine).
"""

from __future__ import annotations

import argparse
import functools
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import time_call, write_report
from multinet_jax.models import configs, decoding, init_params
from multinet_jax.models.pi0_fast import Pi0FastModel

BATCH_SIZES = (1, 8, 32)
MAX_DECODING_STEPS = 256  # openpi's default for Pi0-FAST
FINISH_RANGE = (4, 64)
PROMPT_LENGTHS = (8, 64)
PROMPT_SLOTS = 64
CYCLE = 256  # the counter's period; tokens >= CYCLE are never emitted
CAMERAS = ("base_0_rgb", "base_1_rgb", "wrist_0_rgb")
MODES = {"per_row_stopping": True, "baseline_run_to_max": False}


def counting_model(seed: int = 0, dtype: str = "float32") -> Pi0FastModel:
    """A tiny Pi0-FAST whose greedy output after token t is t+1 mod CYCLE (see the module docstring), its parameters
    and computation in `dtype`."""
    config = configs.get_config("pi0_fast_tiny", dtype=dtype)
    params = jax.tree.map(np.array, init_params(config, jax.random.key(seed)))
    llm = params["PaliGemma"]["llm"]
    angles = 2 * np.pi * np.arange(CYCLE) / CYCLE
    table = np.zeros_like(llm["embedder"]["input_embedding"])
    table[:CYCLE, 0], table[:CYCLE, 1], table[:CYCLE, 2] = 1.0, np.cos(angles), np.sin(angles)
    llm["embedder"]["input_embedding"] = table
    llm["layers"]["attn"]["attn_vec_einsum"]["w"][:] = 0
    for norm in (llm["final_norm"], llm["layers"]["pre_ffw_norm"]):
        norm["scale"][:] = 0
    gating, linear = llm["layers"]["mlp"]["gating_einsum"], llm["layers"]["mlp"]["linear"]
    gating[:], linear[:] = 0, 0
    step = 2 * np.pi / CYCLE
    # Layer 0: two hidden units gated open by the constant dimension 0, each reading a rotated (cos, sin) pair.
    gating[0, 0, 0, :2] = 4.0
    gating[0, 1, 1:3, 0] = np.cos(step), -np.sin(step)
    gating[0, 1, 1:3, 1] = np.sin(step), np.cos(step)
    linear[0, 0, 1] = linear[0, 1, 2] = 100.0  # dominate the residual (the un-rotated angle)
    return Pi0FastModel(config, jax.tree.map(lambda x: jnp.asarray(x, dtype), params), None)


def make_observation(finish: np.ndarray, with_images: bool, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Ragged random prompts whose last token makes row r emit EOS at step finish[r]."""
    batch = len(finish)
    lengths = rng.integers(PROMPT_LENGTHS[0], PROMPT_LENGTHS[1] + 1, batch)
    valid = np.arange(PROMPT_SLOTS) < lengths[:, None]
    prompt = np.where(valid, rng.integers(2, CYCLE, (batch, PROMPT_SLOTS)), 0).astype(np.int32)
    prompt[np.arange(batch), lengths - 1] = CYCLE - finish
    observation = {
        f"image/{camera}": rng.uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32) for camera in CAMERAS
    }
    observation |= {f"image_mask/{camera}": np.full(batch, with_images) for camera in CAMERAS}
    return observation | {
        "state": np.zeros((batch, 8), np.float32),
        "tokenized_prompt": prompt,
        "tokenized_prompt_mask": valid,
    }


def compile_prefill(model: Pi0FastModel, inputs: dict):
    """SigLIP + prefix embedding + the prefill pass alone, AOT-compiled."""
    settings = decoding.DecodeSettings(max_decoding_steps=MAX_DECODING_STEPS)
    prefill = functools.partial(decoding.prefill_observation, decoding.PaliGemma(model.config), settings)
    prefill_inputs = {key: value for key, value in inputs.items() if key not in ("sample_index", "rng")}
    compiled = jax.jit(prefill).lower(model.params, **prefill_inputs).compile()
    return lambda: compiled(model.params, **prefill_inputs)


def benchmark_batch(model: Pi0FastModel, batch: int, with_images: bool, rng: np.random.Generator) -> dict:
    finish = rng.integers(FINISH_RANGE[0], FINISH_RANGE[1] + 1, batch)
    inputs = decoding.decoder_inputs(model.config, make_observation(finish, with_images, rng), None, model.mesh)
    # Row r counts up from CYCLE - finish[r] + 1 and wraps to EOS (1) at step finish[r]; zeros after.
    step_index = np.arange(MAX_DECODING_STEPS)
    counted = (CYCLE - finish[:, None] + 1 + step_index) % CYCLE
    expected = np.where(step_index <= finish[:, None], counted, 0)
    useful_tokens = int((finish + 1).sum())

    def compile_sampler(steps: int, per_row_stopping: bool):
        settings = decoding.DecodeSettings(max_decoding_steps=steps, per_row_stopping=per_row_stopping)
        return compile_decoder(model, settings, inputs)

    ttft_s = time_call(compile_sampler(1, True), warmup=1, iters=5)["median_s"]
    prefill_s = time_call(compile_prefill(model, inputs), warmup=1, iters=5)["median_s"]
    result = {
        "batch": batch,
        "prefix_slots": len(inputs["images"]) * model.config.siglip.num_tokens + PROMPT_SLOTS,
        "finish_steps": {"min": int(finish.min()), "max": int(finish.max()), "mean": float(finish.mean())},
        "useful_tokens": useful_tokens,
        "ttft_ms": 1e3 * ttft_s,
        "prefill_ms": 1e3 * prefill_s,
    }
    samplers = {mode: compile_sampler(MAX_DECODING_STEPS, per_row) for mode, per_row in MODES.items()}
    seconds = interleaved_seconds(samplers, rounds=5)
    for mode, sample in samplers.items():
        tokens, steps = sample()
        median_s, best_s = statistics.median(seconds[mode]), min(seconds[mode])
        result[mode] = {
            "loop_steps": int(steps),
            "total_ms": 1e3 * median_s,
            "total_ms_min": 1e3 * best_s,
            "ms_per_step": 1e3 * (median_s - ttft_s) / max(int(steps) - 1, 1),
            "useful_tokens_per_s": useful_tokens / median_s,
            "useful_tokens_per_s_best": useful_tokens / best_s,
            "tokens_as_designed": bool(np.array_equal(np.asarray(tokens), expected)),
        }
    ours, baseline = result["per_row_stopping"], result["baseline_run_to_max"]
    result["speedup_useful_tokens_per_s"] = ours["useful_tokens_per_s"] / baseline["useful_tokens_per_s"]
    result["speedup_best"] = ours["useful_tokens_per_s_best"] / baseline["useful_tokens_per_s_best"]
    if baseline["loop_steps"] > ours["loop_steps"]:
        # Same prefill, different loop lengths: the difference isolates the cost of a decode step.
        extra_ms = baseline["total_ms"] - ours["total_ms"]
        result["ms_per_step_differential"] = extra_ms / (baseline["loop_steps"] - ours["loop_steps"])
    return result


def compile_decoder(model: Pi0FastModel, settings: decoding.DecodeSettings, inputs: dict):
    """The whole greedy sampler for `inputs`, AOT-compiled; returns a call that runs it."""
    sampling = decoding.Sampling.create()  # greedy, stop at EOS
    compiled = decoding.compiled_decoder(model.config, settings, model.mesh).lower(
        model.params, **inputs, sampling=sampling
    ).compile()
    return lambda: compiled(model.params, **inputs, sampling=sampling)


def benchmark_window(model: Pi0FastModel, batch: int, rng: np.random.Generator) -> dict:
    """MultiNet's one-camera Open-X layout, per-row stopping: openpi's exact window vs the corrected masking."""
    finish = rng.integers(FINISH_RANGE[0], FINISH_RANGE[1] + 1, batch)
    observation = make_observation(finish, True, rng)
    for camera in CAMERAS[1:]:
        observation[f"image_mask/{camera}"] = np.zeros(batch, bool)
    useful_tokens = int((finish + 1).sum())
    samplers, encoded = {}, {}
    for mode, exact in (("openpi_exact", True), ("corrected", False)):
        skip = not (exact and decoding.window_needs_masked_cameras(observation, batch))
        inputs = decoding.decoder_inputs(model.config, observation, None, model.mesh, skip_absent_cameras=skip)
        encoded[mode] = len(inputs["images"])
        samplers[mode] = compile_decoder(model, decoding.DecodeSettings(MAX_DECODING_STEPS, openpi_exact=exact), inputs)
    seconds = interleaved_seconds(samplers, rounds=5)
    result = {"batch": batch, "useful_tokens": useful_tokens}
    for mode in samplers:
        median_s = statistics.median(seconds[mode])
        result[mode] = {
            "encoded_cameras": encoded[mode],
            "total_ms": 1e3 * median_s,
            "total_ms_min": 1e3 * min(seconds[mode]),
            "useful_tokens_per_s": useful_tokens / median_s,
        }
    result["openpi_exact_time_over_corrected"] = result["openpi_exact"]["total_ms"] / result["corrected"]["total_ms"]
    return result


def interleaved_seconds(samplers: dict, rounds: int) -> dict[str, list[float]]:
    """Alternate the modes call by call, so a shared machine's changing load hits both alike."""
    for sample in samplers.values():
        time_call(sample, warmup=1, iters=1)
    seconds = {mode: [] for mode in samplers}
    for _ in range(rounds):
        for mode, sample in samplers.items():
            seconds[mode].append(time_call(sample, warmup=0, iters=1)["median_s"])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of " + ", ".join(SCENARIOS))
    parser.add_argument("--name", default="decode_throughput", help="results file benchmarks/results/<name>.json")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="parameters and compute")
    parser.add_argument("--batch_sizes", default=",".join(map(str, BATCH_SIZES)), help="comma-separated")
    args = parser.parse_args()
    model = counting_model(dtype=args.dtype)
    batch_sizes = [int(batch) for batch in args.batch_sizes.split(",")]
    rng = np.random.default_rng(0)
    scenarios = {name: [SCENARIOS[name](model, batch, rng) for batch in batch_sizes] for name in args.scenarios.split(",")}
    write_report(
        args.name,
        {
            "model": f"pi0_fast_tiny (SigLIP 48x2, Gemma 64x3, vocab 1024), {args.dtype}, LLM rewired as a counter",
            "max_decoding_steps": MAX_DECODING_STEPS,
            "finish_step_range": FINISH_RANGE,
            "prompt_lengths": PROMPT_LENGTHS,
            "scenarios": scenarios,
        },
    )


# name -> (model, batch, rng) -> one result row
SCENARIOS = {
    "text": lambda model, batch, rng: benchmark_batch(model, batch, False, rng),
    "fast": lambda model, batch, rng: benchmark_batch(model, batch, True, rng),
    "openx_one_camera": benchmark_window,
}


if __name__ == "__main__":
    main()
