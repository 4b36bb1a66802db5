"""The plumbing the throughput benchmarks share to time this project against a reference implementation running in
a process of its own environment (benchmarks/common.py): a real worker process speaking the JSON-lines protocol the
Magma, OpenVLA and SmolVLA workers speak, timed in alternation with a real jitted call; and what every report records
of the software it ran (library versions, source revision)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import common
from benchmarks.common import ReferenceWorker, time_alternately

# A worker as the reference workers are written: one line describing itself, then per request a line with the seconds
# it timed itself and the actions it computed (here: batch rows of the request number, after sleeping 20 ms per row).
WORKER = """
import json, sys, time
print(json.dumps({"ready": True, "name": "echo"}), flush=True)
for count, line in enumerate(sys.stdin):
    batch = json.loads(line)["batch"]
    start = time.perf_counter()
    time.sleep(0.02 * batch)
    print(json.dumps({"seconds": time.perf_counter() - start, "actions": [[count, 0.5]] * batch}), flush=True)
"""


def test_alternate_timing_of_ours_and_a_worker_process(tmp_path):
    script = tmp_path / "echo_worker.py"
    script.write_text(WORKER)
    ours = jax.jit(lambda x: jnp.tanh(x) * 2)
    x = jnp.ones((3, 7))
    with ReferenceWorker([sys.executable, str(script)]) as reference:
        assert reference.info == {"ready": True, "name": "echo"}
        row, ours_output, reference_output = time_alternately(lambda: ours(x), reference, 3, rounds=4, unit="chunks")
        # The warm-up outputs: ours, and the worker's first answer (request 0) of 3 rows.
        np.testing.assert_allclose(ours_output, np.tanh(np.ones((3, 7))) * 2, rtol=1e-6)
        np.testing.assert_array_equal(reference_output, [[0, 0.5]] * 3)
        # 1 warm-up + 4 timed requests were made: the next answer is request 5.
        assert reference.run(1)[1].tolist() == [[5, 0.5]]
    assert reference.process.returncode == 0
    assert len(row["ours_seconds"]) == len(row["reference_seconds"]) == 4
    assert min(row["reference_seconds"]) >= 0.06  # the worker's own timing of 3 rows x 20 ms
    assert row["reference_median_s"] == np.median(row["reference_seconds"])
    assert row["ours_median_s"] == np.median(row["ours_seconds"])
    assert row["speedup"] == pytest.approx(row["reference_median_s"] / row["ours_median_s"])
    assert row["ours_chunks_per_s"] == pytest.approx(3 / row["ours_median_s"])
    assert row["reference_chunks_per_s"] == pytest.approx(3 / row["reference_median_s"])


def test_a_worker_that_dies_is_named_instead_of_a_json_error(tmp_path):
    script = tmp_path / "broken_worker.py"
    script.write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(RuntimeError, match=r"^broken_worker\.py: the reference worker exited \(code 3\) without a reply"):
        ReferenceWorker([sys.executable, str(script)])


def test_a_report_records_the_library_versions_and_source_revision():
    """`machine_info` names jaxlib, flax, orbax-checkpoint and numpy as installed, and the checkout's commit with
    whether tracked files differ from it."""
    machine = common.machine_info()
    for name in ("jax", "jaxlib", "flax", "orbax-checkpoint", "numpy"):
        assert machine["packages"][name] == importlib.metadata.version(name), name
    git = lambda *args: subprocess.run(["git", "-C", str(common.REPO_ROOT), *args], capture_output=True, text=True)
    if git("rev-parse", "--show-toplevel").returncode == 0:  # a checkout (not an unpacked copy)
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        assert machine["source"] == {"commit": git("rev-parse", "HEAD").stdout.strip(), "dirty": dirty}


def test_jax_plugins_are_recorded_beside_the_named_packages(monkeypatch):
    """An installed JAX accelerator plugin (its kernels ran the figures) is recorded under its normalized name;
    other distributions are not, and a named package that is absent is None."""
    installed = [("jax_cuda12_plugin", "0.10.2"), ("jax-cuda12-pjrt", "0.10.2"), ("jax", "0.10.2"), ("Flax", "0.12.8"),
                 ("jaxtyping", "0.3.2"), ("requests", "2.0")]
    distributions = [SimpleNamespace(metadata={"Name": name}, version=version) for name, version in installed]
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: distributions)
    assert common.package_versions() == {"jax": "0.10.2", "jaxlib": None, "flax": "0.12.8", "orbax-checkpoint": None,
                                         "numpy": None, "jax-cuda12-pjrt": "0.10.2", "jax-cuda12-plugin": "0.10.2"}


def test_the_source_revision_is_none_outside_a_checkout_and_never_raises(tmp_path, monkeypatch):
    """A checkout's top: its commit and dirty flag; a folder that is no checkout, or one inside another checkout's
    tree, or a machine without git: None."""
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    run = lambda *args: subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                                       check=True, capture_output=True)
    run("init", "-q")
    (repo / "file.txt").write_text("one")
    run("add", "file.txt")
    run("commit", "-q", "-m", "one")
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert common.source_revision(repo) == {"commit": commit, "dirty": False}
    (repo / "file.txt").write_text("two")
    assert common.source_revision(repo) == {"commit": commit, "dirty": True}
    (tmp_path / "plain").mkdir()
    assert common.source_revision(tmp_path / "plain") is None
    assert common.source_revision(repo / "sub") is None
    monkeypatch.setenv("PATH", str(tmp_path / "plain"))  # no git to run
    assert common.source_revision(repo) is None
