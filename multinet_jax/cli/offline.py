"""The `--offline` flag shared by the commands that read named assets (eval, score, fetch)."""

from __future__ import annotations

import os

from absl import flags

OFFLINE = flags.DEFINE_bool(
    "offline", False,
    "Read every named asset (checkpoints, tokenizers, the embedder) from the cache and never download; a missing "
    "one fails at start-up with the `multinet-jax fetch` command that gets it. Also: MULTINET_JAX_OFFLINE=1.",
)


def apply() -> None:
    """Makes `--offline` hold for everything this process resolves (`multinet_jax.assets.is_offline`)."""
    if OFFLINE.value:
        os.environ["MULTINET_JAX_OFFLINE"] = "1"
