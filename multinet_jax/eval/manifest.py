"""The run manifest, `<output_dir>/run_manifest.json`: what a run is, so that resuming can prove it is the same run.

It records the settings that change predictions (`PREDICTION_SETTINGS`; the attention kernel's mode and fast path,
`models.attention`; the device layout, `device_layout`; the backend, device kind, jax versions and the jax settings
environment variables change, `runtime`),
content fingerprints of the checkpoint
(and the settings its path implies: a renamed copy of openpi's pi0_droid is sampled in other chunks) and the tokenizers, and per domain the MultiNet protocol as the run applies it (`domains.Protocol.applied`: prompt
format and length, decoding budget, image resizing, the ground truth's transform, ...) and a fingerprint of the data
files it reads (`multinet_jax.fingerprints`: names, sizes and content digests, so a moved copy matches and a changed
file does not). It is written before the first batch. An output folder that already holds predictions is continued
(`--resume`) or extended with more domains only when every recorded item equals the new run's; otherwise the run is
refused with one line naming each item that differs, and nothing in the folder is touched. Predictions without a
manifest cannot be verified and are refused the same way.

Adding a setting that changes predictions: add the `EvalConfig` field to `PREDICTION_SETTINGS`. Adding one that
does not: say why in `OTHER_SETTINGS`. Every field must be in exactly one of them (a test checks), so no setting
is left out by accident. A setting absent from an older manifest counts as different.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from multinet_jax import data, domains, fingerprints
from multinet_jax.eval import runners
from multinet_jax.models import attention, registry

FILENAME = "run_manifest.json"
FORMAT = "multinet_jax.run_manifest/v1"

# `EvalConfig` fields whose value changes the predictions: resuming with a different one is refused.
PREDICTION_SETTINGS = (
    "model",
    "split",
    "max_token_len",
    "action_horizon",
    "action_dim",
    "dtype",
    "num_flow_steps",
    "max_decoding_steps",
    "openpi_exact_decoding",
    "normalize_state",
    "temperature",
    "seed",
    "unnormalize",
    "unnorm_key",
    "asset_id",
    # Each sample's noise is its own (folded from its index), but XLA compiles each batch shape into another program
    # whose float rounding differs: tiny Pi0, float32, batch 2 vs 4, up to 3.8e-6 in 9 of 16 act2answer outputs and
    # 4.8e-7 in all 12 openx_bimanual actions; bfloat16, 7.8e-4 in 1 of 12.
    "batch_size",
)

# Every other `EvalConfig` field, and why two runs filling one output folder may differ in it.
OTHER_SETTINGS = {
    "checkpoint": "compared by content (the `checkpoint` fingerprint) and by the settings its path implies "
                  "(`checkpoint_settings`): a moved or copied checkpoint resumes unless its path names another openpi config",
    "tokenizer": "compared by content (the `tokenizers` fingerprints)",
    "fast_tokenizer": "compared by content (the `tokenizers` fingerprints)",
    "data_dir": "compared by content, per domain (the `domains` fingerprints)",
    "domains": "each domain has its own entry; a later run may add domains",
    "output_dir": "is where the manifest lives",
    "cache_dir": "holds conversions derived from the data, which is fingerprinted itself",
    "mesh": "compared as the device layout it resolves to (the manifest's `layout`; see `device_layout`)",
    "limit": "samples come in a fixed order, so a larger limit extends the same predictions",
    "resume": "decides whether existing predictions are continued, not what they are",
    "embedder_dir": "used by the metrics only, which are recomputed from the whole predictions file",
    "skip_similarity": "used by the metrics only, which are recomputed from the whole predictions file",
}


# Protocol entries (`domains.Protocol.applied`) added after manifests were first written, with the value a manifest
# without one is read as, so that the runs of every family it did not change still resume. `ground_truth`: the
# data's own; a Magma openx_bimanual / openx_wheeled_robot run written without it is refused (it may predate the
# transform MultiNet's script applied there, which is now reproduced: one predictions file would mix two scorings).
# `answers_in_text`: False, actions predicted (every run before Magma's Overcooked / quadrupedal scripts were encoded).
# `openpi_quantile_actions`: False, Pi0.5's and Pi0-FAST's actions unnormalized with the z-score rule (runs before
# openpi's quantile rule was applied to them; every other family's rule is unchanged). `action_probe_frame`
# (Act2Answer): "world", the displacement read in the tiles' frame (runs before it was read in the robot's base
# frame, whose left/right decisions were mirrored). `split_statistics` (Overcooked under --unnormalize=split): "exact",
# the float64 statistics (runs before MultiNet's float32 running ones were reproduced: 0.04% of indices differ).
# `image_size` (text domains of a PaliGemma checkpoint of another input size, pt_448's): 224, the size every run
# before the processor's own size was applied resized to. `lerobot_unnormalize` (SmolVLA's actions): False, openpi's
# z-score rule with its 1e-6 added to the std (runs before LeRobot's own rule was applied). `sampling_filters` (a
# sampled domain of a family sampling as Hugging Face's `generate`, Magma's and OpenVLA's): "whole_vocabulary", no
# top-k / top-p.
ADDED_PROTOCOL_ENTRIES = {"ground_truth": domains.GROUND_TRUTH_AS_IS, "answers_in_text": False,
                          "openpi_quantile_actions": False, "action_probe_frame": "world", "split_statistics": "exact",
                          "image_size": 224, "lerobot_unnormalize": False, "sampling_filters": "whole_vocabulary"}

# Protocol entries that versions before 2026-12-07 recorded as nominal where the model applied its own (Pi0-FAST's and
# Pi0.5's state prompts, OpenVLA's, SmolVLA's and Magma's prompts: the pipeline's 48 tokens for the model's own cut;
# OpenVLA's actions: a 256-token budget for one token per action dim). A resume accepts the entry as now recorded
# where the predictions prove it applied (`_corrections`); the record field whose value each prompt cut must have:
CUT_RECORD_FIELDS = {"max_prompt_tokens": runners.PROMPT_LIMIT,
                     "action_max_prompt_tokens": runners.ACTION_PROBE + runners.PROMPT_LIMIT}

# Asset flags whose content decides the prompt tokens (and Pi0-FAST's action tokens).
TOKENIZER_ASSETS = ("tokenizer", "fast_tokenizer")


class RunChangedError(ValueError):
    """An output folder holds results of a run that differs from this one (the message names each difference)."""


def settings(config: Any) -> dict[str, Any]:
    """The prediction settings of an `EvalConfig`, as JSON values."""
    return {name: json.loads(json.dumps(getattr(config, name))) for name in PREDICTION_SETTINGS}


def device_layout(mesh: Any) -> dict[str, Any]:
    """What decides each device's batch shape besides `--batch_size`: the processes and this host's mesh axes.

    A resumed run must keep it: a per-device batch of 2 instead of 4 (`--mesh=data:2` on two devices) moves tiny
    Pi0's float32 outputs as a batch size of 2 does (measured: 4.8e-7 in every openx_bimanual action); the model axis
    shards parameters (`sharding.MIN_SHARDED_SIZE` and up), which moves them by as much.
    """
    import jax

    return {"processes": jax.process_count(), "mesh": {name: int(size) for name, size in mesh.shape.items()}}


def runtime() -> dict[str, Any]:
    """What computes the predictions: the backend, its device kind, the jax and jaxlib versions, and the jax settings
    an environment variable can change for the same flags (`JAX_DEFAULT_PRNG_IMPL` and `JAX_THREEFRY_PARTITIONABLE`
    draw other flow noise from one --seed; `JAX_ENABLE_X64`, `JAX_DEFAULT_MATMUL_PRECISION` compute in other
    precisions), and the compiler's flags (`XLA_FLAGS`, its flags sorted: `--xla_backend_optimization_level=0` moved
    tiny Pi0's Open-X actions by up to 4.6e-4). Like the device layout, another one gives other numbers, and a token
    decoded differently is another answer: a resume under another is refused (`runtime_differs`)."""
    import jax
    import jaxlib

    return {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
            "jaxlib": jaxlib.__version__, "prng_impl": jax.config.jax_default_prng_impl,
            "threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
            "enable_x64": bool(jax.config.jax_enable_x64),
            "default_matmul_precision": jax.config.jax_default_matmul_precision,
            "xla_flags": sorted(os.environ.get("XLA_FLAGS", "").split())}


# Runtime entries added after runtimes were first recorded, read as jax's defaults in a manifest without them (the
# runs before were made under them unless an environment variable said otherwise, which nothing recorded).
ADDED_RUNTIME_ENTRIES = {"prng_impl": "threefry2x32", "threefry_partitionable": True, "enable_x64": False,
                         "default_matmul_precision": None, "xla_flags": []}


def domain_data_dir(config: Any, name: str) -> pathlib.Path:
    """The folder the domain's samples are read from (its split folder in MultiNet's layout)."""
    return data.split_dir(pathlib.Path(config.data_dir) / domains.lookup(name).folder, config.split)[0]


def located(location: str | pathlib.Path) -> dict[str, Any]:
    """Where an input is and its content fingerprint (what a manifest records of it)."""
    return {"path": str(fingerprints.as_path(location)), **fingerprints.fingerprint(location)}


def describe(config: Any, paths: Mapping[str, str | pathlib.Path], protocols: Mapping[str, Mapping[str, Any]],
             layout: Mapping[str, Any] | None = None, checkpoint_settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of `config`'s run, whose assets resolved to `paths` (by flag name; `assets.resolve_all`), whose
    domains run under `protocols` (by domain name; `loop.protocol_settings`) on devices laid out as `layout`
    (`device_layout`), and whose checkpoint's path implies `checkpoint_settings` (`registry.path_settings`).

    Fingerprints every input: call it before the long part. Without a "checkpoint" path the model is in memory
    (benchmarks, a model under training): it has no files to fingerprint, so such a run is never resumable.
    """
    tokenizers = {name: located(paths[name]) for name in TOKENIZER_ASSETS if name in paths}
    return {
        "format": FORMAT,
        "settings": settings(config),
        "attention": attention.manifest_entry(),
        "layout": None if layout is None else dict(layout),
        "runtime": runtime(),
        "checkpoint": located(paths["checkpoint"]) if "checkpoint" in paths else None,
        "checkpoint_settings": dict(checkpoint_settings or {}),
        "tokenizers": tokenizers,
        "domains": {name: {"protocol": dict(protocols[name]), "data": located(domain_data_dir(config, name))}
                    for name in config.domains},
    }


