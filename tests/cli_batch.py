"""Runs many `multinet-jax <command>` invocations of ONE command in one process, for the bad-input tests.

    python tests/cli_batch.py cases.json results.json

`cases.json` maps a case name to its argv after `multinet-jax`; `results.json` gets `{name: {"rc", "stderr"}}`.
One process per command keeps the matrix fast (each fresh process would pay for importing JAX and TensorFlow);
absl's flags are reset between cases. Commands run exactly as `multinet-jax` runs them (`multinet_jax.cli.main`).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

from absl import flags

from multinet_jax.cli import main


def run(argv: list[str]) -> dict:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(["multinet-jax", *argv])
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    if flags.FLAGS.is_parsed():
        flags.FLAGS.unparse_flags()
    return {"rc": code, "stderr": stderr.getvalue()}


if __name__ == "__main__":
    cases_path, results_path = sys.argv[1:]
    with open(cases_path) as file:
        cases = json.load(file)
    with open(results_path, "w") as file:
        json.dump({name: run(argv) for name, argv in cases.items()}, file)
