"""The evaluator: `evaluate(EvalConfig(...))` runs the loop behind `multinet-jax eval`.

Modules: `loop` (data -> model -> output mapping -> results -> metrics), `results` (append-only,
resumable predictions files, multi-host gathering), `manifest` (what a run is; resume refuses
another), `preflight` (inputs checked before the first batch), `summary` (metrics files, summary, plots),
`demo` (the tiny embedded checkpoints, tokenizers and datasets of the one-command demo).
"""

from multinet_jax.eval.loop import EvalConfig, EvaluationFailed, Evaluator, evaluate

__all__ = ["EvalConfig", "EvaluationFailed", "Evaluator", "evaluate"]
