"""Knowledge retention from probe curves: how much of the VLM prefix's answer signal the action expert keeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def peak_layer(curve: Sequence[float]) -> int:
    """The (first) layer of highest probe accuracy."""
    return int(np.argmax(np.asarray(curve, np.float64)))


def check_accuracies(curve: Sequence[float], what: str, chance: float) -> None:
    """Accuracies in the unit `chance` implies, fractions in [0, 1] for a chance below 1, else percent in [0, 100]:
    percent curves with the default chance=0.5 would give a plausible, wrong retention (0.874 for 0.420)."""
    values = np.asarray(curve, np.float64)
    unit, top = ("fractions", 1.0) if chance < 1 else ("percent", 100.0)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{what} must be a non-empty list of per-layer accuracies, got shape {values.shape}")
    if not (np.all(values >= 0) and np.all(values <= top)):  # NaN fails both
        other = "pass chance=50 for percent" if unit == "fractions" else "pass chance=0.5 for fractions"
        raise ValueError(f"{what} holds {values[~((values >= 0) & (values <= top))][0]:g}, outside [0, {top:g}]: with "
                         f"chance={chance:g} accuracies are {unit} ({other})")


def retention(prefix: Mapping[str, Sequence[float]], action: Mapping[str, Sequence[float]], chance: float = 0.5) -> float:
    """The protocol's chance-normalized retention: mean over tasks of (max action - chance) / (max prefix - chance).

    `prefix` / `action`: per task, the probe accuracy per layer of the VLM prefix and of the action expert (the same
    unit as `chance`: fractions with 0.5, or percent with chance=50). 1 means the action layers carry all the answer
    signal the prefix had, 0 none above chance.
    """
    if set(prefix) != set(action) or not prefix:
        raise ValueError(f"prefix and action need the same non-empty tasks, got {sorted(prefix)} and {sorted(action)}")
    if not 0 < chance < 100:
        raise ValueError(f"chance must be a probability in (0, 1) or a percentage in (1, 100), got {chance}")
    ratios = []
    for task in sorted(prefix):
        for name, curve in (("prefix", prefix[task]), ("action", action[task])):
            check_accuracies(curve, f"task {task!r}: the {name} curve", chance)
        best_prefix = float(np.max(prefix[task]))
        if best_prefix <= chance:
            raise ValueError(f"task {task!r}: the prefix curve never exceeds chance ({best_prefix} <= {chance}), "
                             "so there is no signal to retain")
        ratios.append((float(np.max(action[task])) - chance) / (best_prefix - chance))
    return float(np.mean(ratios))
