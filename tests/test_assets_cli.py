"""`multinet-jax fetch`, `--offline` and the default embedder, as a user runs them (subprocesses, no network)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import eval_helpers
from conftest import REPO_ROOT, shared_path
from test_assets import EMBEDDER, build_hub_cache


def run(command: str, *flags: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    environment = {key: value for key, value in environment.items() if value is not None and key != "XLA_FLAGS"}
    argv = [sys.executable, "-c", "from multinet_jax.cli import main; main()", command, *flags]
    return subprocess.run(argv, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=300)


def test_fetch_offline_lists_every_missing_asset_of_a_flagfile_in_one_line(tmp_path):
    result = run("fetch", "--offline", "--flagfile=flags/pi0_text.flags",
                 MULTINET_JAX_CACHE=str(tmp_path / "cache"), HF_HUB_CACHE=str(tmp_path / "hub"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"`multinet-jax fetch pi0_base paligemma_tokenizer {EMBEDDER}`" in line  # one command for all of them
    assert str(tmp_path / "cache" / "gs" / "openpi-assets" / "checkpoints" / "pi0_base") in line
    assert not (tmp_path / "cache" / "gs").exists()


def test_fetch_downloads_then_offline_finds_it(tmp_path):
    source = tmp_path / "bucket" / "fast"
    shutil.copytree(shared_path("fast_reference", "tokenizer"), source)
    env = {"MULTINET_JAX_CACHE": str(tmp_path / "cache"), "MULTINET_JAX_OFFLINE": None, "HF_HUB_OFFLINE": None}
    fetched = run("fetch", source.as_uri(), **env)
    assert fetched.returncode == 0, fetched.stderr
    cached = tmp_path / "cache" / "file" / str(source).lstrip("/")
    assert fetched.stdout.strip() == f"{source.as_uri()} -> {cached}"
    shutil.rmtree(source)
    again = run("fetch", "--offline", source.as_uri(), MULTINET_JAX_CACHE=str(tmp_path / "cache"))
    assert again.returncode == 0 and again.stdout == fetched.stdout


def test_hub_assets_resolve_from_the_default_hub_cache_offline_and_when_the_hub_refuses(tmp_path):
    """A fresh user's setup: no `$HF_HUB_CACHE`, so the hub's own default (`$HF_HOME/hub`) is the cache; a fresh
    process imports `huggingface_hub` as the CLI does (nothing else has loaded its submodules). Online, the hub's
    endpoint refuses connections: the cached snapshot answers, a repo not cached fails naming the cache."""
    hub = tmp_path / "hf" / "hub"
    snapshot = build_hub_cache(hub, shared_path("models", "all-MiniLM-L6-v2"), EMBEDDER)
    with socket.socket() as refusing:  # bound, never listening: connections to it are refused
        refusing.bind(("127.0.0.1", 0))
        home = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": None}
        online = {**home, "MULTINET_JAX_OFFLINE": None, "HF_HUB_OFFLINE": None,
                  "HF_ENDPOINT": f"http://127.0.0.1:{refusing.getsockname()[1]}"}
        for env in (home, online):
            result = run("fetch", "--offline" if env is home else "--nooffline", "all-MiniLM-L6-v2", **env)
            assert result.returncode == 0 and result.stdout == f"all-MiniLM-L6-v2 -> {snapshot}\n", result.stderr
        for env, reason in ((home, "offline"), (online, "the hub could not be reached")):
            result = run("fetch", "physical-intelligence/fast", **env)
            (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            assert result.returncode == 2 and "Traceback" not in result.stderr
            assert line.startswith(f"error: physical-intelligence/fast: not in the Hugging Face cache {hub} and {reason}")


def test_eval_offline_with_a_missing_checkpoint_fails_at_start_up(tmp_path):
    paths = eval_helpers.assets()
    result = eval_helpers.run_eval(["--offline", "--checkpoint=pi0_base", f"--tokenizer={paths['tokenizer']}",
                                    f"--data_dir={paths['data_dir']}", "--split=public", "--domains=openx_bimanual",
                                    f"--output_dir={tmp_path / 'out'}"], timeout=120, MULTINET_JAX_OFFLINE="0",
                                   MULTINET_JAX_CACHE=str(tmp_path / "cache"))
    assert result.returncode != 0 and "Traceback" not in result.stdout
    assert "error: pi0_base: not in the cache" in result.stdout and "multinet-jax fetch pi0_base`" in result.stdout
    assert not (tmp_path / "out").exists()


def test_score_computes_similarity_by_default_with_the_cached_embedder(tmp_path):
    build_hub_cache(tmp_path / "hub", shared_path("models", "all-MiniLM-L6-v2"), EMBEDDER)
    predictions = tmp_path / "sqa3d.jsonl"
    predictions.write_text("".join(json.dumps({"id": str(i), "prediction": p, "ground_truth": t}) + "\n"
                                   for i, (p, t) in enumerate([("two", "two"), ("a red chair", "the blue table")])))
    output = tmp_path / "metrics.json"
    result = run("score", "--domain=sqa3d", f"--predictions={predictions}", f"--output={output}",
                 HF_HUB_CACHE=str(tmp_path / "hub"))
    assert result.returncode == 0, result.stderr
    scored = json.loads(output.read_text())
    assert "similarity_metrics" not in scored  # not skipped
    assert scored["max_similarity_score"] > 0.99 > scored["min_similarity_score"]
