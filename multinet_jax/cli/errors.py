"""One-line errors and exit codes, the same for every `multinet-jax` command.

Exit codes: 0 success; 2 bad input, something the user can fix (a flag, a missing or unreadable file or folder,
a corrupt checkpoint, shard or record, a run that differs from the one in `--output_dir`); 1 anything else (a bug,
the environment). Either way stderr gets one line, `error: <file>[:<line>]: <what is wrong>` (the libraries'
errors name the file first), and the traceback only with `--verbosity=1` or `MULTINET_JAX_TRACEBACK=1`.

Bad input is what the libraries raise at their boundaries: `ValueError` and its subclasses (`CheckpointError`,
`BadRecordError`, `RecordError`, `ObservationError`, `RunChangedError`, ...) and `OSError` (missing, unreadable
or read-only paths); absl's flag errors too.
"""

from __future__ import annotations

import functools
import os
import select
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from absl import flags

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1
EXIT_PIPE_CLOSED = 141  # what a shell reports for a writer stopped by SIGPIPE (128 + 13), as `seq 9999 | head -1`
TRACEBACK_ENV = "MULTINET_JAX_TRACEBACK"
BAD_INPUT_ERRORS = (ValueError, OSError)


class InputError(ValueError):
    """Bad input found by a command itself (a flag combination, an argument): exit code 2."""


def no_arguments(argv: Sequence[str]) -> None:
    """A command that reads flags only refuses anything else (a flagfile line without dashes, `--json false`), which
    absl would leave unread."""
    if len(argv) > 1:
        raise InputError(f"unexpected arguments: {' '.join(argv[1:])}")


def one_line(text: str) -> str:
    """Newlines folded, so every error is one line of stderr."""
    return " | ".join(line.strip() for line in str(text).strip().splitlines() if line.strip())


def message(error: BaseException) -> str:
    """`<file>: <what is wrong>` for an error; OSErrors that carry a filename are put in that shape."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    text = one_line(str(error)) or type(error).__name__
    if isinstance(error, BAD_INPUT_ERRORS) or _causes(error):
        return text
    return f"internal error: {type(error).__name__}: {text}"


def _causes(error: BaseException) -> list[BaseException]:
    """The per-domain errors an evaluation collected (`EvaluationFailed.failures`), if it is one."""
    return list(getattr(error, "failures", {}).values())


def exit_code(error: BaseException) -> int:
    """2 for bad input (an evaluation's domains all failed on bad input), 1 for anything else."""
    causes = _causes(error)
    if causes:
        return EXIT_FAILURE if any(exit_code(cause) == EXIT_FAILURE for cause in causes) else EXIT_BAD_INPUT
    return EXIT_BAD_INPUT if isinstance(error, BAD_INPUT_ERRORS) else EXIT_FAILURE


def _wants_traceback() -> bool:
    if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        return True
    verbosity = flags.FLAGS["verbosity"]
    return flags.FLAGS.is_parsed() and verbosity.present and verbosity.value >= 1


def report(error: BaseException) -> int:
    """Prints `error: ...` (and the traceback when asked for) to stderr; returns the exit code."""
    if _wants_traceback():
        traceback.print_exception(error, file=sys.stderr)
    hint = "" if _wants_traceback() else f" (traceback: --verbosity=1 or {TRACEBACK_ENV}=1)"
    print(f"error: {message(error)}{hint if exit_code(error) == EXIT_FAILURE else ''}", file=sys.stderr)
    return exit_code(error)


def guarded(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    """A command's `main` whose errors end the process as one line and an exit code."""

    @functools.wraps(main)
    def run(argv: list[str]) -> Any:
        try:
            result = main(argv)
            sys.stdout.flush()  # here, not at exit, so that a closed pipe is handled below
            return result
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        except Exception as error:  # every failure becomes one line (see the module docstring)
            if isinstance(error, BrokenPipeError) and stdout_closed():
                raise SystemExit(EXIT_PIPE_CLOSED) from None
            raise SystemExit(report(error)) from None

    return run


def stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (`multinet-jax eval --help | head`), so that a BrokenPipeError
    from anything else is still reported. If so, stdout is pointed at /dev/null (Python's documented recipe): the
    interpreter's last flush then raises no second BrokenPipeError at exit."""
    try:
        descriptor = sys.stdout.fileno()
    except (OSError, ValueError):  # replaced by an object without a descriptor
        return False
    poller = select.poll()
    poller.register(descriptor, select.POLLOUT)
    if not any(events & select.POLLERR for _, events in poller.poll(0)):  # Linux: a pipe without reader
        return False
    os.dup2(os.open(os.devnull, os.O_WRONLY), descriptor)
    return True


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's flag parsing, with a bad flag reported as one line and exit code 2 (absl prints a paragraph, exits 1),
    and a line on stderr per flag given several values (`flag_overrides`)."""
    try:
        remaining = flags.FLAGS(list(argv))
    except flags.Error as error:
        print(f"error: {one_line(error)} (see {argv[0]} --help)", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    for line in flag_overrides(argv):
        print(f"{argv[0]}: {line}", file=sys.stderr, flush=True)
    return remaining


def flag_overrides(argv: Sequence[str]) -> list[str]:
    """Each flag given different values (a flagfile's, then the command line's, in order), in words: absl applies the
    last one without a word, and a setting a flagfile seemed to fix would be silently another. Flags written
    `--name=value`, `--name` and `--noname`; absl has parsed `argv` already, so its flagfiles read."""
    given: dict[str, list[str]] = {}
    for argument in flags.FLAGS.read_flags_from_files(list(argv[1:]), force_gnu=False):
        if argument == "--":
            break
        if not argument.startswith("--"):
            continue
        name, has_value, value = argument[2:].partition("=")
        if not has_value:
            negated = name.startswith("no") and name[2:] in flags.FLAGS and flags.FLAGS[name[2:]].boolean
            if not negated and not (name in flags.FLAGS and flags.FLAGS[name].boolean):
                continue  # `--name value`: absl reads the value from the next argument
            name, value = (name[2:], "false") if negated else (name, "true")
        given.setdefault(name, []).append(value)
    return [f"--{name} given {len(values)} values ({', '.join(values)}): the last, {values[-1]}, applies"
            for name, values in given.items() if len(set(values)) > 1]
