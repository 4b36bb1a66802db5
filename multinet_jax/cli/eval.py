"""`multinet-jax eval`: evaluate a checkpoint of any `--model` family on MultiNet v1.0 domains and Act2Answer.

    multinet-jax eval --flagfile=flags/demo.flags                 # tiny checkpoints on generated demo data
    multinet-jax eval --flagfile=flags/pi0_openx.flags --data_dir=/data/multinet --output_dir=runs/pi0

Multi-host (TPU VM pod slice): run the same command on every host with `MULTINET_JAX_DISTRIBUTED=1`
(or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID); see flags/tpu_pod_slice.flags. Several CPU
processes on one machine also need `JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo` (what tests/test_eval_parallel.py does):

    JAX_COORDINATOR_ADDRESS=127.0.0.1:12345 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 \
    JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo multinet-jax eval --flagfile=flags/demo.flags --output_dir=runs/two_hosts &
    # ... and the same with JAX_PROCESS_ID=1
"""

from __future__ import annotations

from absl import flags

from multinet_jax import assets
from multinet_jax.cli import offline
from multinet_jax.cli.errors import InputError, no_arguments
from multinet_jax.domains import names_help
from multinet_jax.models import registry  # imports no JAX: flag parsing stays fast


def _families(accepts) -> str:
    """`--model=a|b`: the registered families for which `accepts(family)` holds (flag help comes from the registry)."""
    return "--model=" + "|".join(name for name in registry.family_names() if accepts(registry.family(name)))


def _checkpoint_help() -> str:
    by_help: dict[str, list[str]] = {}
    for name in registry.family_names():
        by_help.setdefault(registry.family(name).checkpoint_help, []).append(name)
    return "The checkpoint, per --model: " + "; ".join(f"{'|'.join(names)}: {text}" for text, names in by_help.items()) + "."


flags.DEFINE_enum("model", None, list(registry.family_names()), "Model family of --checkpoint; default: the one its "
                  "checkpoint format and parameters hold (when given, it must agree with them).")
flags.DEFINE_string("checkpoint", None, _checkpoint_help())
flags.DEFINE_string("tokenizer", None, "The SentencePiece model prompts are tokenized with: a path or an asset name (default: "
                    f"{assets.DEFAULT_TOKENIZER}, cached); not for {_families(lambda family: family.bundles_tokenizer)}, "
                    "whose checkpoints bundle their own.")
flags.DEFINE_string("fast_tokenizer", None, f"{_families(lambda family: 'fast_tokenizer' in family.assets)} only: FAST "
                    "action tokenizer directory (processor_config.json + tokenizer.json) or hub name (default: "
                    f"{assets.DEFAULT_FAST_TOKENIZER}, cached).")
flags.DEFINE_list("domains", ["openx_bimanual"], f"Domains to evaluate: {names_help()}.")
flags.DEFINE_string("data_dir", None, "Root holding one folder per domain, in MultiNet's layout (<domain>/<split>/...).")
flags.DEFINE_string("split", None, "Split folder inside each domain (<domain>/<split>/, e.g. public); no default: "
                    "without it each domain's folder is read itself, and one holding only split folders is refused naming them.")
flags.DEFINE_string("output_dir", "runs/eval", "Where predictions/, <domain>_metrics.json, plots/ and summary.* go.")
flags.DEFINE_integer("max_token_len", None, "Truncate every prompt at this many tokens instead of MultiNet's per-domain "
                     "protocol (Open-X 48, Overcooked 256, text domains never); truncations are counted in <domain>_metrics.json.")
flags.DEFINE_integer("action_horizon", None, "Actions per predicted chunk, which parameters cannot tell "
                     f"({_families(lambda family: 'action_horizon' in family.config_overrides)}; default: the family's).")
flags.DEFINE_integer("action_dim", None, "The action dimension, which parameters cannot tell "
                     f"({_families(lambda family: 'action_dim' in family.config_overrides)}; default: the family's); "
                     "other families read it from the checkpoint.")
flags.DEFINE_string("cache_dir", None, "Where converted Open-X steps and their action stats go (default: $MULTINET_JAX_CACHE/converted; never the data folder).")
flags.DEFINE_integer("batch_size", 8, "Global batch per host; a multiple of the mesh's data axis.")
flags.DEFINE_string("mesh", "data:-1,model:1", "Device mesh per host, e.g. data:-1,model:1 or data:2,model:4.")
flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"],
                  "Parameter and compute dtype; bfloat16 is what openpi's policies (and so MultiNet's numbers) run.")
flags.DEFINE_integer("num_flow_steps", None, "Euler steps of flow matching "
                     f"({_families(lambda family: family.action_decoding == 'flow')}; default: the checkpoint's own, "
                     "a LeRobot config.json's num_steps, openpi's sampler's 10); recorded in <domain>_metrics.json.")
flags.DEFINE_integer("max_decoding_steps", None, "Most tokens decoded per sample (per BFCL turn) instead of MultiNet's "
                     "budgets (PIQA/ODinW 10, SQA3D/RoboVQA 50, BFCL 150; FAST action tokens: openpi's 256).")
