"""Kernel outputs -> plain Python values in MultiNet's shapes -> JSON with NaN/inf as strings."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

# Per-class arrays MultiNet reports as {class index: value}.
_PER_CLASS_KEYS = frozenset(
    {"class_precisions", "class_recalls", "class_f1s", "precision_per_class", "recall_per_class", "f1_per_class"}
)
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def to_python(metrics: dict[str, Any]) -> dict[str, Any]:
    """Device scalars -> int/float, per-class arrays -> {index: value}, action arrays -> int lists."""
    converted: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            converted[key] = to_python(value)
            continue
        array = np.asarray(value)
        if key in _PER_CLASS_KEYS:
            converted[key] = {index: float(item) for index, item in enumerate(array.tolist())}
        elif array.ndim:
            converted[key] = array.tolist()
        elif array.dtype.kind in "iub":
            converted[key] = int(array)
        else:
            converted[key] = float(array)
    return converted


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else _NON_FINITE[value]
    return value


def to_json(metrics: dict[str, Any]) -> str:
    """Strict JSON: NaN and +/-inf written as the strings "NaN", "Infinity", "-Infinity"."""
    return json.dumps(_json_safe(metrics), indent=2, allow_nan=False) + "\n"
