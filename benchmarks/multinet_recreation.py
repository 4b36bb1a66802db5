"""MultiNet v1.0's own Pi0 loop, re-created: what our speed-ups are measured against (no data stack needed).

MultiNet's Open-X script calls openpi's `sample_actions` eagerly, encodes every camera slot (its masks only zero
the missing images) and clears JAX's caches after every batch of 4, so nothing compiled is ever reused.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import jax

MULTINET_BATCH = 4


def multinet_pipeline(model: Any, batches: Sequence[dict], num_batches: int) -> dict:
    """MultiNet's loop: eager sample_actions on all cameras, caches cleared after every batch."""
    seconds = []
    for batch in batches[:num_batches]:
        start = time.perf_counter()
        with jax.disable_jit():
            jax.block_until_ready(model.sample_actions(batch, rng=jax.random.key(0), skip_absent_cameras=False))
        jax.clear_caches()
        seconds.append(time.perf_counter() - start)
    per_batch = statistics.median(seconds)
    return {"batch_size": MULTINET_BATCH, "batches_timed": len(seconds), "seconds_per_batch": seconds,
            "seconds_per_sample": per_batch / MULTINET_BATCH}
