"""Same predictions on 1 device, on 8 (fake CPU) devices, and from two processes joined by
`jax.distributed` (CPU, gloo collectives), each reading its own data shard: as on a 2-host TPU slice."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

import eval_helpers

DOMAINS = ("openx_bimanual", "piqa")  # one action domain, one text domain
LIMIT = 10  # not a multiple of the batch: the last batch has padding rows
ACTION_TOLERANCE = 1e-5  # different XLA partitionings may round the last float bits differently
# float32, not eval's bfloat16 default: per-device batch shapes change bf16 rounding by ~1e-3, which would hide a
# real layout error of that size.
DTYPE = "float32"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pathlib.Path:
    """The single-device, single-process run every other layout must reproduce."""
    output_dir = tmp_path_factory.mktemp("one_device")
    eval_helpers.evaluate(output_dir, DOMAINS, limit=LIMIT, batch_size=8, dtype=DTYPE)
    return output_dir


def _assert_same_predictions(actual_dir: pathlib.Path, reference_dir: pathlib.Path) -> None:
    for domain in DOMAINS:
        actual = eval_helpers.read_jsonl(actual_dir / "predictions" / f"{domain}.jsonl")
        expected = eval_helpers.read_jsonl(reference_dir / "predictions" / f"{domain}.jsonl")
        assert [r["id"] for r in actual] == [r["id"] for r in expected]
        assert [r["ground_truth"] for r in actual] == [r["ground_truth"] for r in expected]
        if domain == "openx_bimanual":
            np.testing.assert_allclose([r["prediction"] for r in actual], [r["prediction"] for r in expected],
                                       rtol=ACTION_TOLERANCE, atol=ACTION_TOLERANCE)
        else:
            assert [(r["raw_output"], r["prediction"]) for r in actual] == [(r["raw_output"], r["prediction"]) for r in expected]


def test_eight_devices_give_the_same_predictions_as_one(reference, tmp_path):
    result = eval_helpers.run_eval(
        eval_helpers.flags(tmp_path, DOMAINS, limit=LIMIT, batch_size=8, dtype=DTYPE),
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
    )
    assert result.returncode == 0, result.stdout[-3000:]
    metrics = json.loads((tmp_path / "openx_bimanual_metrics.json").read_text())
    assert metrics["config"]["mesh"] == "data:-1,model:1"
    _assert_same_predictions(tmp_path, reference)


def test_two_processes_each_reading_a_shard_write_the_same_file(reference, tmp_path):
    port = eval_helpers.free_port()
    processes = [
        eval_helpers.start_eval(
            # each host's batch: 4 rows, so the two hosts together run the reference's 8
            eval_helpers.flags(tmp_path, DOMAINS, limit=LIMIT, batch_size=4, dtype=DTYPE),
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id),
            JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
        )
        for process_id in (0, 1)
    ]
    outputs = [process.communicate(timeout=400)[0] for process in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    assert "results:" in outputs[0] and "results:" not in outputs[1]  # only process 0 writes and reports
    _assert_same_predictions(tmp_path, reference)
    for domain in DOMAINS:
        two = json.loads((tmp_path / f"{domain}_metrics.json").read_text())["metrics"]
        one = json.loads((reference / f"{domain}_metrics.json").read_text())["metrics"]
        assert two.keys() == one.keys()


@pytest.mark.parametrize("process_1, domains, differing", [
    ("other_data", ["piqa"], "data"),  # a copy of the PIQA data with one label changed
    ({"seed": 1}, ["piqa"], "settings"),
    ({}, ["piqa", "odinw"], "domain order"),  # process 1 lists them the other way: its records would land in the other file
], ids=["other data", "other seed", "domains in another order"])
def test_a_process_running_otherwise_than_process_0_is_refused(process_1, domains, differing, tmp_path):
    """Each host reads its own disks and command line; only process 0's are recorded, so the run must stop before any
    prediction, on both processes, naming what differs."""
    overrides = {}
    if process_1 == "other_data":
        data_copy = shutil.copytree(eval_helpers.assets()["data_dir"], tmp_path / "data_copy")
        (labels,) = (data_copy / "piqa").rglob("*.jsonl")
        rows = [json.loads(line) for line in labels.read_text().splitlines()]
        rows[0]["label"] = 1 - rows[0]["label"]
        labels.write_text("".join(json.dumps(row) + "\n" for row in rows))
        overrides = {"data_dir": str(data_copy)}
    elif process_1:
        overrides = process_1
    port = eval_helpers.free_port()
    processes = [
        eval_helpers.start_eval(
            eval_helpers.flags(tmp_path / "out", domains if process_id == 0 else domains[::-1], limit=LIMIT, batch_size=4,
                               dtype=DTYPE, **(overrides if process_id == 1 else {})),
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id),
            JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
        )
        for process_id in (0, 1)
    ]
    outputs = [process.communicate(timeout=400)[0] for process in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode != 0, output[-3000:]
        assert f"processes [1] run otherwise than process 0: {differing} differ (every host must run" in output, output[-3000:]
    assert not (tmp_path / "out" / "predictions").exists()


def test_a_domain_failing_on_one_process_fails_on_every_process_and_the_others_finish(tmp_path):
    """A broken record in process 1's shard (odd sample indices): every process leaves the domain at that step, the
    summary marks it failed naming process 1's error, the next domain is scored, and both exit non-zero. Before, the
    failing process went on to the next domain while process 0 waited in a collective for good."""
    data_copy = shutil.copytree(eval_helpers.assets()["data_dir"], tmp_path / "data_copy")
    (questions,) = (data_copy / "piqa").rglob("*.jsonl")
    rows = [json.loads(line) for line in questions.read_text().splitlines()]
    rows[5]["goal"] = None
    questions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    port = eval_helpers.free_port()
    processes = [
        eval_helpers.start_eval(
            eval_helpers.flags(tmp_path / "out", ["piqa", "odinw"], limit=LIMIT, batch_size=4, dtype=DTYPE,
                               data_dir=str(data_copy)),
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id),
            JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
        )
        for process_id in (0, 1)
    ]
    outputs = [process.communicate(timeout=400)[0] for process in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode not in (0, None), output[-3000:]
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert rows["piqa"]["status"] == "failed"
    assert "process 1 failed this domain: BadRecordError" in json.dumps(rows["piqa"]), rows["piqa"]
    assert len(eval_helpers.read_jsonl(tmp_path / "out" / "predictions" / "odinw.jsonl")) == LIMIT
    assert (tmp_path / "out" / "odinw_metrics.json").exists()


def _two_processes(arguments: list[str]) -> list[tuple[int, str]]:
    port = eval_helpers.free_port()
    processes = [eval_helpers.start_eval(arguments, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                                         JAX_PROCESS_ID=str(process_id), JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
                 for process_id in (0, 1)]
    outputs = [process.communicate(timeout=400)[0] for process in processes]
    return [(process.returncode, output) for process, output in zip(processes, outputs)]


def test_a_two_process_resume_checks_the_records_of_process_1s_shard(tmp_path):
    """A resume compares each written sample with the data; with two hosts, process 1 reads the odd samples, and their
    records (process 0 read the file) were never compared: an edited ground truth there was scored. Now every
    process gets the written records and checks its own shard's."""
    arguments = eval_helpers.flags(tmp_path, ["piqa"], limit=LIMIT, batch_size=4, dtype=DTYPE)
    assert [code for code, _ in _two_processes(arguments)] == [0, 0]
    predictions = tmp_path / "predictions" / "piqa.jsonl"
    records = eval_helpers.read_jsonl(predictions)[:6]  # a run that stopped after 6 samples ...
    records[1]["ground_truth"] = 1 - records[1]["ground_truth"]  # ... whose sample 1 (process 1's shard) was edited
    predictions.write_text("".join(json.dumps(record) + "\n" for record in records))
    outcomes = _two_processes([*arguments, "--resume"])
    for code, output in outcomes:
        assert code not in (0, None), output[-3000:]
        assert f"{predictions}: line 2 (id {records[1]['id']!r}) holds another ground_truth" in output, output[-3000:]
