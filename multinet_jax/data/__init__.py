"""MultiNet v1.0 data: one Grain pipeline per domain, reading each publisher's own format.

    ds = multinet_jax.data.load("openx_bimanual", "data/openx_bimanual", split="public",
                                tokenizer=tokenizer, batch_size=8)
    for batch in ds: ...   # image/<camera> [8,h,w,3] uint8, state [8,32], tokenized_prompt [8,L], _mask [8], ...

Domains (module = source format): `openx_<name>` (openx.py: MultiNet translated shards, RLDS
tfrecord/ArrayRecord builder dirs, converted steps), `openx_multi_embodiment` (robovqa.py),
`overcooked_ai` (overcooked.py), `piqa` (piqa.py), `sqa3d` (sqa3d.py), `odinw` (odinw.py),
`bfcl` (bfcl.py), `act2answer` (act2answer_episodes.py: an Act2Answer item set, one sample per item and
layout). Every sample has `id`, `sample_index`, the model inputs, `prompt` and
`ground_truth` in the `score` command's per-domain format.
"""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

import grain
import numpy as np

from multinet_jax import domains
from multinet_jax.data import pipeline, stats, transforms
from multinet_jax.data.bad_records import BadRecord, BadRecordError
from multinet_jax.data.pipeline import MODEL_INPUT_PREFIXES, Source, model_inputs

ROBOVQA_DOMAIN = "openx_multi_embodiment"  # MultiNet's RoboVQA, under its Open-X name

__all__ = ["load", "load_source", "make_source", "split_dir", "action_stats", "source_action_stats", "domain_protocol", "inspect",
           "BadRecord", "BadRecordError", "STATS_KINDS"]


def split_dir(data_dir: pathlib.Path, split: str | None) -> tuple[pathlib.Path, str | None]:
    """`<data_dir>/<split>` when that folder exists (MultiNet's layout), else (data_dir, split)."""
    if split is not None and (data_dir / split).is_dir():
        return data_dir / split, None
    return data_dir, split


def _no_split(domain: str, directory: pathlib.Path, split: str | None) -> pathlib.Path:
    if split is not None:
        raise FileNotFoundError(f"{directory / split}: no such split folder of {domain} ({_folders(directory)})")
    return directory


def _subfolders(directory: pathlib.Path) -> list[str]:
    """The names of `directory`'s folders, hidden ones left out, sorted."""
    return sorted(path.name for path in directory.iterdir() if path.is_dir() and not path.name.startswith("."))


def _folders(directory: pathlib.Path) -> str:
    names = _subfolders(directory)
    return f"its folders: {', '.join(names)}" if names else "it has no folders"


def make_source(
    domain: str,
    data_dir: str | pathlib.Path,
    *,
    split: str | None = None,
    cache_dir: str | pathlib.Path | None = None,
    func_doc_dir: str | pathlib.Path | None = None,
    frames_dir: str | pathlib.Path | None = None,
    instruction_prompt: bool = False,
) -> Source:
    """The random-access source of `domain`'s raw samples (the registry).

    `func_doc_dir` (BFCL): the function docs folder. `frames_dir` (Act2Answer): simulator first frames
    `<item id>_<layout>.png` to use instead of the rendered composites. `instruction_prompt` (Open-X): each sample
    also holds MultiNet's VLM instruction (`prompts.INSTRUCTION_PROMPT`), the question of a protocol answering
    actions in text; it prints the split's statistics and is defined only for the datasets and action dims of
    MultiNet's definitions, so only the runs that ask it need a split to fit them (Overcooked's always holds it).
    `data_dir` is the domain's own folder (`eval --data_dir` is the folder above the domains' folders); given the one
    above, the error says which folder to pass.
    """
    domain = domains.canonical(domain)
    data_dir = pathlib.Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{domain}: data_dir {data_dir} is not a directory")
    try:
        return _make_source(domain, data_dir, split, cache_dir, func_doc_dir, frames_dir, instruction_prompt)
    except FileNotFoundError as error:
        folder = data_dir / domains.lookup(domain).folder
        if folder.is_dir():
            raise FileNotFoundError(f"{error}; {data_dir} holds {domain}'s folder: pass data_dir={folder} "
                                    "(eval's --data_dir is the folder above the domains' folders)") from None
        names = _subfolders(data_dir)
        if split is None and names:  # MultiNet's <domain>/<split>/ layout, no split named
            raise FileNotFoundError(f"{error}; no split was given and {data_dir} holds the folders {', '.join(names)}: "
                                    "pass --split=<name> (split=<name> to data.load)") from None
        raise


