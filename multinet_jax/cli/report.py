"""`multinet-jax report RUN_DIR...`: several evaluation runs side by side, as MultiNet's leaderboard shows them.

    multinet-jax report runs/demo runs/demo_fast                 # -> runs/report/report.{md,csv,html}
    multinet-jax report runs/pi0_openx runs/fast_openx --output_dir=runs/compare

Prints the markdown tables; `report.html` is one self-contained page (tables and per-domain plots) to open in a
browser. Domains scored on different sample counts are marked as such, never averaged (multinet_jax/cross_run_report.py).
"""

from __future__ import annotations

import pathlib

from absl import flags

from multinet_jax.cli.errors import InputError

_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where report.md, report.csv and report.html go "
                                  "(default: report/ beside the first run folder).")


def main(argv: list[str]) -> None:
    from multinet_jax import cross_run_report

    run_dirs = [pathlib.Path(path) for path in argv[1:]]
    if not run_dirs:
        raise InputError("no run folders given: multinet-jax report RUN_DIR [RUN_DIR...]")
    output_dir = pathlib.Path(_OUTPUT_DIR.value) if _OUTPUT_DIR.value else run_dirs[0].parent / "report"
    paths = cross_run_report.write_report(run_dirs, output_dir)  # a ReportError is bad input: one line, exit code 2
    print(paths["md"].read_text())
    print(f"report: {paths['html'].resolve()} (also report.md, report.csv)")
