"""Full-size Pi0 / Pi0.5 checkpoint load: wall time and peak host memory when restoring as bfloat16.

    .venv/bin/python -m benchmarks.pi0_load_memory [--config pi05_full] [--checkpoint_dir /tmp/multinet_jax_full_random]

Writes a random full-size model (Pi0: gemma_2b + gemma_300m + So400m, 3.24B parameters; Pi0.5: 3.35B, its action
expert's norms adaptive) once in openpi's checkpoint
layout, bfloat16 on disk (~6.5 GB). Each array is generated chunk by chunk into a memory-mapped scratch file, so
writing never holds the model in RAM. Then a fresh subprocess runs `load_model(dir, dtype="bfloat16")` and reports
its load time and peak RSS (VmHWM; goal: under 1.3x the bfloat16 parameter bytes). Needs ~13 GB of free disk
while writing (scratch + checkpoint), ~6.5 GB after; orbax's OCDBT writer buffers most of the model in host
memory until it commits, so writing peaks near 12 GB of RAM (measured); loading is what this benchmark measures.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import shutil
import tempfile
import time

import jax
import ml_dtypes
import numpy as np

from benchmarks.common import measure_load, write_report
from multinet_jax import weights
from multinet_jax.models import configs, param_shapes

CHUNK = 2**24  # values generated per step while writing the random arrays

def random_memmap(path: pathlib.Path, shape: tuple[int, ...], rng: np.random.Generator) -> np.memmap:
    """A bfloat16 array of normal(0, 0.02) values backed by `path`, written in chunks."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=ml_dtypes.bfloat16, shape=shape)
    flat = array.reshape(-1)
    for start in range(0, flat.size, CHUNK):
        stop = min(start + CHUNK, flat.size)
        flat[start:stop] = (0.02 * rng.standard_normal(stop - start, dtype=np.float32)).astype(ml_dtypes.bfloat16)
    array.flush()
    return array


def write_random_checkpoint(directory: pathlib.Path, config_name: str) -> float | None:
    """Write the random full-size checkpoint; returns seconds spent, or None when a finished one was reused."""
    done = directory / "WRITE_COMPLETE"
    if done.exists():
        return None
    shutil.rmtree(directory, ignore_errors=True)
    start = time.perf_counter()
    shapes = weights.flatten_params(param_shapes(configs.get_config(config_name)))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="pi0_scratch_", dir=directory.parent) as scratch:
        arrays = {
            path: random_memmap(pathlib.Path(scratch) / f"{index}.npy", tuple(spec.shape), rng)
            for index, (path, spec) in enumerate(sorted(shapes.items()))
        }
        weights.save_openpi_checkpoint(weights.unflatten_params(arrays), directory)
        del arrays
    done.write_text("ok\n")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="pi0_full", choices=["pi0_full", "pi05_full"])
    parser.add_argument("--checkpoint_dir", default=None, help="default: /tmp/multinet_jax_<config>_random")
    parser.add_argument("--keep", action="store_true", help="keep the written checkpoint afterwards")
    args = parser.parse_args()
    directory = pathlib.Path(args.checkpoint_dir or f"/tmp/multinet_jax_{args.config}_random")
    directory.parent.mkdir(parents=True, exist_ok=True)

    write_s = write_random_checkpoint(directory, args.config)
    shapes = jax.tree.leaves(param_shapes(configs.get_config(args.config)))
    num_params = sum(math.prod(s.shape) for s in shapes)
    write_report(
        "pi0_load_memory" if args.config == "pi0_full" else f"{args.config.removesuffix('_full')}_load_memory",
        {"model": args.config, "checkpoint_write_s": write_s, **measure_load(directory, num_params)},
    )
    if not args.keep:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
