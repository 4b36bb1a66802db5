"""The loop behind `multinet-jax probe`: Act2Answer episodes through the model, every layer's activations to disk
(resumable), then layerwise probes per category -> `probing.json`, `probing.png` and the retention.

    run_probe(ProbeConfig(checkpoint=..., tokenizer=..., data_dir="<item set>", output_dir="runs/probe"))

Per batch the model's `activations` call returns the actions and the pooled residual streams from one jitted pass
(`models/activations.py`; Pi0-FAST and PaliGemma: the decoder's prefix pass, prefix streams only). Every model gets
the same prompt (the instruction in Pi0's format, BOS + text + "\n"), so prefix curves compare across models; the valid rows go to `<output_dir>/activations/<split>/batch_*.npz` with their ids,
layouts, categories and labels (the target tile). A resumed run checks the saved ids against the item set and
continues after the last whole batch. Labels are the target tile (0 = left, 1 = right); folds keep both layouts of
an item together.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import numpy as np
import tqdm

from multinet_jax import assets, data, models, sharding, tokenizers
from multinet_jax.models import registry
from multinet_jax.eval import summary
from multinet_jax.probing import activations, report

DOMAIN = "act2answer"


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """Everything that decides a probing run's results (written into `probing.json`)."""

    checkpoint: str  # a local path or a name `multinet_jax.assets` resolves
    tokenizer: str | None  # likewise (default: the public PaliGemma tokenizer); None for a family bundling its own
    data_dir: str
    output_dir: str
    frames_dir: str | None = None
    split: str | None = None
    max_token_len: int = 48
    batch_size: int = 8
    mesh: str = "data:-1,model:1"
    dtype: str = "float32"
    num_flow_steps: int = 10
    seed: int = 0
    limit: int | None = None
    resume: bool = False
    num_folds: int = 5
    probe_seed: int = 0
    C: float = 1.0
    max_iter: int = 100

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_flow_steps", "max_iter", "max_token_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.num_folds < 2:
            raise ValueError(f"--num_folds must be at least 2, got {self.num_folds}")
        if self.C <= 0:
            raise ValueError(f"--C must be positive, got {self.C}")


def _activations_dir(config: ProbeConfig) -> pathlib.Path:
    return pathlib.Path(config.output_dir) / "activations" / (config.split or "all")


def _check_resumed(directory: pathlib.Path, source: Any, done: int) -> None:
    """The saved episodes must be the item set's first `done` episodes, in order."""
    saved = activations.read(directory, streams=())["id"]
    for index in range(done):
        expected = source.episode(index).episode_id
        if str(saved[index]) != expected:
            raise ValueError(f"{directory}: sample {index} is {str(saved[index])!r} but the item set's is {expected!r}; "
                             "the item set changed since these activations were written")


def capture(config: ProbeConfig, model: Any) -> pathlib.Path:
    """Writes the activations of every episode not saved yet; returns their folder.

    `config.tokenizer` is a local path here (`run_probe` resolves names first)."""
    directory = _activations_dir(config)
    done = activations.resume_index(directory)
    if done and not config.resume:
        raise FileExistsError(f"{directory} holds {done} episodes; pass --resume to continue it or choose another --output_dir")
    source = data.make_source(DOMAIN, config.data_dir, split=config.split, frames_dir=config.frames_dir)
    total = len(source) if config.limit is None else min(config.limit, len(source))
    if done:
        _check_resumed(directory, source, done)
    # A family bundling its tokenizer (OpenVLA, `config.tokenizer` None) reads the prompt texts itself.
    tokenizer = None if config.tokenizer is None else tokenizers.PaliGemmaTokenizer(config.tokenizer)
    dataset = data.load(DOMAIN, config.data_dir, split=config.split, frames_dir=config.frames_dir, limit=config.limit,
                        tokenizer=tokenizer, batch_size=config.batch_size,
                        max_token_len=config.max_token_len, shard_index=0, shard_count=1)
    rng = jax.random.key(config.seed)
    with tqdm.tqdm(desc="activations", unit="episode", initial=done, total=total, dynamic_ncols=True) as progress:
        for batch in dataset:
            rows = np.flatnonzero(np.asarray(batch["_mask"]) & (np.asarray(batch["sample_index"]) >= done))
            if not len(rows):
                continue
            inputs = data.model_inputs(batch) | ({} if tokenizer else {"prompt": [text or "" for text in batch["prompt"]]})
            _, streams = model.activations(inputs, rng=rng, num_steps=config.num_flow_steps)
            streams = jax.device_get(streams)
            saved = {name: np.asarray(value)[rows] for name, value in streams.items()}
            saved["sample_index"] = np.asarray(batch["sample_index"])[rows]
            saved["label"] = np.asarray(batch["ground_truth"])[rows]
            saved.update({field: [batch[field][row] for row in rows] for field in activations.TEXT_FIELDS})
            activations.write_batch(directory, saved)
            progress.update(len(rows))
    return directory


def run_probe(config: ProbeConfig, model: Any = None) -> dict[str, Any]:
    """Capture (or resume) the activations, fit the probes, write `probing.json` and `probing.png`."""
    paths = assets.resolve_all({} if model is not None else {"checkpoint": config.checkpoint})
    bundled = getattr(model, "tokenizer", None) is not None if model is not None else \
        registry.family_of(paths["checkpoint"]).bundles_tokenizer
    if bundled:  # its own tokenizer reads the prompts: none is resolved or recorded
        config = dataclasses.replace(config, tokenizer=None)
    tokenizer = None if bundled else str(assets.resolve(config.tokenizer or assets.DEFAULT_TOKENIZER))
    if model is None:
        mesh = sharding.make_mesh(config.mesh, devices=jax.local_devices())
        model = models.load_model(paths["checkpoint"], dtype=config.dtype, mesh=mesh)
    if not hasattr(model, "activations"):
        raise ValueError(f"{config.checkpoint}: a {type(model).__name__} exposes no activations to probe")
    directory = capture(dataclasses.replace(config, tokenizer=tokenizer), model)
    result = report.probe_tasks(activations.read(directory), num_folds=config.num_folds, seed=config.probe_seed,
                                C=config.C, max_iter=config.max_iter)
    result["config"] = dataclasses.asdict(config)
    output_dir = pathlib.Path(config.output_dir)
    summary.write_json(output_dir / "probing.json", result)
    report.plot(result, output_dir / "probing.png")
    return result
