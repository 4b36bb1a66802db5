"""End-to-end `multinet-jax eval` throughput on the Open-X bimanual sample, and MultiNet's own pipeline for scale.

    .venv/bin/python -m benchmarks.eval_throughput [--models=pi0_tiny,pi0_dummy_gemma_so400m] [--repeats=3]

For each model (the tiny Pi0, and dummy Gemma + the full So400m SigLIP: the heavy part of Pi0 on CPU) the
evaluator runs once to compile, then `--repeats` more times on fresh output directories; reported are the median
samples/s of a whole domain evaluation (data -> model -> output mapping -> predictions file -> metrics) and the
share of its time in data, model, output (mapping + writing) and metrics. Two datasets: MultiNet's real bimanual
sample (8 steps: per-domain fixed costs such as the plot weigh heavily) and a generated one in the same format with
`--generated_samples` steps (how those costs amortize over a real split).

MultiNet's Pi0 pipeline is re-created on the same inputs (`benchmarks.multinet_recreation`): openpi's un-jitted
`sample_actions` called plainly, as its openx_inference.py calls it (op by op, each loop body compiled; not under
`jax.disable_jit()`), with every camera encoded (openpi's behaviour: MultiNet's two zero wrist images are masked, not
skipped), batch 4, and `jax.clear_caches()` after every batch, as that script does (so every batch compiles its loop
bodies again). Its per-sample time against ours is the ratio. Parameters are random (seeded): speed does not depend
on their values. A model with PaliGemma's full vocabulary is evaluated with PaliGemma's tokenizer, built from
../shared's Gemma vocabulary (eval refuses a tokenizer that does not fit the model's embedding).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import tempfile

import jax
import numpy as np
from absl import app, flags

from benchmarks.common import data_label, write_report
from benchmarks.multinet_recreation import MULTINET_BATCH, multinet_pipeline
from multinet_jax import data, demo, models, sharding, tokenizers
from multinet_jax.demo import datasets
from multinet_jax.eval import EvalConfig, Evaluator

DOMAIN = "openx_bimanual"
SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"
SHARED_SAMPLE = SHARED / "data" / "multinet_sample"
GEMMA_TOKENIZER = SHARED / "tokenizers" / "gemma_tokenizer.model"

_MODELS = flags.DEFINE_list("models", ["pi0_tiny", "pi0_dummy_gemma_so400m"], "Named model configs to benchmark.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed evaluations per model after the compiling one.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "The evaluator's batch size.")
_MULTINET_BATCHES = flags.DEFINE_integer("multinet_batches", 1, "Batches timed in the MultiNet re-creation.")
_GENERATED = flags.DEFINE_integer("generated_samples", 128, "Steps of the generated bimanual dataset (0: skip it).")
_REAL_SAMPLE_ONLY = flags.DEFINE_list("real_sample_only", ["pi0_dummy_gemma_so400m"],
                                      "Models timed on the real sample at --batch_size only (slow models on a 2-core CPU).")


def random_model(name: str, mesh: jax.sharding.Mesh):
    """The named config with seeded normal parameters (like the demo checkpoints), on `mesh`."""
    config = models.configs.get_config(name)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda leaf: (rng.standard_normal(leaf.shape) * 0.02).astype(leaf.dtype), models.param_shapes(config))
    return models.build_model(config, params, mesh=mesh)


def eval_tokenizer(vocab_size: int, demo_tokenizer: pathlib.Path, work: pathlib.Path) -> pathlib.Path:
    """The tokenizer eval takes for a model embedding `vocab_size` tokens: the demo's for the tiny vocabulary,
    PaliGemma's (built once, from ../shared's Gemma vocabulary) for the full one."""
    if vocab_size != tokenizers.PALIGEMMA_VOCAB_SIZE:
        return demo_tokenizer
    path = work / "paligemma_tokenizer.model"
    return path if path.exists() else tokenizers.build_paligemma_vocab(GEMMA_TOKENIZER, path)


def evaluator_throughput(model, config: EvalConfig, repeats: int) -> dict:
    evaluator = Evaluator(config, model=model)
    evaluator.evaluate_domain(DOMAIN)  # compiles the model and the metric kernels
    runs = []
    for repeat in range(repeats):
        evaluator.output_dir = pathlib.Path(config.output_dir) / f"repeat_{repeat}"
        row = evaluator.evaluate_domain(DOMAIN)
        timing = json.loads((evaluator.output_dir / f"{DOMAIN}_metrics.json").read_text())
        runs.append((row["samples_per_second"], timing["timing_seconds"], timing["timing_shares"]))
    median_run = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
    return {
        "num_samples": row["num_samples"],
        "batch_size": config.batch_size,
        "samples_per_second_median": median_run[0],
        "samples_per_second_all": [run[0] for run in runs],
        "seconds_per_sample": 1.0 / median_run[0],
        "timing_seconds": median_run[1],
        "time_shares": median_run[2],
        "overhead_over_model": (median_run[1]["data"] + median_run[1]["output"] + median_run[1]["metrics"]) / median_run[1]["model"],
    }


def model_batches(data_root: pathlib.Path, tokenizer, cache_dir: str) -> list[dict]:
    dataset = data.load(DOMAIN, data_root / DOMAIN, split="public", tokenizer=tokenizer, batch_size=MULTINET_BATCH, cache_dir=cache_dir)
    keys = ("image/", "image_mask/", "state", "tokenized_prompt")
    return [{key: np.asarray(value) for key, value in batch.items() if key.startswith(keys)} for batch in dataset]


def main(argv: list[str]) -> None:
    del argv
    work = pathlib.Path(tempfile.mkdtemp(prefix="eval_throughput_"))
    tokenizer_path = demo.build_tokenizer(work / "demo_tokenizer.model", datasets.corpus())
    data_roots = {}
    if (SHARED_SAMPLE / DOMAIN).exists():
        data_roots["multinet_sample"] = SHARED_SAMPLE
    if _GENERATED.value:
        data_roots[f"generated_{_GENERATED.value}"] = work / "generated"
        datasets.write_openx_bimanual(work / "generated", count=_GENERATED.value)
    mesh = sharding.make_mesh("data:-1,model:1", devices=jax.local_devices())
    first_root = next(iter(data_roots.values()))
    batches = model_batches(first_root, tokenizers.PaliGemmaTokenizer(tokenizer_path), str(work / "cache"))
    results = {"data": {name: data_label(root / DOMAIN, f"{name} (generated in a temporary folder)")
                        for name, root in data_roots.items()}, "models": {}}
    for name in _MODELS.value:
        model = random_model(name, mesh)
        entry = {}
        quick = name in _REAL_SAMPLE_ONLY.value
        for data_name, data_root in data_roots.items():
            if quick and data_name != "multinet_sample":
                continue
            tokenizer = eval_tokenizer(model.config.vocab_size, tokenizer_path, work)
            config = EvalConfig(model="pi0", checkpoint=f"<random {name}>", tokenizer=str(tokenizer), domains=(DOMAIN,),
                                data_dir=str(data_root), split="public", output_dir=str(work / "runs" / name / data_name),
                                batch_size=_BATCH.value, cache_dir=str(work / "cache"))
            entry[data_name] = evaluator_throughput(model, config, 1 if quick else _REPEATS.value)
            if quick:
                continue
            entry[f"{data_name}_batch4"] = evaluator_throughput(
                model, dataclasses.replace(config, batch_size=MULTINET_BATCH, output_dir=config.output_dir + "_b4"), _REPEATS.value)
        multinet = multinet_pipeline(model, batches, _MULTINET_BATCHES.value)
        entry["multinet_recreation"] = multinet
        entry["speedup_vs_multinet"] = {
            key: multinet["seconds_per_sample"] / value["seconds_per_sample"] for key, value in entry.items() if key != "multinet_recreation"
        }
        results["models"][name] = entry
        print(name, json.dumps(entry, indent=1), flush=True)
    write_report("eval_throughput", results)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
