"""`multinet-jax probe`: layerwise intent probing of a checkpoint of any model family on an Act2Answer item set
(families without an action expert give prefix streams only).

    multinet-jax probe --flagfile=flags/demo_act2answer_probe.flags          # tiny Pi0 on the generated items
    multinet-jax probe --checkpoint=gs://openpi-assets/checkpoints/pi0_base --tokenizer=paligemma_tokenizer.model \
        --data_dir=act2answer/public --frames_dir=sim_first_frames --output_dir=runs/probe_pi0

Writes `<output_dir>/activations/<split>/batch_*.npz` (resumable with --resume), `probing.json` (per category and
stream: accuracy per layer, shuffled control, per-fold values, peak layer, fits that did not converge; the
retention) and `probing.png`.
"""

from __future__ import annotations

import json

from absl import flags

from multinet_jax.cli.errors import InputError, no_arguments
from multinet_jax.models import registry  # imports no JAX: flag parsing stays fast

flags.DEFINE_enum("model", None, list(registry.family_names()), "Model family of --checkpoint; default: the one it "
                  "holds (when given, it must agree with it). --demo builds a tiny checkpoint of it, so it needs it.")
flags.DEFINE_string("checkpoint", None, "A checkpoint of any model family (see `multinet-jax eval --help`); families "
                    "without an action expert give prefix streams only.")
flags.DEFINE_string("tokenizer", None, "The SentencePiece model prompts are tokenized with: a path or an asset name "
                    "(default: the public one); none for a family whose checkpoint bundles its own.")
flags.DEFINE_string("data_dir", None, "An Act2Answer item set: pairs.json + images/ or shapes/<asset>/textured.glb.")
flags.DEFINE_string("frames_dir", None, "Simulator first frames <item id>_<layout>.png instead of rendered composites.")
flags.DEFINE_string("split", None, "Split folder inside --data_dir, if any.")
flags.DEFINE_string("output_dir", "runs/probe", "Where activations/, probing.json and probing.png go.")
flags.DEFINE_integer("max_token_len", None, "Prompt tokens per sample (longer instructions are truncated); default "
                     "Act2Answer's protocol length (48). Not for a checkpoint that bundles its tokenizer, which cuts "
                     "its prompts itself.")
flags.DEFINE_integer("batch_size", 8, "Episodes per model call.")
flags.DEFINE_string("mesh", "data:-1,model:1", "Device mesh, e.g. data:-1,model:1.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter and compute dtype.")
flags.DEFINE_integer("num_flow_steps", None, "Euler steps of the sampling pass the activations come from (flow "
                     "families; default: the checkpoint's own, a LeRobot config.json's num_steps, openpi's sampler's "
                     "10); probe_manifest.json and probing.json record the steps used.")
flags.DEFINE_integer("seed", 0, "Base seed of the per-sample flow noise.")
flags.DEFINE_integer("limit", None, "Use only the first N episodes (an even N keeps both layouts of each item).")
flags.DEFINE_bool("resume", False, "Continue saved activations instead of refusing to overwrite them.")
flags.DEFINE_integer("num_folds", 5, "Cross-validation folds (grouped by item); each category needs this many items.")
flags.DEFINE_integer("probe_seed", 0, "Seed of the fold assignment and the shuffled-label control.")
flags.DEFINE_float("C", 1.0, "Inverse L2 strength of the logistic-regression probes (scikit-learn's C).")
flags.DEFINE_integer("max_iter", 100, "L-BFGS iterations per probe at most (real-label fits that stop at it are "
                     "warned about and counted in probing.json's unconverged_fits).")
flags.DEFINE_integer("permutations", 19, "Label sets of the permutation test each probe curve's peak is checked "
                     "against (each item's tiles exchanged at random): a peak counts as signal at p <= 0.05, which "
                     "needs 19 or more.")
flags.DEFINE_string("asset_id", None, "openpi checkpoints with norm stats for several robots: whose "
                    "assets/<asset_id>/norm_stats.json the model loads with (default: the checkpoint's only one).")
flags.DEFINE_bool("demo", False, "Build the tiny demo checkpoint, tokenizer and generated item set at the given paths when missing.")

FLAGS = flags.FLAGS


def _p_text(p_value: float) -> str:
    """A peak's permutation p-value, never printed as alpha unless it is alpha: 0.0525 fails p <= 0.05 and reads "0.052"."""
    from multinet_jax import plots
    from multinet_jax.probing import layer_curves

    return plots.number_text(p_value, 2, exact=(layer_curves.ALPHA,))


def main(argv: list[str]) -> None:
    no_arguments(argv)
    from multinet_jax import demo, plots
    from multinet_jax.probing import layer_curves, runner

    missing = [name for name in ("checkpoint", "data_dir") if not getattr(FLAGS, name)]
    if missing:
        raise InputError(f"missing flags: {', '.join('--' + name for name in missing)}")
    names = [field.name for field in runner.ProbeConfig.__dataclass_fields__.values()]
    values = {name: getattr(FLAGS, name) for name in names}
    # Errors (a ValueError of the config or the assets, a missing file) are one line, exit code 2 (cli/errors.py).
    config = runner.ProbeConfig(**values)
    if FLAGS.demo:
        if not FLAGS.model:
            raise InputError("--demo builds the checkpoint, so it needs --model to know which family to build")
        demo.build_probe_demo(checkpoint=config.checkpoint, tokenizer=config.tokenizer, item_set=config.data_dir,
                              model=FLAGS.model)
    if FLAGS.model:
        registry.check_family(config.checkpoint, FLAGS.model)  # before any array is read
    result = runner.run_probe(config)
    lines = [f"{task}: " + ", ".join(f"{stream} peak {plots.number_text(entry[stream]['peak_accuracy'], 3)} at layer "
                                    f"{entry[stream]['peak_layer']} (p {_p_text(entry[stream]['peak_p_value'])})"
                                    for stream in result["streams"])
             for task, entry in result["tasks"].items()]
    retention = result.get("retention")
    if "action_streams" in result:
        lines.append(f"action streams: {result['action_streams']}")
    else:
        lines.append(layer_curves.retention_text(result) if retention is not None else
                     f"retention: undefined (no task's prefix probe peak beats its permutation test at p <= "
                     f"{layer_curves.ALPHA}: {json.dumps(result.get('retention_excluded'))})")
    lines.append(f"results: {FLAGS.output_dir}/probing.json, probing.png")
    print("\n".join(lines))
