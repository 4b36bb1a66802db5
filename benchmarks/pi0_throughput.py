"""Pi0 / Pi0.5 flow-matching throughput: action chunks/s, prefix ms, ms per flow step, compiled memory, per batch.

    .venv/bin/python -m benchmarks.pi0_throughput                       # everything feasible on this machine
    .venv/bin/python -m benchmarks.pi0_throughput --configs pi0_tiny --batch_sizes 1,8 --iters 3
    .venv/bin/python -m benchmarks.pi0_throughput --configs pi05_dummy_gemma_so400m --batch_sizes 1,8 --dtype bfloat16

Cases: one live camera (MultiNet's Open-X setup: three camera slots, two masked for the whole batch) and three
live cameras. Each case runs our sampler and, in the same process, the openpi way of sampling: every camera slot
encoded (`skip_absent_cameras=False`) and openpi's numerics as XLA compiles them, i.e. bf16-output matmuls,
GELU rounded to bf16 after each elementwise op, a plain `nn.scan` over bf16 layer weights, and attention weights
normalized by the softmax before their product with the values (`openpi_numerics`; for float32 only the encoded
cameras and that normalization differ). The report gives the speed ratio and how far the actions differ.
Every function is AOT-compiled (`lower().compile()`) and warmed up; ours and the baseline are then timed call by
call in alternation, so a shared machine's changing load hits both alike; times are medians. Only ratios
measured within one run are reported: no figure from another day or machine enters the results.

Parameters are the random init plus `--perturb` x N(0, 1) on every leaf (0.3, as the golden fixtures do): openpi's
initializers leave Pi0.5's adaRMS gates at exactly zero, so unperturbed its action expert's blocks add nothing and
the two sides' actions would agree trivially. Where the time goes: `prefix_gflop` (matmul FLOPs counted on the
jaxpr, `benchmarks/flops.py`) over `prefix_ms` gives the prefix's achieved FLOP/s (SigLIP dominates it), reported
beside a square matmul's FLOP/s in the run's dtype measured in the same process (`matmul_peak`).

Real openpi (`--openpi_python` + `--openpi_src`): openpi's own model code (`src` of a clone of
github.com/Physical-Intelligence/openpi) under the interpreter of a venv holding openpi's pinned stack (jax 0.5.3,
flax 0.10.2, ...), in a worker process (`benchmarks/openpi_worker.py`). Each case hands it EXACTLY our parameters,
observation and noise through a temporary npz; it builds openpi's `Pi0Config` for the same sizes, AOT-compiles
`sample_actions` in the run's dtype and serves timed calls over a pipe, so ours, the openpi way and real openpi
are timed call by call in alternation (each idles while another runs). Results then gain `openpi` (its times,
prefix ms), `speedup_vs_openpi` and `relative_diff_vs_openpi` (actions, same noise).

    .venv/bin/python -m benchmarks.pi0_throughput --configs pi0_dummy_gemma_so400m --batch_sizes 8 --cameras 3 \
        --openpi_python=/path/to/openpi-venv/bin/python --openpi_src=/path/to/openpi/src
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import matmul_peak, time_call, write_report
from benchmarks.flops import count_flops
from multinet_jax.models import configs, init_params, numerics, vit
from multinet_jax.models.observation import OPENPI_CAMERAS, random_observation
from multinet_jax.models.pi0 import Pi0, Pi0Model, sample_actions_jit
from multinet_jax.weights.trees import flatten_params

NUM_STEPS = 10
GEMMA_SIZES = ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim")
WORKER = pathlib.Path(__file__).resolve().parent / "openpi_worker.py"
BASELINE_NOTE = (
    "openpi = openpi's own model code (--openpi_src) in its own venv (jax 0.5.3, flax 0.10.2), given our "
    "parameters, observation and noise, AOT-compiled in the run's dtype, timed in alternation with ours through a "
    "pipe (benchmarks/openpi_worker.py); openpi_way = this project's model traced with openpi's numerics and every "
    "camera slot encoded, timed in alternation with ours in the same process (a second baseline)"
)


def benchmark_params(config: configs.Pi0Config, perturb: float, seed: int = 0) -> Any:
    """Random init + `perturb` * N(0, 1) on every leaf (see the module docstring), in the config's dtype."""
    params = init_params(config, jax.random.key(seed))
    if not perturb:
        return params
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda leaf: (np.asarray(leaf, np.float32) + perturb * rng.standard_normal(leaf.shape, np.float32)).astype(leaf.dtype),
        params,
    )


