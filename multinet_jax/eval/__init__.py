"""The evaluator: `evaluate(EvalConfig(...))` runs the loop behind `multinet-jax eval`.

Modules: `loop` (data -> model -> output mapping -> results -> metrics), `results` (append-only,
resumable predictions files, multi-host gathering), `manifest` (what a run is; resume refuses
another), `preflight` (inputs checked before the first batch), `summary` (metrics files, summary, plots).
The cross-run report (`multinet_jax.cross_run_report`), the probe loop (`multinet_jax.probing.runner`) and the demo's
inputs (`multinet_jax.demo`) live outside: they read or feed an evaluation, they are not part of one.
"""

from multinet_jax.eval.loop import EvalConfig, EvaluationFailed, Evaluator, evaluate

__all__ = ["EvalConfig", "EvaluationFailed", "Evaluator", "evaluate"]
