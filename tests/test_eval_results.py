"""The predictions file: append order, fsynced batches, torn-line recovery, resume checks, ordering."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from multinet_jax.eval import results


def _record(index: int, prediction=None) -> dict:
    return {"id": f"s{index}", "sample_index": index, "raw_output": "x", "prediction": prediction, "ground_truth": index % 2}


def test_writer_appends_lines_that_read_back(tmp_path):
    path = tmp_path / "predictions" / "piqa.jsonl"
    with results.PredictionWriter(path, next_index=0) as writer:
        writer.write([_record(0, 1), _record(1, None)])
        writer.write([_record(2, 0)])
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["s0", "s1", "s2"]
    assert results.read_completed(path) == [_record(0, 1), _record(1, None), _record(2, 0)]


def test_writer_refuses_out_of_order_records(tmp_path):
    with results.PredictionWriter(tmp_path / "p.jsonl", next_index=0) as writer:
        with pytest.raises(results.ResultsError, match="expected 0"):
            writer.write([_record(1)])


def test_non_finite_output_values_become_null(tmp_path):
    record = {**_record(0, [1.0, math.nan, math.inf]), "raw_output": [math.nan, 2.0]}
    line = json.loads(results.encode_record(record))
    assert (line["prediction"], line["raw_output"]) == ([1.0, None, None], [None, 2.0])


def test_torn_last_line_is_dropped_and_truncated(tmp_path):
    path = tmp_path / "p.jsonl"
    complete = b"".join(results.encode_record(_record(i)) for i in range(3))
    path.write_bytes(complete + results.encode_record(_record(3))[:17])  # kill -9 in the middle of a write
    assert [r["id"] for r in results.read_completed(path)] == ["s0", "s1", "s2"]
    assert path.read_bytes() == complete
    with results.PredictionWriter(path, next_index=3) as writer:
        writer.write([_record(3)])
    assert path.read_bytes() == complete + results.encode_record(_record(3))


def test_corrupt_middle_line_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(results.encode_record(_record(0)) + b"{not json\n" + results.encode_record(_record(2)))
    with pytest.raises(results.ResultsError, match=r"p.jsonl: line 2 is not JSON"):
        results.read_completed(path)


def test_out_of_order_file_is_an_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(results.encode_record(_record(0)) + results.encode_record(_record(5)))
    with pytest.raises(results.ResultsError, match="line 2 has sample_index 5, expected 1"):
        results.read_completed(path)


def test_resumed_sample_must_match_the_data(tmp_path):
    completed = [_record(0), {**_record(1), "category": "color", "num_options": 3}]
    data_fields = {"category": "color", "num_options": np.int32(3), "layout": "cramped_room"}  # no layout in the record
    results.check_resumed_sample(tmp_path / "p.jsonl", completed, 1, "s1", np.int64(1), data_fields)
    with pytest.raises(results.ResultsError, match="line 2 has id 's1' but the dataset's sample 1 is 'other'"):
        results.check_resumed_sample(tmp_path / "p.jsonl", completed, 1, "other", 1, data_fields)
    with pytest.raises(results.ResultsError, match=r"line 2 \(id 's1'\) holds another ground_truth .*remove the file"):
        results.check_resumed_sample(tmp_path / "p.jsonl", completed, 1, "s1", 0, data_fields)
    # A category edited in the file (or changed in the data) would move the sample to another category's score.
    with pytest.raises(results.ResultsError, match=r"line 2 \(id 's1'\) holds another category than the dataset's "
                                                   r"sample \('color', the data's 'shape'\)"):
        results.check_resumed_sample(tmp_path / "p.jsonl", completed, 1, "s1", 1, {**data_fields, "category": "shape"})


def test_ordered_records_release_only_the_contiguous_prefix():
    ordered = results.OrderedRecords(next_index=2)
    assert ordered.add([_record(3), _record(5)]) == []
    assert [r["sample_index"] for r in ordered.add([_record(2)])] == [2, 3]
    assert ordered.leftover() == [5]
    assert [r["sample_index"] for r in ordered.add([_record(4)])] == [4, 5]
    assert ordered.leftover() == []


def test_gather_on_one_process_is_the_identity():
    records = [_record(0)]
    assert results.gather_records(records, has_more=True) == (records, True)
