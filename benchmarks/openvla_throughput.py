"""OpenVLA actions/s: this project's batched Flax model vs OpenVLA's own PyTorch code, timed in alternation.

    .venv/bin/python -m benchmarks.openvla_throughput --torch_python=.venv-openvla-torch/bin/python

Both sides run the tiny OpenVLA of `../shared/openvla_reference/model` (openvla-7b's architecture and HF layout,
random weights) in float32 on the same CPU, on the fixture's four samples cycled to the batch size (three 224x224
images and one 256x320). The reference is OpenVLA's `predict_action` through transformers' `trust_remote_code`
(one sample per call: it does not batch), in a worker process of its own environment
(`benchmarks/openvla_torch_requirements.txt`). Per batch size: a warm-up call on each side (compiles ours), then
rounds that time ours and the reference's alternately; medians, their ratio, and whether both gave the same actions.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import time

import jax
import numpy as np

from benchmarks.common import write_report
from multinet_jax.models import load_model

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "openvla_reference"
WORKER = pathlib.Path(__file__).resolve().parent / "openvla_torch_worker.py"


class TorchReference:
    """OpenVLA's PyTorch code in its own process (see `openvla_torch_worker.py`)."""

    def __init__(self, python: str, model_dir: pathlib.Path, io_path: pathlib.Path):
        self.process = subprocess.Popen([python, str(WORKER), str(model_dir), str(io_path)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self.process.stdout.readline())

    def run(self, batch: int) -> tuple[float, np.ndarray]:
        self.process.stdin.write(json.dumps({"batch": batch}) + "\n")
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        return reply["seconds"], np.asarray(reply["actions"])

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--torch_python", required=True, help="python of the venv holding the PyTorch reference")
    parser.add_argument("--batch_sizes", default="1,16")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model_dir, io_path = SHARED / "model", SHARED / "io.npz"
    data = np.load(io_path)
    count = len(data["instructions"])
    images = [data[f"image_{i}"] for i in range(count)]
    instructions = [str(text) for text in data["instructions"]]

    model = load_model(model_dir)
    reference = TorchReference(args.torch_python, model_dir, io_path)
    rows = []
    try:
        for batch in (int(size) for size in args.batch_sizes.split(",")):
            batch_images = [images[i % count] for i in range(batch)]
            batch_instructions = [instructions[i % count] for i in range(batch)]
            ours_call = lambda: jax.block_until_ready(model.predict_action(batch_images, batch_instructions, "bridge_orig"))
            ours_actions = ours_call()  # warm-up: compiles this batch's shapes
            _, reference_actions = reference.run(batch)  # warm-up
            ours_seconds, reference_seconds = [], []
            for _ in range(args.rounds):
                start = time.perf_counter()
                ours_call()
                ours_seconds.append(time.perf_counter() - start)
                reference_seconds.append(reference.run(batch)[0])
            ours_median, reference_median = statistics.median(ours_seconds), statistics.median(reference_seconds)
            rows.append({
                "batch": batch,
                "ours_actions_per_s": batch / ours_median,
                "reference_actions_per_s": batch / reference_median,
                "speedup": reference_median / ours_median,
                "ours_median_s": ours_median,
                "reference_median_s": reference_median,
                "ours_seconds": ours_seconds,
                "reference_seconds": reference_seconds,
                "same_actions": bool(np.array_equal(ours_actions, reference_actions)),
            })
            print(json.dumps(rows[-1]), flush=True)
    finally:
        reference.close()
    write_report("openvla_throughput", {
        "what": "OpenVLA predict_action actions/s, tiny fixture model (../shared/openvla_reference/model), float32, "
                "ours batched vs OpenVLA's PyTorch code one sample per call, timed in alternation",
        "reference": {"implementation": "openvla/openvla trust_remote_code via transformers", **reference.info},
        "load_average": os.getloadavg(),
        "rounds": args.rounds,
        "results": rows,
    })


if __name__ == "__main__":
    main()