def _prefix(module, params, images, image_masks, tokens, token_mask, state):
    del state  # the suffix's input; taken so every function accepts the same prepared inputs
    variables = {"params": params}
    prefix, mask = module.apply(variables, images, image_masks, tokens, token_mask, method=Pi0.embed_prefix)
    return module.apply(variables, prefix, mask, method=Pi0.fill_prefix_cache), mask


def _flow_step(module, params, kv_cache, prefix_mask, state, noisy_actions):
    times = jnp.ones(state.shape[:1], jnp.float32)
    return module.apply({"params": params}, kv_cache, prefix_mask, state, noisy_actions, times, method=Pi0.velocity)


def _openpi_scan(block: type[nn.Module], *, length: int, initializing: bool, **scan_kwargs: Any) -> type[nn.Module]:
    del initializing  # a plain scan needs no variable mapping
    return nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True}, length=length, **scan_kwargs)


def _bf16_output_einsum(equation: str, lhs: jax.Array, rhs: jax.Array) -> jax.Array:
    return jnp.einsum(equation, lhs, rhs)


def _normalized_softmax_attend(logits: jax.Array, values: jax.Array) -> jax.Array:
    probs = jax.nn.softmax(logits, axis=-1).astype(values.dtype)
    return jnp.einsum("...qs,...sh->...qh", probs, values)


@contextlib.contextmanager
def openpi_numerics() -> Iterator[None]:
    """Trace with openpi's way of writing the same math: `jnp.einsum` / `lax.dot_general` in the operands' dtype,
    `nn.gelu` in the activation dtype, `nn.scan` over the stacked weights, and attention weights normalized by the
    softmax before the product with the values. Only tracing is affected: clear
    JAX's caches around it so neither side reuses the other's trace."""
    jax.clear_caches()
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(numerics, "einsum", _bf16_output_einsum))
        stack.enter_context(mock.patch.object(numerics, "dot_general", jax.lax.dot_general))
        stack.enter_context(mock.patch.object(numerics, "gelu", lambda x, approximate=True: nn.gelu(x, approximate=approximate)))
        stack.enter_context(mock.patch.object(numerics, "scan_layers", _openpi_scan))
        stack.enter_context(mock.patch.object(numerics, "attend", _normalized_softmax_attend))
        stack.enter_context(mock.patch.dict(vit._DENSE_OPTIONS, dot_general=jax.lax.dot_general))
        yield
    jax.clear_caches()


def _compile(fn, *args, **kwargs) -> tuple[Any, float]:
    start = time.perf_counter()
    compiled = fn.lower(*args, **kwargs).compile()
    return compiled, time.perf_counter() - start


def _memory_bytes(compiled) -> int | None:
    """XLA's planned bytes for arguments + outputs + temporaries of one call (the peak it needs)."""
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes)


class Sampler:
    """One way of sampling a case, compiled: the whole sampler plus its prefix and one flow step for the breakdown."""

    def __init__(self, model: Pi0Model, observation: dict[str, Any], *, openpi_way: bool):
        with openpi_numerics() if openpi_way else contextlib.nullcontext():
            self.inputs = model.prepare_inputs(observation, skip_absent_cameras=not openpi_way)
            self.noise = model.make_noise(observation, jax.random.key(0))
            self.params, self.steps = model.params, jnp.int32(NUM_STEPS)
            self.sample, self.compile_s = _compile(
                sample_actions_jit, model.module, self.params, noise=self.noise, num_steps=self.steps, **self.inputs
            )
            self.prefix, _ = _compile(jax.jit(_prefix, static_argnums=0), model.module, self.params, **self.inputs)
            self.prefix_flops = count_flops(functools.partial(_prefix, model.module), self.params, **self.inputs)
            self.kv_cache, self.prefix_mask = self.prefix(self.params, **self.inputs)
            self.step, _ = _compile(
                jax.jit(_flow_step, static_argnums=0),
                model.module,
                self.params,
                self.kv_cache,
                self.prefix_mask,
                self.inputs["state"],
                self.noise,
            )

    def timed(self) -> tuple[float, np.ndarray]:
        """One fenced call: wall seconds and the actions."""
        start = time.perf_counter()
        actions = jax.block_until_ready(self.sample(self.params, noise=self.noise, num_steps=self.steps, **self.inputs))
        return time.perf_counter() - start, np.asarray(actions, np.float32)

    def report(self, seconds: list[float], batch: int, args: argparse.Namespace) -> dict[str, Any]:
        prefix_t = time_call(lambda: self.prefix(self.params, **self.inputs), warmup=0, iters=args.breakdown_iters)
        step_args = (self.params, self.kv_cache, self.prefix_mask, self.inputs["state"], self.noise)
        step_t = time_call(lambda: self.step(*step_args), warmup=1, iters=args.iters)
        return {
            "encoded_cameras": len(self.inputs["images"]),
            "sample_s": statistics.median(seconds),
            "sample_min_s": min(seconds),
            "chunks_per_s": batch / statistics.median(seconds),
            "prefix_ms": 1e3 * prefix_t["median_s"],
            "prefix_gflop": self.prefix_flops / 1e9,
            "prefix_gflop_per_s": self.prefix_flops / 1e9 / prefix_t["median_s"],
            "ms_per_flow_step": 1e3 * step_t["median_s"],
            "compile_s": self.compile_s,
            "compiled_peak_bytes": _memory_bytes(self.sample),
            "iters": len(seconds),
        }