def _make_source(domain: str, data_dir: pathlib.Path, split: str | None, cache_dir: str | pathlib.Path | None,
                 func_doc_dir: str | pathlib.Path | None, frames_dir: str | pathlib.Path | None,
                 instruction_prompt: bool) -> Source:
    """`make_source` once the domain is canonical and `data_dir` a directory."""
    directory, split = split_dir(data_dir, split)
    cache_dir = pathlib.Path(cache_dir) if cache_dir else None
    if domain.startswith("openx_"):
        from multinet_jax.data import openx, robovqa

        if split is not None and not openx.is_rlds_builder(directory):  # a TFDS split is only for builder dirs
            _no_split(domain, directory, split)
        sample_fn = robovqa.robovqa_sample if domain == ROBOVQA_DOMAIN else openx.openx_sample
        return openx.OpenxSource(directory, domain, sample_fn, split=split, cache_dir=cache_dir,
                                  instruction_prompt=instruction_prompt)
    if domain == "overcooked_ai":
        from multinet_jax.data.overcooked import OvercookedSource

        return OvercookedSource(_no_split(domain, directory, split), domain)
    if domain == "piqa":
        from multinet_jax.data.piqa import PiqaSource

        return PiqaSource(_no_split(domain, directory, split), domain)
    if domain == "sqa3d":
        from multinet_jax.data.sqa3d import Sqa3dSource

        return Sqa3dSource(directory, split, domain)
    if domain == "odinw":
        from multinet_jax.data.odinw import OdinwSource

        return OdinwSource(_no_split(domain, directory, split), domain)
    if domain == "bfcl":
        from multinet_jax.data.bfcl import BfclSource

        return BfclSource(_no_split(domain, directory, split), domain, func_doc_dir=func_doc_dir)
    if domain == "act2answer":
        from multinet_jax.data.act2answer_episodes import Act2AnswerSource

        return Act2AnswerSource(_no_split(domain, directory, split), domain, frames_dir=frames_dir)
    raise ValueError(f"{domain}: no data source reads this domain")


def _default_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    if shard_index is None and shard_count is None:
        import jax

        return jax.process_index(), jax.process_count()
    if shard_index is None or shard_count is None:
        raise ValueError("give both shard_index and shard_count, or neither (then jax.process_index/count)")
    return shard_index, shard_count


def load(
    domain: str,
    data_dir: str | pathlib.Path,
    *,
    split: str | None = None,
    cache_dir: str | pathlib.Path | None = None,
    func_doc_dir: str | pathlib.Path | None = None,
    frames_dir: str | pathlib.Path | None = None,
    **options: Any,
) -> grain.MapDataset | grain.IterDataset:
    """`domain`'s Grain dataset: `make_source` (the first keywords) then `load_source` (`options`: tokenizer,
    batch_size, limit, shards, on_bad_record, max_token_len, cameras, num_workers)."""
    source = make_source(domain, data_dir, split=split, cache_dir=cache_dir, func_doc_dir=func_doc_dir, frames_dir=frames_dir)
    return load_source(source, **options)


def load_source(
    source: Source,
    *,
    tokenizer: transforms.PromptTokenizer | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    on_bad_record: str = "fail",
    max_token_len: int | None = None,
    cameras: Sequence[str] = transforms.PI0_CAMERAS,
    num_workers: int = 0,
    protocol: domains.Protocol | None = None,
    image_size: int = transforms.IMAGE_SIZE,
) -> grain.MapDataset | grain.IterDataset:
    """A source's Grain dataset: samples, or fixed-shape batches with a `_mask` when `batch_size` is set. A caller
    that also counts or checks the source (the evaluator, the probe loop) opens the data once and passes it here.

    Prompts and images follow `protocol` (None: the domain's MultiNet protocol, `domains.Protocol`); `max_token_len`
    truncates every prompt at that length instead of the protocol's (None: the protocol's; the sample's
    `prompt_tokens` tells the full length); `image_size`: the model's input size, where the protocol resizes images
    as Hugging Face's PaliGemma processor of that checkpoint does. `num_workers` > 0 decodes in that many processes (order kept;
    needs absl flags parsed, as under `absl.app.run`). Bad records raise `BadRecordError`
    (`on_bad_record="fail"`) or are logged and yielded masked (`"skip"`: `_mask` False and the message in
    `bad_record`; dropped when unbatched). Shards: both or neither (then `jax.process_index/count`).
    """
    shard_index, shard_count = _default_shard(shard_index, shard_count)
    return pipeline.build(
        source,
        tokenizer=tokenizer,
        protocol=domain_protocol(source.dataset) if protocol is None else protocol,
        max_token_len=max_token_len,
        cameras=cameras,
        batch_size=batch_size,
        limit=limit,
        shard_index=shard_index,
        shard_count=shard_count,
        on_bad_record=on_bad_record,
        num_workers=num_workers,
        image_size=image_size,
    )


