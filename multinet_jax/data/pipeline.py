"""The Grain pipeline every domain shares: index -> raw sample -> model inputs -> fixed-shape batch.

Order and sharding: samples are numbered 0..N-1 in the source's deterministic order (`limit`
keeps the first N). Host `shard_index` of `shard_count` takes samples shard_index,
shard_index + shard_count, ... (disjoint, union = all). With batching every host gets the same
number of batches, ceil(N / shard_count) rows padded to a multiple of `batch_size`, so multi-host
jitted steps stay in lockstep; padding rows and skipped bad records have `_mask` False and
`sample_index` -1 / their own index, and never reach the metrics.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol, Sequence

import grain
import numpy as np

from multinet_jax.data import transforms
from multinet_jax.data.bad_records import BadRecord, BadRecordError, check_on_bad_record, log_skipped
from multinet_jax import domains

VALID_KEY = "_valid"
# Keys of a batch that are model inputs (the fixtures' `io.npz` observation keys).
MODEL_INPUT_PREFIXES = ("image/", "image_mask/")
MODEL_INPUT_KEYS = ("state", "state_dim", "tokenized_prompt", "tokenized_prompt_mask", "token_ar_mask", "token_loss_mask")
# Per-sample arrays whose length varies (bucketed prompts): a batch pads them with 0 to its longest.
RAGGED_KEYS = ("tokenized_prompt", "tokenized_prompt_mask")


class Source(Protocol):
    """Random access to a domain's raw samples, in a deterministic order.

    `source[i]` is a dict with `id`, `image` (uint8 [h, w, 3] or None), `state` (float array or
    None), `prompt`, `ground_truth` and the domain's extras; a broken record raises BadRecordError.
    """

    dataset: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


class SampleBuilder:
    """global sample index -> model-ready sample, images uint8 (or a masked placeholder for padding / skipped records).

    `protocol` (the domain's, `domains.Protocol`) decides the prompt format and truncation length and how the
    image is resized; `max_token_len` overrides its truncation length (None: the protocol's). `image_size`: the model's
    input size, which the Hugging Face PaliGemma processor's resize targets (its checkpoint's: pt-448's is 448).
    """

    def __init__(
        self,
        source: Source,
        *,
        tokenizer: transforms.PromptTokenizer | None,
        protocol: domains.Protocol,
        cameras: Sequence[str],
        on_bad_record: str,
        max_token_len: int | None = None,
        image_size: int = transforms.IMAGE_SIZE,
    ):
        self.source = source
        self.tokenizer = tokenizer
        self.protocol = protocol
        self.max_token_len = protocol.truncation_length(max_token_len)
        self.cameras = tuple(cameras)
        self.image_size = image_size
        self.on_bad_record = check_on_bad_record(on_bad_record)
        self.bad_records: list[BadRecord] = []  # those met in this process

    def model_inputs(self, image: np.ndarray | None, state: np.ndarray | None, prompt: str) -> dict[str, np.ndarray]:
        inputs = transforms.camera_inputs(image, self.cameras, blank_image=self.protocol.blank_image,
                                          paligemma_resize=self.image_size if self.protocol.resizes_on_host else None)
        inputs["state"] = transforms.pad_state(state)
        inputs["state_dim"] = transforms.state_dim(state)
        if self.tokenizer is not None:
            inputs.update(transforms.tokenize(self.tokenizer, prompt, self.protocol.prompt_format.value, self.max_token_len))
        return inputs

    def placeholder(self, index: int, bad_record: str | None = None) -> dict[str, Any]:
        """All-zero model inputs for padding rows (index -1) and skipped bad records."""
        sample = {"id": None, "sample_index": np.int64(index), "prompt": "", "ground_truth": None, "bad_record": bad_record}
        sample.update(self.model_inputs(None, None, ""))
        if self.tokenizer is not None:
            sample["tokenized_prompt"] = np.zeros_like(sample["tokenized_prompt"])
            sample["tokenized_prompt_mask"] = np.zeros_like(sample["tokenized_prompt_mask"])
        sample[VALID_KEY] = np.asarray(False)
        return sample

    def __call__(self, index: int) -> dict[str, Any]:
        if index < 0:
            return self.placeholder(-1)
        try:
            raw = self.source[index]
        except BadRecordError as error:
            if self.on_bad_record == "fail":
                raise
            self.bad_records.append(error.bad_record)
            log_skipped(error.bad_record)
            return self.placeholder(index, str(error.bad_record))
        sample = {key: value for key, value in raw.items() if key not in ("image", "state")}
        sample.update(self.model_inputs(raw["image"], raw["state"], raw["prompt"]))
        sample["sample_index"] = np.int64(index)
        sample[VALID_KEY] = np.asarray(True)
        return sample


class ShardIndex:
    """Host-local position -> global sample index (-1 past the end: a padding row)."""

    def __init__(self, shard_index: int, shard_count: int, total: int):
        self.shard_index, self.shard_count, self.total = shard_index, shard_count, total

    def __call__(self, position: int) -> int:
        index = self.shard_index + position * self.shard_count
        return index if index < self.total else -1


class Batcher:
    """Rows -> one batch: arrays stacked, other values as lists.

    A row lacking a key, and every padding / skipped row's image, gets zeros shaped like a valid row's value;
    prompts (`RAGGED_KEYS`) are right-padded with 0 to the batch's longest. A camera whose valid rows differ in
    size (Overcooked's layouts render at different sizes) stays a list of per-row uint8 images, which the model's
    observation boundary brings to its size row by row exactly as its own resize would (`models.observation`).
    """

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        template: dict[str, Any] = {}  # every key of any row; a valid row's value decides how it batches
        for row in sorted(rows, key=lambda row: not row[VALID_KEY]):
            for key, value in row.items():
                template.setdefault(key, value)
        batch: dict[str, Any] = {"_mask": np.array([bool(row[VALID_KEY]) for row in rows])}
        for key, example in template.items():
            if key == VALID_KEY:
                continue
            if key in RAGGED_KEYS:
                length = max(len(row[key]) for row in rows if key in row)
                batch[key] = np.stack([np.pad(row[key], (0, length - len(row[key]))) if key in row else np.zeros(length, example.dtype) for row in rows])
            elif isinstance(example, (np.ndarray, np.generic)):
                zero = np.zeros_like(example)
                values = [row.get(key, zero) if row[VALID_KEY] or not key.startswith("image/") else zero for row in rows]
                same_shape = len({np.shape(value) for value in values}) == 1
                if not same_shape and not key.startswith("image/"):
                    described = ", ".join(f"{row.get('id')!r}: {list(np.shape(value))}" for row, value in zip(rows, values))
                    raise ValueError(f"{key} differs in shape within one batch ({described})")
                batch[key] = np.stack(values) if same_shape else values
            else:
                batch[key] = [row.get(key) for row in rows]
        return batch


def finish_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """A built sample as `load` yields it unbatched: without the validity flag."""
    return {key: value for key, value in sample.items() if key != VALID_KEY}


def model_inputs(batch: dict[str, Any]) -> dict[str, np.ndarray]:
    """A batch's model inputs as host arrays (a camera whose rows differ in size as its list of rows), with
    `sample_index` (padding rows' -1 as 0) for per-sample noise."""
    inputs = {key: value if isinstance(value, list) else np.asarray(value) for key, value in batch.items()
              if key in MODEL_INPUT_KEYS or key.startswith(MODEL_INPUT_PREFIXES)}
    inputs["sample_index"] = np.maximum(np.asarray(batch["sample_index"], np.int32), 0)
    return inputs


def _is_valid(sample: dict[str, Any]) -> bool:
    return bool(sample[VALID_KEY])


def check_limit(limit: int | None) -> None:
    """A sample limit is a positive count (0 would read as an empty dataset)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of samples, got {limit!r}")


def build(
    source: Source,
    *,
    tokenizer: transforms.PromptTokenizer | None = None,
    protocol: domains.Protocol = domains.OPENX_PROTOCOL,
    max_token_len: int | None = None,
    cameras: Sequence[str] = transforms.PI0_CAMERAS,
    batch_size: int | None = None,
    limit: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    on_bad_record: str = "fail",
    num_workers: int = 0,
    image_size: int = transforms.IMAGE_SIZE,
) -> grain.MapDataset | grain.IterDataset:
    """The Grain dataset of one domain's samples, or of fixed-shape batches when `batch_size` is set.

    `protocol`: the domain's (`domains.Protocol`: prompt format, truncation length, image resizing);
    `max_token_len` overrides its truncation length; `image_size`: the model's input size (`SampleBuilder`). With `num_workers` > 0 samples are decoded in that many
    processes (`mp_prefetch`, order kept) and an IterDataset is returned.
    """
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
    check_limit(limit)
    total = len(source) if limit is None else min(limit, len(source))
    builder = SampleBuilder(source, tokenizer=tokenizer, protocol=protocol, max_token_len=max_token_len, cameras=cameras,
                            on_bad_record=on_bad_record, image_size=image_size)
    if batch_size is None:
        local = len(range(shard_index, total, shard_count))
        dataset = grain.MapDataset.range(local).map(ShardIndex(shard_index, shard_count, total)).map(builder)
        return _in_workers(dataset.filter(_is_valid), num_workers).map(finish_sample)
    per_host = math.ceil(total / shard_count)
    local = math.ceil(per_host / batch_size) * batch_size
    logging.debug("%s: %d samples, %d rows on host %d/%d", source.dataset, total, local, shard_index, shard_count)
    dataset = grain.MapDataset.range(local).map(ShardIndex(shard_index, shard_count, total)).map(builder)
    dataset = dataset.batch(batch_size, batch_fn=Batcher())
    return _in_workers(dataset, num_workers)


def _in_workers(dataset: grain.MapDataset, num_workers: int) -> grain.MapDataset | grain.IterDataset:
    if num_workers == 0:
        return dataset
    return dataset.to_iter_dataset().mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
