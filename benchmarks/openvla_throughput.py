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

import numpy as np

from benchmarks.common import ReferenceWorker, time_alternately, write_report
from multinet_jax.models import load_model

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "openvla_reference"
WORKER = pathlib.Path(__file__).resolve().parent / "openvla_torch_worker.py"


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
    rows = []
    with ReferenceWorker([args.torch_python, str(WORKER), str(model_dir), str(io_path)]) as reference:
        for batch in (int(size) for size in args.batch_sizes.split(",")):
            batch_images = [images[i % count] for i in range(batch)]
            batch_instructions = [instructions[i % count] for i in range(batch)]
            row, ours_actions, reference_actions = time_alternately(
                lambda: model.predict_action(batch_images, batch_instructions, "bridge_orig"), reference, batch,
                rounds=args.rounds, unit="actions")
            row["same_actions"] = bool(np.array_equal(ours_actions, reference_actions))
            rows.append(row)
            print(json.dumps(row), flush=True)
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
