"""Shared pieces of the evaluator's end-to-end tests: tiny assets built once, configs, CLI runs, readers."""

from __future__ import annotations

import atexit
import functools
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile

from conftest import REPO_ROOT

ALL_DEMO_DOMAINS = ("openx_bimanual", "openx_multi_embodiment", "overcooked_ai", "piqa", "odinw", "sqa3d", "bfcl")


@functools.cache
def assets() -> dict[str, str]:
    """Tiny checkpoints, tokenizers and demo datasets, built once per test session (as `eval --demo` does)."""
    from multinet_jax import demo

    root = pathlib.Path(tempfile.mkdtemp(prefix="multinet_jax_eval_assets_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    paths = {
        "checkpoint": str(root / "pi0_tiny"),
        "fast_checkpoint": str(root / "pi0_fast_tiny"),
        "tokenizer": str(root / "demo_tokenizer.model"),
        "fast_tokenizer": str(root / "demo_fast_tokenizer"),
        "data_dir": str(root / "data"),
        "cache_dir": str(root / "cache"),
    }
    demo.build(checkpoint=paths["checkpoint"], tokenizer=paths["tokenizer"], fast_tokenizer=paths["fast_tokenizer"],
               data_dir=paths["data_dir"], model="pi0", domains=ALL_DEMO_DOMAINS)
    demo.build(checkpoint=paths["fast_checkpoint"], tokenizer=paths["tokenizer"], fast_tokenizer=paths["fast_tokenizer"],
               data_dir=paths["data_dir"], model="pi0_fast", domains=())
    return paths


def _decodes_text(name: str) -> bool:
    """Whether domain `name` is answered in text (an unknown name too: eval refuses it before any budget check)."""
    from multinet_jax import domains

    try:
        return domains.lookup(name).output is domains.Output.TEXT
    except ValueError:
        return True


def settings(output_dir: pathlib.Path, domains, **overrides) -> dict:
    """EvalConfig fields for a tiny Pi0 run on the demo data (flags and in-process runs share them): a 6-token
    decoding budget where a domain decodes tokens (eval refuses one where none does)."""
    paths = assets()
    from multinet_jax.models import registry

    family = registry.family(overrides.get("model") or "pi0")  # decodes its actions under a budget (Pi0-FAST's, Magma's)?
    budgeted_actions = family.action_decoding == "tokens" and not family.one_token_per_action_dim
    decodes = budgeted_actions or any(map(_decodes_text, domains))
    return {
        "model": "pi0", "checkpoint": paths["checkpoint"], "tokenizer": paths["tokenizer"],
        "data_dir": paths["data_dir"], "cache_dir": paths["cache_dir"], "split": "public",
        "domains": tuple(domains), "output_dir": str(output_dir), "batch_size": 4,
        "max_decoding_steps": 6 if decodes else None, **overrides,
    }


def evaluate(output_dir: pathlib.Path, domains, **overrides) -> dict:
    from multinet_jax.eval import EvalConfig, evaluate

    return evaluate(EvalConfig(**settings(output_dir, domains, **overrides)))


def flags(output_dir: pathlib.Path, domains, **overrides) -> list[str]:
    values = settings(output_dir, domains, **overrides)
    values["domains"] = ",".join(values["domains"])
    return [f"--{name}={value}" for name, value in values.items() if value is not None and value is not False]


def start_eval(arguments: list[str], **env: str) -> subprocess.Popen:
    """`multinet-jax eval` in a process of its own (a fresh JAX: device count, distributed, SIGKILL)."""
    command = [sys.executable, "-c", "from multinet_jax.cli import main; main()", "eval", *arguments]
    environment = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    environment.update(PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3", **env)
    return subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_eval(arguments: list[str], *, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    process = start_eval(arguments, **env)
    output, _ = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, output, None)


def read_jsonl(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
