"""Knowledge retention from probe curves: how much of the VLM prefix's answer signal the action expert keeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def peak_layer(curve: Sequence[float]) -> int:
    """The (first) layer of highest probe accuracy."""
    return int(np.argmax(np.asarray(curve, np.float64)))


def retention(prefix: Mapping[str, Sequence[float]], action: Mapping[str, Sequence[float]], chance: float = 0.5) -> float:
    """The protocol's chance-normalized retention: mean over tasks of (max action - chance) / (max prefix - chance).

    `prefix` / `action`: per task, the probe accuracy per layer of the VLM prefix and of the action expert (the same
    unit as `chance`: fractions with 0.5, or percent with chance=50). 1 means the action layers carry all the answer
    signal the prefix had, 0 none above chance.
    """
    if set(prefix) != set(action) or not prefix:
        raise ValueError(f"prefix and action need the same non-empty tasks, got {sorted(prefix)} and {sorted(action)}")
    ratios = []
    for task in sorted(prefix):
        best_prefix = float(np.max(prefix[task]))
        if best_prefix <= chance:
            raise ValueError(f"task {task!r}: the prefix curve never exceeds chance ({best_prefix} <= {chance}), "
                             "so there is no signal to retain")
        ratios.append((float(np.max(action[task])) - chance) / (best_prefix - chance))
    return float(np.mean(ratios))
