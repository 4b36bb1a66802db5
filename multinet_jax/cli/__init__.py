"""The `multinet-jax` console script: one absl app per subcommand.

Each subcommand lives in its own module that defines its absl flags at import time and a
`main(argv)`. Only the chosen subcommand's module is imported, so `--helpfull` lists that
command's flags and nothing else, and a command never pays for another's imports (TensorFlow,
model code).

    multinet-jax score --domain=openx --predictions=preds.jsonl --output=metrics.json
    multinet-jax eval --flagfile=flags/pi0_openx.flags
"""

from __future__ import annotations

import importlib
import os
import sys

from absl import app

# subcommand -> (module, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "score": ("multinet_jax.cli.score", "score a predictions JSONL file with MultiNet's metrics"),
    "data": ("multinet_jax.cli.data", "inspect and validate a domain's dataset"),
    "convert": ("multinet_jax.cli.convert", "convert tfrecord RLDS / tf.data snapshots to ArrayRecord"),
    "eval": ("multinet_jax.cli.eval", "evaluate a Pi0 / Pi0-FAST checkpoint on MultiNet domains"),
    "report": ("multinet_jax.cli.report", "compare evaluation runs across domains: markdown, CSV and one HTML page"),
    "fetch": ("multinet_jax.cli.fetch", "download the checkpoints, tokenizers and embedder a run needs, into the cache"),
    "probe": ("multinet_jax.cli.probe", "layerwise intent probing on an Act2Answer item set"),
}


def usage() -> str:
    lines = ["usage: multinet-jax <command> [--flags]  (multinet-jax <command> --helpfull)", "", "commands:"]
    lines += [f"  {name:<8} {description}" for name, (_, description) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(usage(), file=sys.stderr)
        sys.exit(0 if len(argv) >= 2 and argv[1] in ("-h", "--help", "help") else 2)
    command = argv[1]
    # TensorFlow (Open-X readers) otherwise prints its C++ start-up notices over the progress bar.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    module = importlib.import_module(COMMANDS[command][0])
    app.run(module.main, argv=[f"multinet-jax {command}", *argv[2:]])
