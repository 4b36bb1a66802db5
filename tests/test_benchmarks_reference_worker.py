"""The plumbing the throughput benchmarks share to time this project against a reference implementation running in
a process of its own environment (benchmarks/common.py): a real worker process speaking the JSON-lines protocol the
Magma, OpenVLA and SmolVLA workers speak, timed in alternation with a real jitted call."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
