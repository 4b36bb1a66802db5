"""MultiNet v1.0's metrics as pure, jitted, vectorized JAX kernels.

    from multinet_jax import metrics
    metrics.score("openx_bimanual", records)            # one call: records -> MultiNet's metric names
    metrics.continuous(metrics.pack_continuous(preds, truth), action_stats)   # arrays -> device values

Kernels by output kind: `continuous` (Open-X), `discrete` (Overcooked), `multiple_choice` (PIQA),
`classification` (ODinW), `vqa` (SQA3D, RoboVQA), `function_calls` (BFCL), `score_episodes` (Act2Answer episode
logs: success rule, per-category rates, intent metrics); `SentenceEmbedder`
is all-MiniLM-L6-v2 in Flax for the text similarity metrics.
"""

from multinet_jax.metrics.act2answer_scoring import score_episodes
from multinet_jax.metrics.choices import classification, multiple_choice, pack_choices
from multinet_jax.metrics.continuous_actions import (ACTION_SLICES, ActionStatsError, action_stats_from_ground_truth, continuous,
                                                     pack_continuous)
from multinet_jax.metrics.discrete_actions import discrete, pack_discrete
from multinet_jax.metrics.embedder import SentenceEmbedder
from multinet_jax.metrics.function_calling import function_calls
from multinet_jax.metrics.records import DuplicateIdError, RecordError
from multinet_jax.metrics.json_values import to_json, to_python
from multinet_jax.metrics.scoring import (ANSWER_RULE_FIELD, CLIPPED_FIELD, MAGMA_SCRIPTS_RULE, RULES_SCORED_APART,
                                          SCORING_STATS_KEY, SIMILARITY_KINDS, SUBSET_FIELD, OptionError,
                                          check_options_apply, load_action_stats, load_records, metric_kind, score)
from multinet_jax.metrics.text_answers import vqa

__all__ = [
    "ACTION_SLICES",
    "ANSWER_RULE_FIELD",
    "ActionStatsError",
    "MAGMA_SCRIPTS_RULE",
    "CLIPPED_FIELD",
    "DuplicateIdError",
    "OptionError",
    "RULES_SCORED_APART",
    "RecordError",
    "SCORING_STATS_KEY",
    "SIMILARITY_KINDS",
    "SUBSET_FIELD",
    "SentenceEmbedder",
    "action_stats_from_ground_truth",
    "check_options_apply",
    "classification",
    "continuous",
    "discrete",
    "function_calls",
    "load_action_stats",
    "load_records",
    "metric_kind",
    "multiple_choice",
    "pack_choices",
    "pack_continuous",
    "pack_discrete",
    "score",
    "score_episodes",
    "to_json",
    "to_python",
    "vqa",
]
