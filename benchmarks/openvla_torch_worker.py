"""The PyTorch reference side of `benchmarks/openvla_throughput.py`: OpenVLA's own code, one sample at a time.

Runs in its own environment (see `benchmarks/openvla_torch_requirements.txt`: transformers 4.40.1 pins
tokenizers < 0.20, which the project's FAST tokenizer cannot use), so the benchmark starts it as a subprocess and
talks JSON lines over stdin/stdout: `{"batch": n}` -> `{"seconds": ..., "actions": [[...], ...]}`, timing n
`predict_action` calls (OpenVLA does not batch) on the first n of the fixture's samples, cycled.

    <torch venv>/bin/python benchmarks/openvla_torch_worker.py <model dir> <io.npz>
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import timm
import torch
from PIL import Image
from transformers import AutoModelForVision2Seq, AutoProcessor


def _with_tiny_overrides(model_dir: str):
    """`timm.create_model` with the fixture config's `tiny_timm_overrides` merged in (its README's loading rule)."""
    overrides = json.load(open(f"{model_dir}/config.json")).get("tiny_timm_overrides", {})
    create = timm.create_model

    def create_model(name, *args, **kwargs):
        return create(name, *args, **{**kwargs, **overrides.get(name, {})})

    timm.create_model = create_model


def main(model_dir: str, io_path: str) -> None:
    torch.set_num_threads(torch.get_num_threads())
    _with_tiny_overrides(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    model = AutoModelForVision2Seq.from_pretrained(model_dir, trust_remote_code=True, torch_dtype=torch.float32).eval()
    data = np.load(io_path)
    count = len(data["instructions"])
    images = [Image.fromarray(data[f"image_{i}"]) for i in range(count)]
    prompts = [str(prompt) for prompt in data["prompts"]]
    print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        batch = json.loads(line)["batch"]
        actions = []
        start = time.perf_counter()
        with torch.inference_mode():
            for index in range(batch):
                inputs = processor(prompts[index % count], images[index % count])
                actions.append(model.predict_action(**inputs, unnorm_key="bridge_orig", do_sample=False).tolist())
        print(json.dumps({"seconds": time.perf_counter() - start, "actions": actions}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