class OpenpiReference:
    """Real openpi in its own process (`openpi_worker.py serve`), loaded with this case's parameters and inputs."""

    def __init__(self, args: argparse.Namespace, model: Pi0Model, observation: dict[str, Any], noise: jax.Array):
        config = model.config
        spec = {
            "paligemma": {key: getattr(config.paligemma, key) for key in GEMMA_SIZES},
            "action_expert": {key: getattr(config.action_expert, key) for key in GEMMA_SIZES},
            "siglip": {"width": config.siglip.width, "depth": config.siglip.depth, "mlp_dim": config.siglip.mlp_dim,
                       "num_heads": config.siglip.num_heads, "patch_size": (config.siglip.patch_size,) * 2},
            "vocab_size": config.vocab_size,
            "action_dim": config.action_dim,
            "action_horizon": config.action_horizon,
            "max_token_len": config.max_token_len,
            "pi05": config.pi05,
            "dtype": config.dtype,
            "num_steps": NUM_STEPS,
        }
        arrays = {f"params/{path}": np.asarray(leaf, np.float32) for path, leaf in flatten_params(model.params).items()}
        arrays.update({f"obs/{key}": np.asarray(value) for key, value in observation.items()})
        with tempfile.TemporaryDirectory() as folder:
            case = pathlib.Path(folder) / "case.npz"
            np.savez(case, spec=json.dumps(spec), noise=np.asarray(noise, np.float32), **arrays)
            del arrays
            self.process = subprocess.Popen(
                [args.openpi_python, str(WORKER), "serve", f"--openpi_src={args.openpi_src}", f"--case={case}"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            self.info = self._reply()

    def _reply(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            errors = [row for row in self.process.stderr.read().splitlines() if row.startswith("error: ")]
            raise SystemExit(errors[-1] if errors else f"error: {WORKER.name} ended without an answer")
        return json.loads(line)

    def _ask(self, op: str) -> dict[str, Any]:
        self.process.stdin.write(json.dumps({"op": op}) + "\n")
        self.process.stdin.flush()
        return self._reply()

    def timed(self) -> tuple[float, np.ndarray]:
        """One call timed inside the worker (excludes the pipe): seconds and the actions."""
        reply = self._ask("sample")
        return reply["seconds"], np.asarray(reply["actions"], np.float32)

    def report(self, seconds: list[float], batch: int, args: argparse.Namespace) -> dict[str, Any]:
        prefix_s = [self._ask("prefix")["seconds"] for _ in range(args.breakdown_iters)]
        return {
            "sample_s": statistics.median(seconds),
            "sample_min_s": min(seconds),
            "chunks_per_s": batch / statistics.median(seconds),
            "prefix_ms": 1e3 * statistics.median(prefix_s),
            "compile_s": self.info["compile_s"],
            "iters": len(seconds),
            "jax": self.info["jax"],
            "injected_sizes": self.info["injected"],
        }

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=120)


def run_case(model: Pi0Model, batch: int, live: int, args: argparse.Namespace) -> dict[str, Any]:
    observation = random_observation(model.config, batch, live)
    ours = Sampler(model, observation, openpi_way=False)
    samplers: dict[str, Any] = {"ours": ours}
    if not args.skip_baseline:
        samplers["openpi_way"] = Sampler(model, observation, openpi_way=True)
    if args.openpi_src:
        samplers["openpi"] = OpenpiReference(args, model, observation, ours.noise)
    try:
        seconds: dict[str, list[float]] = {name: [] for name in samplers}
        actions: dict[str, np.ndarray] = {}
        for round_index in range(args.warmup + args.iters):
            for name, sampler in samplers.items():
                elapsed, actions[name] = sampler.timed()
                if round_index >= args.warmup:
                    seconds[name].append(elapsed)
        result: dict[str, Any] = {"batch": batch, "live_cameras": live}
        result.update({name: sampler.report(seconds[name], batch, args) for name, sampler in samplers.items()})
    finally:
        if "openpi" in samplers:
            samplers["openpi"].close()
    for baseline in ("openpi_way", "openpi"):
        if baseline in samplers:
            difference = float(np.abs(actions["ours"] - actions[baseline]).max())
            result[f"max_abs_diff_vs_{baseline}"] = difference
            result[f"relative_diff_vs_{baseline}"] = difference / float(np.abs(actions[baseline]).max())
            result[f"speedup_vs_{baseline}"] = result[baseline]["sample_s"] / result["ours"]["sample_s"]
    if {"openpi_way", "openpi"} <= samplers.keys():
        difference = float(np.abs(actions["openpi_way"] - actions["openpi"]).max())
        result["relative_diff_openpi_way_vs_openpi"] = difference / float(np.abs(actions["openpi"]).max())
    print(result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="pi0_tiny,pi0_dummy_gemma_so400m")
    parser.add_argument("--batch_sizes", default="1,8,32")
    parser.add_argument("--cameras", default="1,3", help="live camera counts to measure")
    parser.add_argument("--max_images", type=int, default=96, help="skip cases encoding more images per call")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds after AOT compilation")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--breakdown_iters", type=int, default=1, help="timed calls of the prefix alone")
    parser.add_argument("--skip_baseline", action="store_true")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--name", default="pi0_throughput")
    parser.add_argument("--perturb", type=float, default=0.3, help="add this x N(0, 1) to every parameter (0: the plain init)")
    parser.add_argument("--peak_matmul", type=int, default=2048, help="size of the square matmul whose FLOP/s is reported")
    parser.add_argument("--openpi_src", help="src folder of a clone of github.com/Physical-Intelligence/openpi: time real openpi too")
    parser.add_argument("--openpi_python", default=sys.executable, help="python of the venv holding openpi's pinned stack")
    args = parser.parse_args()
    if args.openpi_src and not (pathlib.Path(args.openpi_src) / "openpi" / "models" / "pi0.py").is_file():
        parser.exit(2, f"error: {args.openpi_src}: --openpi_src is not openpi's src folder (no openpi/models/pi0.py under it)\n")
    if args.openpi_src and not pathlib.Path(args.openpi_python).is_file():
        parser.exit(2, f"error: {args.openpi_python}: --openpi_python is not a file\n")

    peak = matmul_peak(args.peak_matmul, args.iters, args.dtype)
    results, skipped = [], []
    cases = [(name, live, batch) for name in args.configs.split(",") for live in (int(c) for c in args.cameras.split(","))
             for batch in (int(b) for b in args.batch_sizes.split(","))]
    models: dict[str, Pi0Model] = {}
    for index, (name, live, batch) in enumerate(cases):
        if batch * len(OPENPI_CAMERAS) > args.max_images:
            skipped.append({"config": name, "batch": batch, "live_cameras": live, "why": "over --max_images"})
        else:
            if name not in models:
                config = configs.get_config(name, dtype=args.dtype)
                models = {name: Pi0Model(config, benchmark_params(config, args.perturb), norm_stats=None)}
            results.append({"config": name, **run_case(models[name], batch, live, args)})
        # Written after every case, so an interrupted run keeps what it measured (`complete` says whether it ended).
        write_report(
            args.name,
            {
                "num_steps": NUM_STEPS,
                "dtype": args.dtype,
                "perturb": args.perturb,
                "matmul_peak": peak,
                "complete": index == len(cases) - 1,
                "results": results,
                "skipped": skipped,
                "process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "baseline_note": BASELINE_NOTE,
            },
        )

if __name__ == "__main__":
    main()
