"""Data pipeline throughput: samples/s per domain and Grain worker scaling for Open-X.

    .venv/bin/python -m benchmarks.data_throughput

Open-X: MultiNet's bimanual sample (8 real steps, 256x256 images) converted to step-level
ArrayRecord and tiled to `OPENX_STEPS` records, then read -> decoded -> resized/padded to 224 ->
[-1, 1] -> prompt tokenized (PaliGemma tokenizer, 257,152-piece vocab built from the shared Gemma
model) -> batched, with 0, 1 and 2 Grain workers. Other domains: their real shared files, 0 workers
(small splits tiled to a few hundred samples). Reports the median over `ITERS` full passes (after
one warm-up pass) of samples / wall time, worker start-up included, and the 1-minute load average
of this shared machine when the run started.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import tempfile
import time

from absl import app

from benchmarks.common import write_report
from multinet_jax import data
from multinet_jax.data import openx, pipeline, steps
from multinet_jax.tokenizers import PaliGemmaTokenizer, build_paligemma_vocab

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
SAMPLE = SHARED / "data" / "multinet_sample"
BATCH_SIZE = 16
OPENX_STEPS = 2048
ITERS = 3
DOMAINS = {  # domain -> (data_dir, split, samples per timed run: small splits are tiled to this many)
    "openx_multi_embodiment": (SAMPLE / "openx_multi_embodiment", "public", 128),
    "overcooked_ai": (SAMPLE / "overcooked_ai", "public", 256),
    "piqa": (SHARED / "data" / "piqa_validation", None, 1838),
    "odinw": (SAMPLE / "odinw", "public", 256),
    "bfcl": (SHARED / "data" / "bfcl_v3", None, 400),
}


class Tiled:
    """`source` repeated up to `length` samples, so tiny real splits show their steady per-sample cost."""

    def __init__(self, source, length: int):
        self.source, self.length, self.dataset = source, length, source.dataset

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return self.source[index % len(self.source)]


def tiled_openx(work_dir: pathlib.Path) -> pathlib.Path:
    """The bimanual sample's converted steps written `OPENX_STEPS` times over (a bigger real-format dataset)."""
    converted = openx.ensure_converted(SAMPLE / "openx_bimanual" / "public", cache_dir=work_dir / "cache")
    source = steps.StepSource(converted)
    records = (steps.encode_step(source[index % len(source)]) for index in range(OPENX_STEPS))
    out_dir = work_dir / "openx_tiled"
    out_dir.mkdir()
    manifest = dict(source.manifest, num_steps=OPENX_STEPS, files=steps.write_steps(records, out_dir, 4096))
    (out_dir / steps.MANIFEST).write_text(json.dumps(manifest))
    return out_dir


def timed_pass(dataset) -> tuple[int, float]:
    """(valid samples, seconds) of one full pass, iterator creation (and worker start-up) included."""
    start = time.perf_counter()
    seen = sum(int(batch["_mask"].sum()) for batch in dataset)
    return seen, time.perf_counter() - start


def measure(dataset) -> dict:
    timed_pass(dataset)  # warm-up: page cache, tokenizer, thread pools
    runs = [timed_pass(dataset) for _ in range(ITERS)]
    rates = [count / seconds for count, seconds in runs]
    return {"samples": runs[0][0], "samples_per_s_median": statistics.median(rates), "samples_per_s_runs": rates}


def main(argv: list[str]) -> None:
    del argv  # absl parses flags first: Grain's worker processes read them
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = pathlib.Path(tmp)
        tokenizer = PaliGemmaTokenizer(build_paligemma_vocab(SHARED / "tokenizers" / "gemma_tokenizer.model", work_dir / "paligemma.model"))
        openx_dir = tiled_openx(work_dir)
        results: dict = {"load_average_1m_at_start": os.getloadavg()[0], "batch_size": BATCH_SIZE, "tokenizer": "multinet_jax.tokenizers.PaliGemmaTokenizer (257,152 vocab)", "openx_bimanual": {}}
        for num_workers in (0, 1, 2):
            openx_data = data.load(
                "openx_bimanual", openx_dir, tokenizer=tokenizer, batch_size=BATCH_SIZE, shard_index=0, shard_count=1, num_workers=num_workers
            )
            results["openx_bimanual"][f"workers_{num_workers}"] = measure(openx_data)
            print(num_workers, results["openx_bimanual"][f"workers_{num_workers}"], flush=True)
        results["other_domains_workers_0"] = {}
        for domain, (data_dir, split, length) in DOMAINS.items():
            source = Tiled(data.make_source(domain, data_dir, split=split, cache_dir=work_dir / "cache"), length)
            results["other_domains_workers_0"][domain] = measure(pipeline.build(source, tokenizer=tokenizer, protocol=data.domain_protocol(domain), batch_size=BATCH_SIZE))
            print(domain, results["other_domains_workers_0"][domain], flush=True)
    write_report("data_throughput", results)


if __name__ == "__main__":
    app.run(main)
