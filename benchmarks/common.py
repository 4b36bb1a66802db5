"""Shared benchmark plumbing: machine description, median timing with fences, JSON reports.

Every benchmark warms up (so compilation is excluded), fences each call with
`jax.block_until_ready`, and reports medians with the machine it ran on.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

REPORT_DIR = pathlib.Path(__file__).resolve().parent / "results"
REPO_ROOT = REPORT_DIR.parents[1]
# The distributions whose versions a report records (besides any JAX PJRT plugin): what a figure depends on.
RECORDED_PACKAGES = ("jax", "jaxlib", "flax", "orbax-checkpoint", "numpy")
# JAX's accelerator plugins (jax-cuda12-plugin, jax-cuda12-pjrt, jax-rocm*-plugin, libtpu): the kernels that ran.
JAX_PLUGIN = re.compile(r"jax-.*-(plugin|pjrt)|libtpu.*")


def data_label(path: str | os.PathLike, role: str) -> str:
    """How results name data: its path relative to the repo (`../shared/...` included) or, for data outside it
    (a temporary folder), its role; never an absolute path of the machine that ran the benchmark."""
    relative = os.path.relpath(pathlib.Path(path).resolve(), REPO_ROOT)
    return relative if not relative.startswith(os.path.join("..", "..")) else role


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, core count, accelerator, library versions, source revision."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    devices = jax.devices()
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(),
        "devices": f"{len(devices)} x {devices[0].device_kind}",
        "load_average_1_5_15_min": os.getloadavg(),  # other jobs sharing the machine when the report was written
        "jax": jax.__version__,
        "python": platform.python_version(),
        "packages": package_versions(),
        "source": source_revision(),
    }


def package_versions() -> dict[str, str | None]:
    """Installed versions (`importlib.metadata`) of `RECORDED_PACKAGES` (None: not installed) and of every JAX
    plugin present, so a figure can be reproduced with the same jaxlib and kernels."""
    installed = {}
    for distribution in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", distribution.metadata["Name"] or "").lower()  # PEP 503's normalized name
        installed.setdefault(name, distribution.version)
    plugins = sorted(name for name in installed if JAX_PLUGIN.fullmatch(name))
    return {name: installed.get(name) for name in (*RECORDED_PACKAGES, *plugins)}


def source_revision(root: pathlib.Path = REPO_ROOT) -> dict[str, Any] | None:
    """The code the figures came from: `git rev-parse HEAD` and whether tracked files differ from it (`dirty`). None
    where `root` is not the top of a git checkout (an unpacked copy, or one inside another repository) or git is
    missing: a report is never lost for want of it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=60).stdout.strip()

    try:
        if pathlib.Path(git("rev-parse", "--show-toplevel")).resolve() != pathlib.Path(root).resolve():
            return None
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def time_call(fn: Callable[[], Any], *, warmup: int = 1, iters: int = 5) -> dict[str, float]:
    """Median/min/max wall seconds of `fn()`, each call fenced by `jax.block_until_ready`."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    seconds = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        seconds.append(time.perf_counter() - start)
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds), "iters": iters}


class ReferenceWorker:
    """A reference implementation in a process of its own environment (its torch, its code), speaking JSON lines: it
    first prints one line describing itself, then answers each `{"batch": n}` with `{"seconds", "actions"}`, the
    seconds timed inside the worker around its own call."""

    def __init__(self, argv: Sequence[str], *, close_timeout_s: float = 60):
        self.name, self.close_timeout_s = pathlib.Path(argv[1]).name, close_timeout_s
        self.process = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._reply()

    def _reply(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: the reference worker exited (code {self.process.wait()}) without a reply; "
                               "its stderr above says why")
        return json.loads(line)

    def run(self, batch: int) -> tuple[float, np.ndarray]:
        """One reference call on `batch` samples: (its seconds, its actions)."""
        self.process.stdin.write(json.dumps({"batch": batch}) + "\n")
        self.process.stdin.flush()
        reply = self._reply()
        return reply["seconds"], np.asarray(reply["actions"])

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=self.close_timeout_s)

    def __enter__(self) -> "ReferenceWorker":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def time_alternately(ours: Callable[[], Any], reference: ReferenceWorker, batch: int, *, rounds: int,
                     unit: str) -> tuple[dict[str, Any], Any, np.ndarray]:
    """Ours (fenced) against the reference on one batch: a warm-up call each (compiles ours), then `rounds` rounds
    timing one call of each in turn, so both sides see the same machine load. Returns the row (medians, `unit`s per
    second, their ratio `speedup`, every timing) and the warm-up outputs of ours and the reference."""
    ours_output = jax.block_until_ready(ours())
    _, reference_output = reference.run(batch)
    ours_seconds, reference_seconds = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        jax.block_until_ready(ours())
        ours_seconds.append(time.perf_counter() - start)
        reference_seconds.append(reference.run(batch)[0])
    ours_median, reference_median = statistics.median(ours_seconds), statistics.median(reference_seconds)
    row = {"batch": batch, f"ours_{unit}_per_s": batch / ours_median, f"reference_{unit}_per_s": batch / reference_median,
           "speedup": reference_median / ours_median, "ours_median_s": ours_median, "reference_median_s": reference_median,
           "ours_seconds": ours_seconds, "reference_seconds": reference_seconds}
    return row, ours_output, reference_output


def write_json(path: pathlib.Path, report: dict[str, Any]) -> None:
    """Write `report` to `path` atomically (a temporary file in the same folder, then a rename), so a run killed
    while writing leaves the previous complete file, never a truncated one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(temporary, path)


