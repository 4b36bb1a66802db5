"""The `multinet-jax` console script: one absl app per subcommand.

Each subcommand lives in its own module that defines its absl flags at import time and a
`main(argv)`. Only the chosen subcommand's module is imported, so `--help` lists that command's
flags and nothing else, and a command never pays for another's imports (TensorFlow, model code).
Every command's errors are one line on stderr with exit code 2 for bad input (`cli/errors.py`).

    multinet-jax score --domain=openx --predictions=preds.jsonl --output=metrics.json
    multinet-jax eval --flagfile=flags/pi0_openx.flags
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from absl import app, flags, logging

from multinet_jax.cli import errors

# subcommand -> (module, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "score": ("multinet_jax.cli.score", "score a predictions JSONL file with MultiNet's metrics"),
    "data": ("multinet_jax.cli.data", "inspect and validate a domain's dataset"),
    "convert": ("multinet_jax.cli.convert", "convert tfrecord RLDS / tf.data snapshots to ArrayRecord"),
    "eval": ("multinet_jax.cli.eval", "evaluate a VLA or VLM checkpoint (any --model family) on MultiNet domains and Act2Answer"),
    "report": ("multinet_jax.cli.report", "compare evaluation runs across domains: markdown, CSV and one HTML page"),
    "fetch": ("multinet_jax.cli.fetch", "download the checkpoints, tokenizers and embedder a run needs, into the cache"),
    "probe": ("multinet_jax.cli.probe", "layerwise intent probing on an Act2Answer item set"),
}


HELP_FLAGS = ("-h", "--help", "--helpshort", "-?")


def usage() -> str:
    lines = ["usage: multinet-jax <command> [--flags]  (multinet-jax <command> --help)", "", "commands:"]
    lines += [f"  {name:<8} {description}" for name, (_, description) in COMMANDS.items()]
    return "\n".join(lines)


def command_help(command: str, module: Any) -> str:
    """The command's usage line, its docstring and its own flags (absl's --help would show the launcher's): those
    its module and the `multinet_jax` modules it imports define (e.g. `--offline`), none of absl's."""
    lines = [f"usage: multinet-jax {command} [--flags]", "", (module.__doc__ or "").strip(), "", "flags:"]
    owners = [name for name in flags.FLAGS.flags_by_module_dict() if name.startswith("multinet_jax.")]
    for owner in sorted(owners, key=lambda name: name != module.__name__):
        lines += flags.FLAGS.module_help(owner).splitlines()[2:]
    lines += ["", "(--helpfull also lists absl's logging flags)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    try:
        _dispatch(list(sys.argv if argv is None else argv))
    except BrokenPipeError:  # the help text's reader went away (`| head`); a command's own output is guarded
        if not errors.stdout_closed():
            raise
        sys.exit(errors.EXIT_PIPE_CLOSED)


def _dispatch(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] in ("help", *HELP_FLAGS):
        print(usage(), file=sys.stdout if len(argv) >= 2 else sys.stderr, flush=True)
        sys.exit(0 if len(argv) >= 2 else errors.EXIT_BAD_INPUT)
    command = argv[1]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n{usage()}", file=sys.stderr)
        sys.exit(errors.EXIT_BAD_INPUT)
    # TensorFlow (Open-X readers) otherwise prints its C++ start-up notices over the progress bar; its oneDNN
    # notice comes regardless of the log level unless oneDNN's op rewrites are off, which changes no result here:
    # TensorFlow only reads and decodes data in this process (no float math of ours runs in it).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    module = importlib.import_module(COMMANDS[command][0])
    if any(argument in HELP_FLAGS for argument in argv[2:]):
        print(command_help(command, module), flush=True)
        sys.exit(0)
    app.run(errors.guarded(_quiet(module.main)), argv=[f"multinet-jax {command}", *argv[2:]], flags_parser=errors.parse_flags)


def _quiet(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    """Library INFO logs (every file orbax reads, JAX probing for a TPU) stay out of a normal run's output;
    `--verbosity=0` or higher brings them back."""

    def run(argv: list[str]) -> Any:
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        return main(argv)

    return run
