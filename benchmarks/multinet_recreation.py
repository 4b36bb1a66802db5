"""MultiNet v1.0's own Pi0 loop, re-created: what our speed-ups are measured against (no data stack needed).

MultiNet's Open-X script (`src/eval/profiling/openpi/scripts/openx_inference.py`, `evaluate_model`) calls openpi's
`model.sample_actions(subkey, observation, num_steps=10)` plainly: neither jitted nor under `jax.disable_jit()`, so
JAX dispatches it op by op, except that each `lax.while_loop` / `lax.scan` body (the flow steps, the layer scans) is
compiled and run as one program. It encodes every camera slot (its masks only zero the missing images), and after
every batch of 4 its `_cleanup_memory` calls `jax.clear_caches()`, which drops those compiled bodies and the per-op
executables: every batch compiles them again, so the re-creation clears the caches after each batch too.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from multinet_jax.models import pi0, registry

MULTINET_BATCH = 4
MULTINET_FLOW_STEPS = 10  # openx_inference.py's `ModelConfig.DEFAULT_NUM_STEPS`


def recreates(family: str) -> bool:
    """Whether the loop can run on `family`: MultiNet ran openpi's flow sampler, which openpi's flow models share."""
    spec = registry.family(family)
    return spec.checkpoint_format == "openpi" and spec.action_decoding == "flow"


def multinet_pipeline(model: pi0.Pi0Model, batches: Sequence[dict], num_batches: int) -> dict[str, Any]:
    """MultiNet's loop on an openpi flow model (Pi0 / Pi0.5): the un-jitted sampler called plainly on every camera,
    caches cleared after every batch; the time per batch counts input placement, as MultiNet's loop does."""
    if not isinstance(model, pi0.Pi0Model):
        raise TypeError(f"MultiNet's loop is openpi's Pi0 sampler: it needs a Pi0Model, got {type(model).__name__}")
    seconds = []
    for batch in batches[:num_batches]:
        start = time.perf_counter()
        inputs = {**model.prepare_inputs(batch, skip_absent_cameras=False), "noise": model.make_noise(batch, jax.random.key(0))}
        jax.block_until_ready(pi0.sample_actions_fn(model.module, model.params, num_steps=jnp.int32(MULTINET_FLOW_STEPS),
                                                    **inputs))
        jax.clear_caches()
        seconds.append(time.perf_counter() - start)
    per_batch = statistics.median(seconds)
    return {"batch_size": MULTINET_BATCH, "batches_timed": len(seconds), "seconds_per_batch": seconds,
            "seconds_per_sample": per_batch / MULTINET_BATCH,
            "how": "un-jitted sample_actions called plainly (loop bodies compiled), every camera, caches cleared per batch"}
