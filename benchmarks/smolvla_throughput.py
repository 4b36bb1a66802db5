"""SmolVLA action chunks/s: this project's batched Flax model vs LeRobot's own PyTorch code, timed in alternation.

    python -m benchmarks.smolvla_throughput --lerobot_python=/work/refenv-smolvla/bin/python

The reference is LeRobot 0.6.1's `SmolVLAPolicy.predict_action_chunk` in a worker process of its own venv (how to
build it: `benchmarks/smolvla_lerobot_worker.py`). Both sides load one random checkpoint written here in LeRobot's
layout (`smolvla_checkpoint.write_checkpoint`; default the full-size smolvla_base architecture, 450 M parameters,
float32, weights at the fixture's O(1) scale) and get the same inputs: two cameras of 480 x 640 [0, 1] pixels (each
side resizes them to 512 x 512 with its own code, inside the timed call), the task tokens, the normalized state and
the noise. Per batch size: a warm-up call on each side (compiles ours), then rounds that time ours and LeRobot's
alternately; medians, their ratio, and max|ours - LeRobot| / max|LeRobot| over the chunks.

`--check_fixture` first runs the worker on `../shared/smolvla_reference` and requires its actions within 1e-5 of io.npz's
(LeRobot wrote them on another machine; another thread count sums in another order): the venv really is the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import time

import jax
import numpy as np

from benchmarks.common import ReferenceWorker, time_alternately, write_report
from multinet_jax.models import smolvla, smolvla_checkpoint

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "smolvla_reference"
WORKER = pathlib.Path(__file__).resolve().parent / "smolvla_lerobot_worker.py"
TASKS = ("pick up the red cube and place it in the box", "put the green block in the bowl then close the lid",
         "open the drawer and push the blue cup to the left", "fold the towel and wipe the table")


def lerobot_worker(python: str, policy_dir: pathlib.Path, backbone_dir: pathlib.Path, inputs: pathlib.Path) -> ReferenceWorker:
    """LeRobot's SmolVLA in its own process (see `smolvla_lerobot_worker.py`)."""
    return ReferenceWorker([python, str(WORKER), "serve", str(policy_dir), str(backbone_dir), str(inputs)], close_timeout_s=120)


def check_fixture(python: str, workdir: pathlib.Path) -> float:
    """max|LeRobot worker - io.npz| on the fixture's checkpoint and inputs (float32 rounding when the venv is LeRobot
    0.6.1's)."""
    io = np.load(SHARED / "io.npz")
    inputs = workdir / "fixture_inputs.npz"
    cameras = {f"image/observation.images.{camera}": io[f"raw_image_{camera}"] for camera in ("camera1", "camera2")}
    np.savez(inputs, **cameras, tokens=io["lang_tokens"], token_mask=io["lang_masks"], state=io["state_normalized"],
             noise=io["noise"])
    with lerobot_worker(python, SHARED / "policy", SHARED / "tiny_smolvlm2", inputs) as reference:
        _, actions = reference.run(len(io["tasks"]))
    return float(np.abs(actions - io["actions"]).max())


def make_inputs(model: smolvla.SmolVLAModel, batch: int, cameras: list[str], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Shared inputs: smooth random [0, 1] images (NCHW, LeRobot's layout), tokens, normalized state, noise."""
    rng = np.random.default_rng(0)
    config = model.config
    inputs = {}
    for camera in cameras:
        coarse = rng.random((batch, 3, size[0] // 16, size[1] // 16), dtype=np.float32)
        inputs[f"image/{camera}"] = np.repeat(np.repeat(coarse, 16, axis=2), 16, axis=3)
    tokens, mask = model.tokenizer.tokenize_tasks([TASKS[i % len(TASKS)] for i in range(batch)])
    return {**inputs, "tokens": tokens, "token_mask": mask,
            "state": rng.standard_normal((batch, config.state_dim), dtype=np.float32),
            "noise": rng.standard_normal((batch, config.chunk_size, config.max_action_dim), dtype=np.float32)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lerobot_python", required=True, help="python of the venv holding LeRobot 0.6.1")
    parser.add_argument("--config", default="smolvla_base", choices=sorted(smolvla_checkpoint.NAMED_CONFIGS))
    parser.add_argument("--batch_sizes", default="1,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--check_fixture", action="store_true")
    args = parser.parse_args()
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="smolvla_throughput_") as workdir:
        workdir = pathlib.Path(workdir)
        fixture_diff = check_fixture(args.lerobot_python, workdir) if args.check_fixture else None
        if fixture_diff is not None and fixture_diff > 1e-5:
            raise SystemExit(f"the LeRobot worker does not reproduce ../shared/smolvla_reference (max diff {fixture_diff})")
        start = time.perf_counter()
        policy_dir = smolvla_checkpoint.write_checkpoint(workdir / "policy", args.config, seed=0, corpus=TASKS,
                                                         tokenizer_vocab=512)
        write_seconds = time.perf_counter() - start
        model = smolvla.load(policy_dir)
        cameras = list(model.config.cameras[:2])
        data = make_inputs(model, max(batch_sizes), cameras, (480, 640))
        inputs_path = workdir / "inputs.npz"
        np.savez(inputs_path, **data)
        rows = []
        with lerobot_worker(args.lerobot_python, policy_dir, smolvla_checkpoint.backbone_of(policy_dir), inputs_path) as reference:
            for batch in batch_sizes:
                observation = {f"image/{camera}": data[f"image/{camera}"][:batch].transpose(0, 2, 3, 1) * 2 - 1
                               for camera in cameras}
                observation |= {"tokenized_prompt": data["tokens"][:batch], "tokenized_prompt_mask": data["token_mask"][:batch],
                                "state": np.pad(data["state"][:batch], ((0, 0), (0, model.config.max_state_dim - model.config.state_dim)))}
                row, ours_actions, reference_actions = time_alternately(
                    lambda: model.sample_actions(observation, noise=data["noise"][:batch]), reference, batch,
                    rounds=args.rounds, unit="chunks")
                ours_actions = np.asarray(ours_actions)[..., : model.config.action_dim]
                row["relative_diff_vs_reference"] = float(np.abs(ours_actions - reference_actions).max()
                                                          / np.abs(reference_actions).max())
                row["load_average_after"] = os.getloadavg()
                rows.append(row)
                print(json.dumps(row), flush=True)
    config = model.config
    write_report(f"smolvla_throughput_{args.config}", {
        "what": f"SmolVLA action chunks/s ({args.config}: {sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(model.params)):,} "
                f"params, random weights, float32), {len(cameras)} cameras of 480x640 resized to "
                f"{config.vision.image_size}, {config.num_steps} flow steps, chunk {config.chunk_size}: ours batched "
                "(sample_actions) vs LeRobot's predict_action_chunk, same checkpoint, inputs and noise, timed in alternation",
        "reference": {"implementation": "lerobot SmolVLAPolicy.predict_action_chunk", **reference.info},
        "reference_reproduces_fixture_max_abs_diff": fixture_diff,
        "checkpoint_write_s": write_seconds,
        "load_average": os.getloadavg(),
        "rounds": args.rounds,
        "results": rows,
    })


if __name__ == "__main__":
    main()
