"""multinet_jax: a JAX-native, high-throughput evaluator for VLA models on MultiNet v1.0.

Public surface (imported lazily so `import multinet_jax` stays cheap):
  load_model(checkpoint, dtype=..., mesh=...)  any checkpoint the model registry recognizes -> model
  data.load(domain, data_dir, ...)             a domain's Grain dataset
  evaluate(...)                                the evaluation loop behind `multinet-jax eval`
  score(domain, records, ...)                  MultiNet's metrics for a list of predictions
  metrics                                      the jitted metric kernels
  assets.resolve(name_or_path, offline=...)    a named checkpoint / tokenizer / embedder -> local path (cached)
  act2answer, probing                          Act2Answer items and scenes; layerwise probes and retention
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY_ATTRIBUTES = {
    "load_model": ("multinet_jax.models", "load_model"),
    "evaluate": ("multinet_jax.eval", "evaluate"),
    "score": ("multinet_jax.metrics", "score"),
}
_LAZY_MODULES = ("assets", "data", "metrics", "models", "tokenizers", "sharding", "eval", "act2answer", "probing")

__all__ = ["load_model", "evaluate", "score", *_LAZY_MODULES]


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRIBUTES:
        module_name, attribute = _LAZY_ATTRIBUTES[name]
        return getattr(importlib.import_module(module_name), attribute)
    if name in _LAZY_MODULES:
        return importlib.import_module(f"multinet_jax.{name}")
    raise AttributeError(f"module 'multinet_jax' has no attribute {name!r}")