def _content(entry: Mapping[str, Any] | None) -> str | None:
    return None if entry is None else entry.get("sha256")


def differs(what: str, recorded: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> list[str]:
    """One line for a fingerprinted input that is not the recorded one."""
    if recorded is not None and current is not None and _content(recorded) == _content(current):
        return []
    if recorded is None or current is None:
        return [f"{what}: an in-memory model cannot be verified"]
    return [
        f"{what}: content differs (recorded {recorded.get('path')}: {recorded.get('files')} files, "
        f"{recorded.get('bytes')} bytes, sha256 {str(_content(recorded))[:12]}; now {current['path']}: "
        f"{current['files']} files, {current['bytes']} bytes, sha256 {str(_content(current))[:12]})"
    ]


def attention_differs(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line when the attention mode or the fast path it takes (`models.attention.manifest_entry`) differs."""
    if recorded.get("attention") == current["attention"]:
        return []
    return [f"attention (${attention.ENV_VAR}): recorded {recorded.get('attention')!r}, now {current['attention']!r}"]


def checkpoint_settings_differ(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line when the settings the checkpoint's path implies (`registry.path_settings`) differ; a manifest
    written before they were recorded reads as none applied."""
    before = recorded.get("checkpoint_settings", {})
    if before == current["checkpoint_settings"]:
        return []
    return [f"settings the checkpoint's path implies (openpi's training config): recorded {before!r}, "
            f"now {current['checkpoint_settings']!r}"]


def layout_differs(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line when the processes or mesh axes (`device_layout`) differ: each per-device batch shape rounds its own way."""
    if recorded.get("layout") == current["layout"]:
        return []
    return [f"device layout: recorded {recorded.get('layout')!r}, now {current['layout']!r} (keep --batch_size per "
            "device: XLA rounds each batch shape differently)"]


def runtime_differs(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line when the backend, device kind, jax / jaxlib version or a jax setting (`runtime`) differs; a manifest
    written before runtimes were recorded is not compared."""
    if recorded.get("runtime") is None:
        return []
    before = {**ADDED_RUNTIME_ENTRIES, **recorded["runtime"]}
    if before == current["runtime"]:
        return []
    changed = ", ".join(f"{key} {before.get(key)!r} -> {value!r}" for key, value in current["runtime"].items()
                        if before.get(key) != value)
    return [f"runtime: {changed} (other kernels round differently, and the run's predictions would mix both)"]


def _written_records(path: pathlib.Path) -> list[dict[str, Any]]:
    """The complete lines of a predictions file, read without touching it (a torn last line is left to the resume)."""
    data = path.read_bytes()
    records = []
    for number, line in enumerate(data[: data.rfind(b"\n") + 1].splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise RunChangedError(f"{path}: line {number} is not JSON ({error}); remove the file or fix the line") from None
    return records


def _corrections(output_dir: pathlib.Path, name: str, recorded: Mapping[str, Any], current: Mapping[str, Any],
                 model: str) -> dict[str, str]:
    """Protocol entries of domain `name` recorded otherwise than `current` says (`CUT_RECORD_FIELDS`) whose recorded
    value never applied: each maps to why. A prompt cut qualifies when every written record holds the cut now
    recorded; a decoding budget when none applies to the family's actions."""
    found, records = {}, None
    for key, field in CUT_RECORD_FIELDS.items():
        if key not in current or (key in recorded and recorded[key] == current[key]):
            continue
        if records is None:
            records = _written_records(output_dir / "predictions" / f"{name}.jsonl")
        if records and all(field in record and record[field] == current[key] for record in records):
            found[key] = f"its {len(records)} predictions each record {field} {current[key]!r}"
    budget = recorded.get("max_new_tokens")
    family, domain = registry.family(model), domains.lookup(name)
    if budget is not None and current.get("max_new_tokens") is None and domain.uses_actions \
            and family.one_token_per_action_dim:
        found["max_new_tokens"] = f"no budget applies: --model={model} decodes one token per action dim"
    if not family.decodes_tokens(domain):  # earlier versions recorded a budget and window for Act2Answer's text probe
        found.update({key: f"nothing decodes: --model={model} scores {name}'s options" for key in ("max_new_tokens", "decoding")
                      if recorded.get(key) is not None and current.get(key) is None})
    return found


def _protocol_differs(name: str, recorded: Mapping[str, Any] | None, current: Mapping[str, Any],
                      corrected: Iterable[str] = ()) -> list[str]:
    """One line per protocol setting of domain `name` that is not the recorded one (an entry added since the manifest
    was written reads as `ADDED_PROTOCOL_ENTRIES` says; `corrected` entries are not compared)."""
    if recorded is None:
        return [f"protocol of {name}: not recorded by the earlier run, now {current.get('name')!r}"]
    found = []
    for key, value in current.items():
        if key in corrected:
            continue
        field = f"protocol of {name}: {key} (domains.{name}.protocol.{key})"
        if key in recorded:
            if recorded[key] != value:
                found.append(f"{field} recorded {recorded[key]!r}, now {value!r}")
        elif key not in ADDED_PROTOCOL_ENTRIES:
            found.append(f"{field} not recorded, now {value!r}")
        elif ADDED_PROTOCOL_ENTRIES[key] != value:
            found.append(f"{field} not recorded (written before it was: read as {ADDED_PROTOCOL_ENTRIES[key]!r}), "
                         f"now {value!r}")
    return found


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any], compared_domains: Iterable[str],
                corrected: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """Every recorded item that differs from `current`, one description each (empty: the same run); `corrected`: per
    domain, protocol entries an earlier version recorded wrongly (`_corrections`), not compared."""
    found = []
    recorded_settings = recorded.get("settings", {})
    for name, value in current["settings"].items():
        if name not in recorded_settings:
            found.append(f"--{name}: not recorded by the earlier run, now {value!r}")
        elif recorded_settings[name] != value:
            # A setting only some domains read (a budget, a temperature) is refused where the new domains read none:
            # the way to extend such a folder is to list one of its domains that reads it again.
            hint = (" (if the domains added now do not read it, which refuses it, list one of the folder's earlier "
                    "domains too)") if value is None else ""
            found.append(f"--{name}: recorded {recorded_settings[name]!r}, now {value!r}{hint}")
    found += attention_differs(recorded, current)
    found += layout_differs(recorded, current)
    found += runtime_differs(recorded, current)
    found += differs("checkpoint", recorded.get("checkpoint"), current["checkpoint"])
    found += checkpoint_settings_differ(recorded, current)
    recorded_tokenizers = recorded.get("tokenizers", {})
    for name in sorted(set(recorded_tokenizers) | set(current["tokenizers"])):
        if name not in recorded_tokenizers or name not in current["tokenizers"]:
            found.append(f"--{name}: {'not given now' if name in recorded_tokenizers else 'not given before'}")
        else:
            found += differs(f"--{name}", recorded_tokenizers[name], current["tokenizers"][name])
    for name in compared_domains:
        recorded_domain = recorded.get("domains", {}).get(name)
        if recorded_domain is None:
            found.append(f"data of {name}: its predictions are not recorded in the manifest")
        else:
            found += _protocol_differs(name, recorded_domain.get("protocol"), current["domains"][name]["protocol"],
                                       (corrected or {}).get(name, ()))
            found += differs(f"data of {name}", recorded_domain.get("data"), current["domains"][name]["data"])
    return found


def domains_with_results(output_dir: pathlib.Path) -> list[str]:
    """Domains whose predictions file exists in `output_dir` (results this run must agree with)."""
    return sorted(path.stem for path in (output_dir / "predictions").glob("*.jsonl"))


def read(output_dir: pathlib.Path) -> dict[str, Any] | None:
    """The manifest in `output_dir`, or None when there is none."""
    path = output_dir / FILENAME
    if not path.exists():
        return None
    try:
        recorded = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunChangedError(f"{path}: unreadable run manifest ({error}); use a new --output_dir") from None
    if not isinstance(recorded, dict) or recorded.get("format") != FORMAT:
        raise RunChangedError(f"{path}: not a {FORMAT} run manifest; use a new --output_dir")
    return recorded


def check(output_dir: pathlib.Path, current: Mapping[str, Any]) -> dict[str, Any]:
    """Refuses a run that differs from the results already in `output_dir`; returns the manifest to `record`.

    Only what existing predictions depend on is compared: the global settings when any predictions exist, and a
    domain's data when that domain has predictions. Entries of domains with results that this run does not
    evaluate are kept in the returned manifest.
    """
    with_results = domains_with_results(output_dir)
    if not with_results:
        return dict(current)
    recorded = read(output_dir)
    if recorded is None:
        raise RunChangedError(
            f"{output_dir}: holds predictions ({', '.join(with_results)}) but no {FILENAME}, so they cannot be "
            "verified to come from this run; use a new --output_dir"
        )
    compared = [name for name in current["domains"] if name in with_results]
    corrected = {name: _corrections(output_dir, name, recorded_protocol, current["domains"][name]["protocol"],
                                    current["settings"]["model"])
                 for name in compared if (recorded_protocol := recorded.get("domains", {}).get(name, {}).get("protocol"))}
    found = differences(recorded, current, compared, corrected)
    if found:
        raise RunChangedError(
            f"{output_dir / FILENAME}: the results in this folder come from another run: {'; '.join(found)}. "
            "Use a new --output_dir, or the recorded settings and inputs"
        )
    for name, entries in corrected.items():
        for key, why in entries.items():
            print(f"note: {output_dir / FILENAME}: protocol of {name}: {key} recorded "
                  f"{recorded['domains'][name]['protocol'].get(key)!r} by an earlier version, now "
                  f"{current['domains'][name]['protocol'][key]!r} ({why})", file=sys.stderr)
    kept = {name: entry for name, entry in recorded.get("domains", {}).items() if name in with_results}
    return {**current, "domains": {**kept, **current["domains"]}}


def record(output_dir: pathlib.Path, checked: Mapping[str, Any]) -> None:
    """Writes the manifest `check` returned (atomically; before the first prediction)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / FILENAME
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(checked, indent=1) + "\n")
    temporary.replace(path)


def unclassified_settings(config_class: type) -> list[str]:
    """`EvalConfig` fields in neither PREDICTION_SETTINGS nor OTHER_SETTINGS (must be empty)."""
    names = {field.name for field in dataclasses.fields(config_class)}
    return sorted(names - set(PREDICTION_SETTINGS) - set(OTHER_SETTINGS))
