"""The PyTorch reference side of `benchmarks/magma_throughput.py`: Magma's own code, one sample at a time.

Runs in its own environment (`benchmarks/magma_torch_requirements.txt`: Magma's code needs transformers 4.49.0, whose
PreTrainedModel still carries `generate`), with Magma's source (`magma/*.py` of microsoft/Magma e373780, the commit
`../shared/magma_reference` was written with) on `--magma_src`, loaded as `../shared/magma_reference/README.json`'s
`how_to_load_with_magma_code` says: a stub `wandb` module, the fixture's local open_clip config instead of the hub's,
and the fixture's tiny timm ConvNeXt registered under its name. No Magma file is modified.

The benchmark starts it as a subprocess and talks JSON lines over stdin/stdout: `{"batch": n}` ->
`{"seconds": ..., "actions": [[...], ...]}`, timing n SimplerEnv steps (`MagmaInference.step`'s processor, greedy
`generate` with the KV cache, `output_ids[0, -8:-1]` decoded with the bridge_orig statistics; Magma does not batch) on
the fixture's robot image and task.

    <torch venv>/bin/python benchmarks/magma_torch_worker.py <magma source dir> <fixture dir>
"""

from __future__ import annotations

import json
import sys
import time
import types

import numpy as np


def load(magma_src: str, fixture: str):
    """Magma's model and processor for the fixture, with the fixture's three run-time patches (module docstring)."""
    sys.path.insert(0, magma_src)
    sys.modules.setdefault("wandb", types.ModuleType("wandb"))
    import timm
    import torch
    from timm.models import register_model
    from timm.models.convnext import _create_convnext

    open_clip_config = json.load(open(f"{fixture}/open_clip_config.json"))
    tiny_name = open_clip_config["model_cfg"]["vision_cfg"]["timm_model_name"]
    sizes = json.load(open(f"{fixture}/README.json"))["settings"]["tiny_sizes"]
    if tiny_name not in timm.list_models(tiny_name):
        def tiny_convnext(pretrained=False, **kwargs):
            args = dict(depths=sizes["convnext_depths"], dims=sizes["convnext_dims"], norm_eps=kwargs.pop("norm_eps", 1e-5))
            return _create_convnext("convnext_xxlarge", pretrained=pretrained, **dict(args, **kwargs))

        tiny_convnext.__name__ = tiny_name
        register_model(tiny_convnext)
    import magma.image_tower_magma as tower

    tower.download_pretrained_from_hf = lambda model_id, filename="", **_: (
        f"{fixture}/open_clip_config.json" if filename == "open_clip_config.json" else f"{fixture}/not_downloaded")
    import magma.image_processing_magma  # noqa: F401 (registers MagmaImageProcessor with AutoImageProcessor)
    from magma.modeling_magma import MagmaForCausalLM
    from magma.processing_magma import MagmaProcessor

    model = MagmaForCausalLM.from_pretrained(fixture, torch_dtype=torch.float32).eval()
    return model, MagmaProcessor.from_pretrained(fixture), torch


def main(magma_src: str, fixture: str) -> None:
    model, processor, torch = load(magma_src, fixture)
    sys.path.insert(0, f"{magma_src}/tools/simplerenv-magma")
    from simpler_env.policies.magma.magma_model import action_norm_stats
    from PIL import Image

    data = np.load(f"{fixture}/io.npz")
    task = json.load(open(f"{fixture}/README.json"))["cases"]["robot"]["prompt"]
    image = Image.fromarray(data["robot_image_0_uint8"])
    stats = action_norm_stats["bridge_orig"]
    vocab = processor.tokenizer.vocab_size
    bins = np.linspace(-1, 1, 256)
    centers = (bins[:-1] + bins[1:]) / 2.0
    print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        batch = json.loads(line)["batch"]
        actions = []
        start = time.perf_counter()
        with torch.inference_mode():
            for _ in range(batch):
                inputs = processor(images=image, texts=task, return_tensors="pt")
                inputs["pixel_values"] = inputs["pixel_values"].unsqueeze(0)
                inputs["image_sizes"] = inputs["image_sizes"].unsqueeze(0)
                output = model.generate(**inputs, max_new_tokens=8, do_sample=False, num_beams=1, use_cache=True,
                                        temperature=None, top_p=None)
                normalized = centers[np.clip(vocab - output[0, -8:-1].numpy() - 1, 0, len(centers) - 1)]
                high, low = np.array(stats["q99"]), np.array(stats["q01"])
                actions.append(np.where(stats["mask"], 0.5 * (normalized + 1) * (high - low) + low, normalized).tolist())
        print(json.dumps({"seconds": time.perf_counter() - start, "actions": actions}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
