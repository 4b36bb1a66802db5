"""Magma actions/s: this project's batched Flax model vs Magma's own PyTorch code, timed in alternation.

    .venv/bin/python -m benchmarks.magma_throughput --torch_python=.venv-magma-torch/bin/python --magma_src=<Magma checkout>

Both sides run the tiny Magma of `../shared/magma_reference` (Magma-8B's architecture and HF layout, random weights) in
float32 on the same CPU: SimplerEnv's step (the robot prompt, the fixture's 256x256 frame cut into a 2x2 crop grid,
8 greedy tokens with the KV cache, `output_ids[-8:-1]` decoded with the bridge_orig statistics) on the fixture's
robot sample repeated to the batch size. The reference is Magma's `MagmaProcessor` + `MagmaForCausalLM.generate`, one
sample per call (SimplerEnv's and MultiNet's scripts do not batch), in a worker process of its own environment
(`benchmarks/magma_torch_worker.py`, `benchmarks/magma_torch_requirements.txt`). Per batch size: a warm-up call on
each side (compiles ours), then rounds that time ours and the reference's alternately; medians, their ratio, and
whether both gave the fixture's actions.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import numpy as np

from benchmarks.common import ReferenceWorker, time_alternately, write_report
from multinet_jax.models import magma

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "magma_reference"
WORKER = pathlib.Path(__file__).resolve().parent / "magma_torch_worker.py"
ROBOT_TASK = "pick up the red block and put it in the blue bowl"  # the fixture's robot case (its README.json)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--torch_python", required=True, help="python of the venv holding the PyTorch reference")
    parser.add_argument("--magma_src", required=True, help="a microsoft/Magma checkout (its magma/ and tools/ folders)")
    parser.add_argument("--batch_sizes", default="1,16")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    checks = ((args.torch_python, pathlib.Path(args.torch_python), "--torch_python is not a file"),
              (args.magma_src, pathlib.Path(args.magma_src, "magma", "modeling_magma.py"),
               "--magma_src is not a Magma checkout (no magma/modeling_magma.py under it)"))
    for given, required, problem in checks:
        if not required.is_file():  # bad input: one line, exit 2
            print(f"error: {given}: {problem}", file=sys.stderr)
            raise SystemExit(2)
    expected = np.load(SHARED / "io.npz")["robot_actions_unnorm_bridge_orig"]
    image = np.load(SHARED / "io.npz")["robot_image_0_uint8"]

    model = magma.load(SHARED)
    rows = []
    with ReferenceWorker([args.torch_python, str(WORKER), args.magma_src, str(SHARED)]) as reference:
        for batch in (int(size) for size in args.batch_sizes.split(",")):
            row, ours_actions, reference_actions = time_alternately(
                lambda: model.predict_action([image] * batch, [ROBOT_TASK] * batch, "bridge_orig"), reference, batch,
                rounds=args.rounds, unit="actions")
            row["same_actions_as_fixture"] = bool(np.array_equal(ours_actions, np.broadcast_to(expected, ours_actions.shape))
                                                  and np.array_equal(reference_actions, ours_actions))
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_report("magma_throughput", {
        "what": "Magma SimplerEnv step actions/s, tiny fixture model (../shared/magma_reference), float32, ours batched "
                "vs Magma's PyTorch code one sample per call, timed in alternation",
        "reference": {"implementation": "microsoft/Magma e373780 magma/*.py via transformers 4.49.0", **reference.info},
        "load_average": os.getloadavg(),
        "rounds": args.rounds,
        "results": rows,
    })


if __name__ == "__main__":
    main()