flags.DEFINE_bool("openpi_exact_decoding", True, "Decode text and FAST tokens exactly as openpi does (its attention window "
                  "and positions, which read masked cameras' tokens); --noopenpi_exact_decoding: the corrected masking.")
flags.DEFINE_bool("normalize_state", True, "Action prompts holding the state (openpi's formats): the state quantile-"
                  "normalized with the checkpoint's state q01/q99 before its 256 bins, as openpi does; "
                  "--nonormalize_state: the state as the data gives it.")
flags.DEFINE_float("temperature", 0.0, "Sampling temperature for text decoding; 0 is greedy.")
flags.DEFINE_integer("seed", 0, "Base random seed; each sample folds in its global index.")
flags.DEFINE_integer("limit", None, "Evaluate at most this many samples per domain.")
flags.DEFINE_bool("resume", False, "Continue existing predictions files instead of refusing to overwrite them.")
flags.DEFINE_enum("unnormalize", "split", ["split", "split_exact", "checkpoint"],
                  "Unnormalize actions with the evaluated split's statistics as MultiNet computed them (split), the "
                  "split's exact float64 mean/std (split_exact) or the checkpoint's norm stats.")
flags.DEFINE_string("unnorm_key", None, f"{_families(lambda family: family.norm_stats_flag == 'unnorm_key')} with "
                    "--unnormalize=checkpoint: the dataset key of the checkpoint's norm_stats (e.g. bridge_orig); "
                    "default: its only key.")
flags.DEFINE_string("asset_id", None, f"{_families(lambda family: family.norm_stats_flag == 'asset_id')}: checkpoints with "
                    "norm stats for several robots: whose "
                    "assets/<asset_id>/norm_stats.json normalize the state and unnormalize the actions (e.g. droid, "
                    "physical-intelligence/libero); default: the checkpoint's only one.")
flags.DEFINE_bool("demo", False, "Build the tiny demo checkpoints, tokenizers and datasets at the given paths when missing "
                  "(deterministic; see checkpoints/README.md).")
flags.DEFINE_string("embedder_dir", None, "all-MiniLM-L6-v2 for the similarity metrics of SQA3D, RoboVQA and BFCL: a "
                    "directory or hub name (default: sentence-transformers/all-MiniLM-L6-v2, cached).")
flags.DEFINE_bool("skip_similarity", False, "Score SQA3D, RoboVQA and BFCL without the embedder: every metric but the "
                  "similarity ones, marked as skipped in <domain>_metrics.json.")

FLAGS = flags.FLAGS


def config_from_flags(*, require_data: bool = True):
    """The `EvalConfig` the flags describe; flag combinations are checked before anything is built or loaded.

    `require_data=False` (`multinet-jax fetch`): a flagfile without --data_dir still names every asset.
    """
    from multinet_jax.eval import EvalConfig

    required = ("checkpoint", "data_dir") if require_data else ("checkpoint",)
    missing = [name for name in required if not getattr(FLAGS, name)]
    if missing:
        raise InputError(f"missing flags: {', '.join('--' + name for name in missing)}")
    return EvalConfig(
        model=FLAGS.model,
        checkpoint=FLAGS.checkpoint,
        tokenizer=FLAGS.tokenizer,
        fast_tokenizer=FLAGS.fast_tokenizer,
        domains=tuple(FLAGS.domains),
        data_dir=FLAGS.data_dir or "",
        split=FLAGS.split,
        max_token_len=FLAGS.max_token_len,
        action_horizon=FLAGS.action_horizon,
        action_dim=FLAGS.action_dim,
        cache_dir=FLAGS.cache_dir,
        output_dir=FLAGS.output_dir,
        batch_size=FLAGS.batch_size,
        mesh=FLAGS.mesh,
        dtype=FLAGS.dtype,
        num_flow_steps=FLAGS.num_flow_steps,
        max_decoding_steps=FLAGS.max_decoding_steps,
        openpi_exact_decoding=FLAGS.openpi_exact_decoding,
        normalize_state=FLAGS.normalize_state,
        temperature=FLAGS.temperature,
        seed=FLAGS.seed,
        limit=FLAGS.limit,
        resume=FLAGS.resume,
        unnormalize=FLAGS.unnormalize,
        unnorm_key=FLAGS.unnorm_key,
        asset_id=FLAGS.asset_id,
        embedder_dir=FLAGS.embedder_dir,
        skip_similarity=FLAGS.skip_similarity,
    )


def main(argv: list[str]) -> None:
    no_arguments(argv)
    offline.apply()
    from multinet_jax import sharding

    sharding.initialize_distributed()
    from multinet_jax import demo
    from multinet_jax.eval import evaluate

    if FLAGS.demo and not FLAGS.model:
        raise SystemExit("error: --demo builds the checkpoint, so it needs --model to know which family to build")
    config = config_from_flags()
    if FLAGS.demo:
        demo.build(checkpoint=FLAGS.checkpoint, tokenizer=FLAGS.tokenizer, fast_tokenizer=FLAGS.fast_tokenizer,
                   data_dir=FLAGS.data_dir, model=FLAGS.model, domains=config.domains)
    evaluate(config)
