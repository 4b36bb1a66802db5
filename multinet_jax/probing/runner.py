"""The loop behind `multinet-jax probe`: Act2Answer episodes through the model, every layer's activations to disk
(resumable), then layerwise probes per category -> `probing.json`, `probing.png` and the retention.

    run_probe(ProbeConfig(checkpoint=..., tokenizer=..., data_dir="<item set>", output_dir="runs/probe"))

Per batch the model's `activations` call returns the actions and the pooled residual streams from one jitted pass
(`models/activations.py`; Pi0-FAST and PaliGemma: the decoder's prefix pass, prefix streams only). Every model but
OpenVLA, which tokenizes its own, gets the same prompt (the instruction in Pi0's format, BOS + text + "\n"). The valid
rows go to `<output_dir>/activations/<split>/batch_*.npz` with their ids, layouts, categories and labels (the target
tile). `probe_manifest.json` records what the activations depend on, so a resume with other settings or inputs is
refused (`check_manifest`). A resumed run checks the saved ids against the item set and
continues after the last whole batch. Labels are the target tile (0 = left, 1 = right); folds keep both layouts of
an item together.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import tqdm

from multinet_jax import assets, data, domains, models, sharding, tokenizers
from multinet_jax.eval import manifest, preflight, summary
from multinet_jax.models import attention, registry
from multinet_jax.probing import activation_store, layer_curves

DOMAIN = "act2answer"
MANIFEST = "probe_manifest.json"
MANIFEST_FORMAT = "multinet_jax.probe_manifest/v1"
# `ProbeConfig` fields whose value changes the saved activations: resuming with a different one is refused.
# `batch_size`: XLA rounds each batch shape's program differently (see `manifest.PREDICTION_SETTINGS`).
ACTIVATION_SETTINGS = ("split", "max_token_len", "dtype", "num_flow_steps", "seed", "batch_size")
# Every other field, and why a resumed run may differ in it.
OTHER_SETTINGS = {
    "checkpoint": "compared by content (the manifest's `checkpoint` fingerprint)",
    "tokenizer": "compared by content (the `tokenizer` fingerprint)",
    "data_dir": "compared by content (the `data` fingerprint: pairs.json, candidate images, first_frames/)",
    "frames_dir": "compared by content (the `frames` fingerprint)",
    "output_dir": "is where the manifest lives",
    "mesh": "compared as the device layout it resolves to (the manifest's `layout`, `manifest.device_layout`)",
    "limit": "episodes come in a fixed order, so a larger limit extends the same activations",
    "resume": "decides whether saved activations are continued, not what they are",
    "num_folds": "the probes are refitted on all saved activations every run (probing.json records the settings)",
    "probe_seed": "the probes are refitted on all saved activations every run",
    "C": "the probes are refitted on all saved activations every run",
    "max_iter": "the probes are refitted on all saved activations every run",
    "permutations": "the probes are refitted on all saved activations every run",
    "asset_id": "norm stats do not enter the activations (Act2Answer's state is zeros); it only lets a checkpoint "
                "holding several load",
}


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """Everything that decides a probing run's results (written into `probing.json`)."""

    checkpoint: str  # a local path or a name `multinet_jax.assets` resolves
    tokenizer: str | None  # likewise; None: the public PaliGemma tokenizer, or the checkpoint's own where it bundles one
    data_dir: str
    output_dir: str
    frames_dir: str | None = None
    split: str | None = None
    # Where the prompts tokenized with PaliGemma's tokenizer are cut; None: Act2Answer's protocol length (resolved and
    # recorded by `run_probe`), or no flag's where the checkpoint bundles its tokenizer (it cuts its prompts itself).
    max_token_len: int | None = None
    batch_size: int = 8
    mesh: str = "data:-1,model:1"
    dtype: str = "float32"
    # Euler steps of the sampling pass; None: the checkpoint's own (`registry.Family.flow_steps`), resolved and recorded
    # as the steps used by `run_probe`; refused for a family that samples no flow (which stays None).
    num_flow_steps: int | None = None
    seed: int = 0
    limit: int | None = None
    resume: bool = False
    num_folds: int = 5
    probe_seed: int = 0
    C: float = 1.0
    max_iter: int = 100
    permutations: int = layer_curves.PERMUTATIONS
    asset_id: str | None = None  # openpi checkpoints with norm stats for several robots: which one's

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit % 2:
            raise ValueError(f"--limit={self.limit} is odd: Act2Answer's episodes are items in both layouts (original, "
                             "then swapped), and a probe's item is read in both or not at all; pass an even --limit")
        for name in ("batch_size", "num_flow_steps", "max_iter", "max_token_len"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.max_token_len is not None and self.max_token_len > preflight.MAX_SIZES["max_token_len"]:
            raise ValueError(f"--max_token_len must be at most {preflight.MAX_SIZES['max_token_len']}, got {self.max_token_len}")
        if self.num_folds < 2:
            raise ValueError(f"--num_folds must be at least 2, got {self.num_folds}")
        if self.C <= 0:
            raise ValueError(f"--C must be positive, got {self.C}")
        if self.permutations < layer_curves.PERMUTATIONS:
            raise ValueError(f"--permutations must be at least {layer_curves.PERMUTATIONS} (a peak reaches p <= "
                             f"{layer_curves.ALPHA} only by beating that many permuted peaks), got {self.permutations}")
        preflight.check_seed(self.seed)


def _activations_dir(config: ProbeConfig) -> pathlib.Path:
    return pathlib.Path(config.output_dir) / "activations" / (config.split or "all")


def _check_resumed(directory: pathlib.Path, source: Any, done: int) -> None:
    """The saved episodes must be the item set's first `done` episodes, in order."""
    saved = activation_store.read(directory, streams=())["id"]
    for index in range(done):
        expected = source.episode(index).episode_id
        if str(saved[index]) != expected:
            raise ValueError(f"{directory}: sample {index} is {str(saved[index])!r} but the item set's is {expected!r}; "
                             "the item set changed since these activations were written")


def _saved_episodes(config: ProbeConfig) -> int:
    """How many episodes' activations the output folder holds, when this run may continue them: only with --resume,
    and only up to `--limit` (below them the probes would be fitted on more episodes than the run says)."""
    directory = _activations_dir(config)
    done = activation_store.resume_index(directory)
    if done and not config.resume:
        raise FileExistsError(f"{directory} holds {done} episodes; pass --resume to continue it or choose another --output_dir")
    if config.limit is not None and done > config.limit:
        raise ValueError(f"{directory}: holds {done} episodes, more than --limit={config.limit}; a resume only continues "
                         f"a run: pass --limit={done} or more (or none), or choose another --output_dir")
    return done


def _source(config: ProbeConfig) -> Any:
    return data.make_source(DOMAIN, config.data_dir, split=config.split, frames_dir=config.frames_dir)


def _check_folds(config: ProbeConfig, source: Any, content: dict[str, str]) -> None:
    """`layer_curves.check_folds` over the episodes the run probes (groups by `content`, as the probes' folds): refused
    before the model loads and the activations are computed, not after."""
    groups: dict[str, list[str]] = {}
    for index in range(_episodes(config, source)):
        item = source.episode(index).item
        groups.setdefault(item.category, []).append(content[item.item_id])
    layer_curves.check_folds(groups, config.num_folds)


def _episodes(config: ProbeConfig, source: Any) -> int:
    """How many of the item set's episodes the run probes (`--limit`, even: both layouts of every item)."""
    return len(source) if config.limit is None else min(config.limit, len(source))


def prompt_truncation(config: ProbeConfig, tokenizer: Any, source: Any) -> dict[str, Any] | None:
    """How many probed episodes' prompts `config.max_token_len` cut (the pipeline's counts, recomputed over every
    episode the activations hold, resumed ones too): a cut instruction may lose the question, and the probes would
    read the same prompt for every item. None where the model tokenizes (and cuts) its prompts itself."""
    if tokenizer is None:
        return None
    prompt_format = domains.lookup(DOMAIN).protocol.prompt_format.value
    lengths = [len(tokenizer.prompt_ids(source.episode(index).item.instruction, prompt_format))
               for index in range(_episodes(config, source))]
    truncated = sum(length > config.max_token_len for length in lengths)
    if truncated:
        print(f"warning: {DOMAIN}: {truncated} of {len(lengths)} prompts truncated to {config.max_token_len} tokens "
              f"(longest {max(lengths)}): their probes read what is left of the instruction", file=sys.stderr)
    return {"max_prompt_tokens": config.max_token_len, "truncated": truncated, "counted": len(lengths),
            "longest_prompt_tokens": max(lengths, default=0)}


def capture(config: ProbeConfig, model: Any, source: Any = None) -> pathlib.Path:
    """Writes the activations of every episode not saved yet (of `source`, the item set's episodes: read from
    `config.data_dir` unless given); returns their folder.

    `config.tokenizer` is a local path here, `config.num_flow_steps` the steps used (None without flow sampling) and
    `config.max_token_len` the prompts' cut (None where the model cuts its own): `run_probe` resolves them first."""
    directory = _activations_dir(config)
    done = _saved_episodes(config)
    source = _source(config) if source is None else source
    total = _episodes(config, source)
    if done:
        _check_resumed(directory, source, done)
    output_dir = pathlib.Path(config.output_dir)
    for earlier in (output_dir / "probing.json", output_dir / "probing.png"):  # fitted on the activations saved before:
        earlier.unlink(missing_ok=True)  # a run dying from here on must not leave them beside more activations
    # A family bundling its tokenizer (OpenVLA, `config.tokenizer` None) reads the prompt texts itself.
    tokenizer = None if config.tokenizer is None else tokenizers.PaliGemmaTokenizer(config.tokenizer)
    dataset = data.load_source(source, limit=config.limit, tokenizer=tokenizer, batch_size=config.batch_size,
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
            saved.update({field: [batch[field][row] for row in rows] for field in activation_store.TEXT_FIELDS})
            activation_store.write_batch(directory, saved)
            progress.update(len(rows))
    return directory


def describe(config: ProbeConfig, paths: Mapping[str, Any], family_name: str, mesh: Any = None) -> dict[str, Any]:
    """The probe run's manifest: the activation settings, the device layout of `mesh` (None: unknown, a model the
    caller loaded without one), the content fingerprints of every input and the settings the checkpoint's path
    implies for `family_name` (`registry.path_settings`)."""
    inputs = {"checkpoint": manifest.located(paths["checkpoint"]), "data": manifest.located(config.data_dir)}
    if paths["tokenizer"] is not None:  # None: the checkpoint bundles its own (OpenVLA), fingerprinted with it
        inputs["tokenizer"] = manifest.located(paths["tokenizer"])
    if config.frames_dir:
        inputs["frames"] = manifest.located(config.frames_dir)
    return {"format": MANIFEST_FORMAT, "settings": {name: getattr(config, name) for name in ACTIVATION_SETTINGS},
            "attention": attention.manifest_entry(), "layout": None if mesh is None else manifest.device_layout(mesh),
            "runtime": manifest.runtime(),
            "checkpoint_settings": registry.path_settings(paths["checkpoint"], family_name), "inputs": inputs}


def check_manifest(config: ProbeConfig, current: Mapping[str, Any]) -> None:
    """Refuses to resume activations that another run (other settings or inputs) wrote, naming each difference;
    records `current` otherwise (before the first batch)."""
    output_dir = pathlib.Path(config.output_dir)
    path = output_dir / MANIFEST
    if _saved_episodes(config):  # continued only with --resume, so the manifest is written over nothing
        try:
            recorded = json.loads(path.read_text()) if path.exists() else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise manifest.RunChangedError(f"{path}: unreadable probe manifest ({error}); use a new --output_dir") from None
        if not isinstance(recorded, dict) or recorded.get("format") != MANIFEST_FORMAT:
            raise manifest.RunChangedError(f"{output_dir}: holds activations but no {MANIFEST}, so they cannot be verified "
                                           "to come from this run; use a new --output_dir")
        found = [f"--{name}: recorded {recorded['settings'].get(name)!r}, now {value!r}"
                 for name, value in current["settings"].items() if recorded["settings"].get(name) != value]
        found += manifest.attention_differs(recorded, current)
        found += manifest.layout_differs(recorded, current)
        found += manifest.runtime_differs(recorded, current)
        found += manifest.checkpoint_settings_differ(recorded, current)
        for name in sorted(set(recorded["inputs"]) | set(current["inputs"])):
            before, now = recorded["inputs"].get(name), current["inputs"].get(name)
            if before is None or now is None:
                found.append(f"{name}: {'not given now' if now is None else 'not given before'}")
            else:
                found += manifest.differs(name, before, now)
        if found:
            raise manifest.RunChangedError(f"{path}: the activations in this folder come from another run: "
                                           f"{'; '.join(found)}. Use a new --output_dir, or the recorded settings and inputs")
    summary.write_json(path, current)


def run_probe(config: ProbeConfig, model: Any = None) -> dict[str, Any]:
    """Capture (or resume) the activations, fit the probes, write `probing.json` and `probing.png`.

    `model` (a loaded model, e.g. in tests) skips loading `config.checkpoint`, which is still fingerprinted: it must
    name the checkpoint the model came from. The output folder is this run's alone while it runs
    (`preflight.lock_output_dir`)."""
    lock = preflight.lock_output_dir(pathlib.Path(config.output_dir))
    try:
        return _run_probe_locked(config, model)
    finally:
        lock.release()


def _flow_steps(config: ProbeConfig, family_name: str, checkpoint: Any) -> int | None:
    """The Euler steps the activations' sampling pass takes, as the manifest records them: --num_flow_steps, else the
    checkpoint's own (read before the model loads); None for a family that samples no flow (refused if given)."""
    registry.check_flow_steps(family_name, config.num_flow_steps)
    if config.num_flow_steps is not None:
        return config.num_flow_steps
    own = registry.family(family_name).flow_steps
    return None if own is None else own(str(checkpoint))


def _prompt_length(config: ProbeConfig, family_name: str) -> int | None:
    """Where the activations' prompts are cut, as the manifest records it: --max_token_len, else Act2Answer's protocol
    length; None for a family that bundles its tokenizer (refused if given: its model cuts its prompts itself)."""
    registry.check_prompt_length(family_name, config.max_token_len)
    if registry.family(family_name).bundles_tokenizer:
        return None
    return domains.lookup(DOMAIN).protocol.truncation_length(config.max_token_len)


def _run_probe_locked(config: ProbeConfig, model: Any) -> dict[str, Any]:
    """`run_probe` once this process owns the output folder."""
    paths = assets.resolve_all({"checkpoint": config.checkpoint})
    family_name = registry.family_of(paths["checkpoint"])  # a given `model` came from it (the docstring)
    registry.check_tokenizers(family_name, {"tokenizer": config.tokenizer})
    config = dataclasses.replace(config, num_flow_steps=_flow_steps(config, family_name, paths["checkpoint"]),
                                 max_token_len=_prompt_length(config, family_name))
    bundled = registry.family(family_name).bundles_tokenizer  # its own tokenizer reads the prompts
    if not bundled:
        config = dataclasses.replace(config, tokenizer=config.tokenizer or assets.DEFAULT_TOKENIZER)
    tokenizer = None if bundled else str(assets.resolve(config.tokenizer))
    prompt_tokenizer = None if tokenizer is None else tokenizers.PaliGemmaTokenizer(tokenizer)
    mesh = getattr(model, "mesh", None) if model is not None else sharding.make_mesh(config.mesh, devices=jax.local_devices())
    if mesh is not None:
        sharding.check_batch_size(config.batch_size, mesh)
    current = describe(config, {**paths, "tokenizer": tokenizer}, family_name, mesh)
    check_manifest(config, current)  # before the model loads
    line = registry.path_settings_line("probe", config.checkpoint, current["checkpoint_settings"])  # no flag overrides
    if line and jax.process_index() == 0:
        print(line, flush=True)
    source = _source(config)
    content = source.content_groups()
    _check_folds(config, source, content)
    if model is None:
        asset = {} if config.asset_id is None else {"asset_id": config.asset_id}
        model = models.load_model(paths["checkpoint"], dtype=config.dtype, mesh=mesh, **asset)
    if prompt_tokenizer is not None:  # as eval checks it
        prompt_tokenizer.check_vocabulary(config.checkpoint, model.config.vocab_size)
    output_dir = pathlib.Path(config.output_dir)
    directory = capture(dataclasses.replace(config, tokenizer=tokenizer), model, source)
    result = layer_curves.probe_tasks(activation_store.read(directory), num_folds=config.num_folds, seed=config.probe_seed,
                                      C=config.C, max_iter=config.max_iter, permutations=config.permutations,
                                      content=content)
    result["prompt_truncation"] = prompt_truncation(config, prompt_tokenizer, source)
    result["config"] = dataclasses.asdict(config)
    summary.write_json(output_dir / "probing.json", result)
    layer_curves.plot(result, output_dir / "probing.png")
    return result