def write_report(name: str, results: dict[str, Any]) -> pathlib.Path:
    """Write `benchmarks/results/<name>.json` with the machine description and print it."""
    report = {"benchmark": name, "machine": machine_info(), **results}
    path = REPORT_DIR / f"{name}.json"
    write_json(path, report)
    print(json.dumps(report, indent=2, default=str))
    return path


_MEASURE_LOAD = """
import json, sys, time

def status_bytes(field):
    # /proc's VmHWM/VmRSS belong to this process image (getrusage's maxrss would include the parent's at fork).
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

import jax
from multinet_jax.models import load_model
rss_before = status_bytes("VmRSS")
start = time.perf_counter()
model = load_model(sys.argv[1], dtype="bfloat16")
jax.block_until_ready(model.params)
seconds = time.perf_counter() - start
leaves = jax.tree.leaves(model.params)
json.dump({
    "load_s": seconds,
    "peak_rss_bytes": status_bytes("VmHWM"),
    "rss_before_load_bytes": rss_before,
    "rss_after_load_bytes": status_bytes("VmRSS"),
    "loaded_param_bytes": sum(leaf.nbytes for leaf in leaves),
    "loaded_dtypes": sorted({str(leaf.dtype) for leaf in leaves}),
    "config": repr(model.config),
}, sys.stdout)
"""


def measure_load(checkpoint: pathlib.Path, num_params: int) -> dict[str, Any]:
    """`load_model(checkpoint, dtype="bfloat16")` in a fresh process: load seconds and peak RSS (VmHWM), also as a
    multiple of the parameters' bfloat16 bytes (the goal: under 1.3x)."""
    completed = subprocess.run([sys.executable, "-c", _MEASURE_LOAD, str(checkpoint)], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"load subprocess failed:\n{completed.stderr[-4000:]}")
    measured = json.loads(completed.stdout)
    bf16_bytes = 2 * num_params
    return {"num_params": num_params, "bf16_param_bytes": bf16_bytes, **measured,
            "peak_rss_over_bf16_bytes": measured["peak_rss_bytes"] / bf16_bytes, "goal_peak_rss_over_bf16_bytes": 1.3}


def matmul_peak(size: int, iters: int, dtype: str) -> dict[str, Any]:
    """`[n, n] @ [n, n]` FLOP/s in `dtype`, AOT-compiled and fenced: the denominator of MFU and of how close a
    model's matmuls run to what this device does at best."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (size, size), dtype)
    b = jax.random.normal(key_b, (size, size), dtype)
    matmul = jax.jit(jnp.matmul).lower(a, b).compile()
    timing = time_call(lambda: matmul(a, b), warmup=2, iters=max(iters, 5))
    return {"matmul_size": size, "dtype": dtype, "median_s": timing["median_s"], "flops_per_s": 2 * size**3 / timing["median_s"]}


def copy_bandwidth(num_bytes: int, iters: int) -> dict[str, Any]:
    """Device memory bandwidth (bytes/s) of copying a `num_bytes` array, each byte read once and written once,
    AOT-compiled and fenced: the denominator of MBU (memory-bound decode steps read every weight once per step)."""
    source = jnp.arange(num_bytes // 4, dtype=jnp.uint32)
    copy = jax.jit(lambda x: x + jnp.uint32(1)).lower(source).compile()  # `x + 1`: XLA may not elide it as a copy
    timing = time_call(lambda: copy(source), warmup=2, iters=max(iters, 5))
    moved = 2 * source.nbytes
    return {"copy_bytes": source.nbytes, "median_s": timing["median_s"], "bytes_per_s": moved / timing["median_s"]}
