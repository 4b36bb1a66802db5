"""Layerwise intent probing: linear probes per layer on a model's activations, and knowledge retention.

Probing only consumes arrays (`features [n, layers, width]`, `labels [n]`, `groups [n]`); the models expose the
activations. `fit_probes` fits every layer and fold at once (`probes.py`), `grouped_folds` keeps both layouts of an
item in one fold (`folds.py`), `retention` and `peak_layer` summarize the curves (`retention.py`). The loop behind
`multinet-jax probe` (model -> activations on disk -> probes -> `probing.json`) is `runner.py`; it is not imported
here, so fitting probes never imports the model stack.
"""

from multinet_jax.probing.folds import grouped_folds
from multinet_jax.probing.probes import ProbeResult, fit_probes
from multinet_jax.probing.retention import peak_layer, retention

__all__ = ["ProbeResult", "fit_probes", "grouped_folds", "peak_layer", "retention"]
