"""The reference side of `benchmarks/smolvla_throughput.py`: LeRobot's own SmolVLA code, timed in its own process.

LeRobot 0.5+ needs Python >= 3.12 and torch (this project runs on 3.11 without torch), so it lives in a venv of its
own, never a dependency of the package:

    /root/.pyenv/versions/3.12.1/bin/python -m venv /work/refenv-smolvla   # any Python >= 3.12
    /work/refenv-smolvla/bin/pip install 'lerobot[smolvla]==0.6.1'          # torch 2.11, transformers 5.5.4

    <venv>/bin/python benchmarks/smolvla_lerobot_worker.py serve <policy dir> <backbone dir> <inputs.npz>
    <venv>/bin/python benchmarks/smolvla_lerobot_worker.py resize_fixture tests/data/smolvla_lerobot_resize.npz

`serve` loads the checkpoint with `SmolVLAPolicy.from_pretrained` (the backbone folder given by path, as
`vlm_model_name` would name it on the hub) and talks JSON lines over stdin/stdout: first `{"torch": ..., ...}`, then
per request `{"batch": n}` -> `{"seconds": ..., "actions": [...]}`: one `predict_action_chunk` on the first n samples
of the inputs (raw [0, 1] images per camera, SmolVLM2 tokens, the normalized state, the noise), timed around the call.
`resize_fixture` writes the test fixture of LeRobot's `resize_with_pad` (shrinking, growing, a tall image).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch


def serve(policy_dir: str, backbone_dir: str, inputs_path: str) -> None:
    replies = sys.stdout
    sys.stdout = sys.stderr  # LeRobot prints while loading ("Reducing the number of VLM layers ..."): not on the pipe
    import lerobot
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    config = PreTrainedConfig.from_pretrained(policy_dir)
    config.vlm_model_name = backbone_dir
    policy = SmolVLAPolicy.from_pretrained(policy_dir, config=config).eval()
    data = np.load(inputs_path)
    cameras = [key for key in config.image_features if f"image/{key}" in data.files]
    print(json.dumps({"lerobot": lerobot.__version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "cameras": cameras}), file=replies, flush=True)
    for line in sys.stdin:
        batch = int(json.loads(line)["batch"])
        inputs = {key: torch.from_numpy(data[f"image/{key}"][:batch]) for key in cameras}
        inputs |= {"observation.state": torch.from_numpy(data["state"][:batch]),
                   "observation.language.tokens": torch.from_numpy(data["tokens"][:batch].astype(np.int64)),
                   "observation.language.attention_mask": torch.from_numpy(data["token_mask"][:batch])}
        noise = torch.from_numpy(data["noise"][:batch])
        with torch.inference_mode():
            start = time.perf_counter()
            actions = policy.predict_action_chunk(inputs, noise=noise)
            seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "actions": actions.numpy().tolist()}), file=replies, flush=True)


def resize_fixture(path: str) -> None:
    from lerobot.policies.common.vla_utils import resize_with_pad

    rng = np.random.default_rng(23)
    arrays = {}
    for name, (batch, height, width) in {"shrink": (2, 30, 40), "grow": (2, 12, 20), "tall": (1, 50, 17)}.items():
        image = rng.random((batch, 3, height, width), dtype=np.float32)  # [0, 1], as `prepare_images` takes it
        arrays[f"{name}_input"] = image
        arrays[f"{name}_output"] = (resize_with_pad(torch.from_numpy(image), 16, 16, pad_value=0) * 2 - 1).numpy()
    np.savez_compressed(path, **arrays)


if __name__ == "__main__":
    {"serve": serve, "resize_fixture": resize_fixture}[sys.argv[1]](*sys.argv[2:])
