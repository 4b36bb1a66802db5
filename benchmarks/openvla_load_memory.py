"""OpenVLA checkpoint load: wall time and peak host memory when restoring as bfloat16 from HF's sharded safetensors.

    .venv/bin/python -m benchmarks.openvla_load_memory [--llm_layers 32] [--checkpoint_dir /tmp/multinet_jax_openvla_random]

Writes a random OpenVLA with openvla-7b's sizes (DINOv2 ViT-L + SigLIP So400m + projector + Llama-2 7B; 32064-row
vocabulary) in Hugging Face's sharded layout (`model-0000N-of-0000M.safetensors` + index, bfloat16, ~5 GB shards),
one shard in memory at a time; `--llm_layers` keeps the first N of Llama's 32 layers, for machines that cannot hold
the full 15 GB. Then a fresh subprocess runs `load_model(dir, dtype="bfloat16")` and reports its load time and peak
RSS (VmHWM; goal: under 1.3x the bfloat16 bytes of the parameters it restores).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import shutil
import time

import ml_dtypes
import numpy as np

from benchmarks.common import measure_load, write_report
from multinet_jax import demo
from multinet_jax.models import openvla, openvla_checkpoint
from multinet_jax.weights import flatten_params, safetensors

SHARD_BYTES = 5 * 10**9  # about what HF's save_pretrained makes (openvla-7b: 3 shards)
TOKENIZER_CORPUS = ["pick up the cup", "What action should the robot take to open the drawer?"]


def write_random_checkpoint(directory: pathlib.Path, llm_layers: int) -> float | None:
    """Write the random checkpoint (config.json, shards + index, tokenizer, preprocessor); None when reused."""
    done = directory / "WRITE_COMPLETE"
    if done.exists():
        return None
    shutil.rmtree(directory, ignore_errors=True)
    start = time.perf_counter()
    # A tiny one: its tokenizer and preprocessor stay.
    openvla_checkpoint.write_random(directory, "openvla_tiny", corpus=TOKENIZER_CORPUS, seed=demo.DEMO_SEED,
                                    scale=demo.DEMO_PARAM_SCALE)
    config = json.loads((directory / "config.json").read_text())
    del config["tiny_timm_overrides"]  # the timm ids' real sizes
    config["text_config"] = {"model_type": "llama", "pad_token_id": 32000, "vocab_size": 32064,
                             "num_hidden_layers": llm_layers, "torch_dtype": "bfloat16"}
    config["pad_token_id"] = 32000
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / safetensors.SINGLE_FILE).unlink()
    shapes = openvla_checkpoint.tensor_shapes(openvla_checkpoint.read_config(directory))
    shards: list[list[str]] = [[]]
    filled = 0
    for name in sorted(shapes):
        if filled >= SHARD_BYTES:
            shards.append([])
            filled = 0
        shards[-1].append(name)
        filled += 2 * math.prod(shapes[name])
    rng = np.random.default_rng(0)

    def shard_tensors(names):
        return {name: (0.02 * rng.standard_normal(shapes[name], dtype=np.float32)).astype(ml_dtypes.bfloat16)
                for name in names}

    safetensors.save_shards((shard_tensors(names) for names in shards), directory, len(shards))
    done.write_text("ok\n")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_dir", default="/tmp/multinet_jax_openvla_random")
    parser.add_argument("--llm_layers", type=int, default=32, help="Llama layers kept (openvla-7b: 32)")
    parser.add_argument("--keep", action="store_true", help="keep the written checkpoint afterwards")
    args = parser.parse_args()
    directory = pathlib.Path(args.checkpoint_dir)
    directory.parent.mkdir(parents=True, exist_ok=True)
    write_s = write_random_checkpoint(directory, args.llm_layers)
    config = openvla_checkpoint.read_config(directory, "bfloat16")
    num_params = sum(math.prod(leaf.shape) for leaf in flatten_params(openvla.param_shapes(config)).values())
    num_files = len(safetensors.checkpoint_files(directory))
    write_report("openvla_load_memory", {
        "llm_layers": args.llm_layers,
        "full_size": args.llm_layers == 32,
        "safetensors_files": num_files,
        "checkpoint_write_s": write_s,
        "config": repr(config),
        **measure_load(directory, num_params),
    })
    if not args.keep:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