def domain_protocol(domain: str) -> domains.Protocol:
    """MultiNet's protocol for a domain name or alias."""
    return domains.lookup(domain).protocol


STATS_KINDS = ("multinet", "exact")


def action_stats(
    domain: str,
    data_dir: str | pathlib.Path,
    *,
    split: str | None = None,
    cache_dir: str | pathlib.Path | None = None,
    kind: str = "exact",
) -> dict[str, Any] | None:
    """Per-dim count/min/max/mean/std/q01/q99 of the ground-truth actions; None for text-answer domains.

    Open-X: from the conversion manifest (computed once, cached); `kind="exact"`: float64 mean and
    population std, histogram quantiles; `kind="multinet"`: MultiNet v1.0's own split statistics,
    reproduced bit for bit (float32 sums, `sqrt(E[x^2] - E[x]^2 + 1e-8)`, exact quantiles; `stats.py`); for the
    domains whose ground truth MultiNet rebuilt from the action dict, over the rebuilt actions (numpy's mean and
    population std for `kind="multinet"`, as MultiNet recomputed them).
    Overcooked: over the joint action indices (1 dim); `kind="multinet"`: the mean and std MultiNet's Pi0 script
    accumulated with openpi's float32 `RunningStats` over its layout-wise batches of 5 (`stats.openpi_running_mean_std`,
    5e-5 relative from the exact ones on 100k actions, which moves the rounded index of 0.04% of predictions), the
    other entries exact.
    """
    return source_action_stats(make_source(domain, data_dir, split=split, cache_dir=cache_dir), kind=kind)


def source_action_stats(source: Source, *, kind: str = "exact") -> dict[str, Any] | None:
    """`action_stats` of a source `make_source` opened already."""
    if kind not in STATS_KINDS:
        raise ValueError(f"kind must be one of {STATS_KINDS}, got {kind!r}")
    domain = domains.canonical(source.dataset)
    if domain.startswith("openx_"):
        return source.action_stats(kind)
    if domain == "overcooked_ai":
        exact = stats.compute_action_stats(source.joint_actions().astype(np.float64)[:, None])
        if kind == "exact":
            return exact
        mean, std = stats.openpi_running_mean_std(source.multinet_batches())
        return {**exact, "mean": mean.astype(np.float64).tolist(), "std": std.astype(np.float64).tolist()}
    return None


def _describe(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)):
        return {"dtype": str(value.dtype), "shape": list(np.shape(value))}
    return {"type": type(value).__name__}


def inspect(
    domain: str,
    data_dir: str | pathlib.Path,
    *,
    split: str | None = None,
    limit: int | None = None,
    cache_dir: str | pathlib.Path | None = None,
    frames_dir: str | pathlib.Path | None = None,
) -> dict[str, Any]:
    """Validate a dataset before a long run: counts, fields, one decoded sample, action stats, every bad record."""
    pipeline.check_limit(limit)
    domain = domains.canonical(domain)
    source = make_source(domain, data_dir, split=split, cache_dir=cache_dir, frames_dir=frames_dir)
    total = len(source) if limit is None else min(limit, len(source))
    builder = pipeline.SampleBuilder(source, tokenizer=None, protocol=domain_protocol(domain), cameras=transforms.PI0_CAMERAS, on_bad_record="skip")
    first_valid = None
    for index in range(total):
        sample = builder(index)
        if first_valid is None and sample[pipeline.VALID_KEY]:
            first_valid = sample
    split_stats = source_action_stats(source)
    shown = pipeline.finish_sample(first_valid) if first_valid else {}
    report: dict[str, Any] = {
        "domain": domain,
        "data_dir": str(data_dir),
        "split": split,
        "num_samples": len(source),
        "num_checked": total,
        "action_dim": split_stats["size"][0] if split_stats else None,
        "action_stats": split_stats,
        "num_bad_records": len(builder.bad_records),
        "bad_records": [str(bad) for bad in builder.bad_records],
        "fields": {key: _describe(value) for key, value in shown.items()},
        "sample": {key: value for key, value in shown.items() if not isinstance(value, np.ndarray) or value.ndim == 0},
    }
    if hasattr(source, "steps"):
        manifest = source.steps.manifest
        report.update(num_episodes=manifest["num_episodes"], step_fields=manifest["features"], converted_dir=str(source.steps.directory))
    return report
