"""Every non-TensorFlow file in ../shared/data read through its source, checked against the files read directly."""

from __future__ import annotations

import base64
import csv
import io
import json
import pathlib
import pickle
import re
import shutil

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from conftest import shared_path
from data_helpers import write_sqa3d
from multinet_jax import data, fingerprints
from multinet_jax.data import BadRecordError


def _json_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_piqa_multinet_sample_is_unlabeled():
    directory = shared_path("data", "multinet_sample", "piqa")
    rows = _json_lines(directory / "public" / "piqa.jsonl")
    source = data.make_source("piqa", directory, split="public")
    assert len(source) == len(rows) and not source.labeled
    for index, row in enumerate(rows):
        sample = source[index]
        assert sample["id"] == row["id"] and sample["ground_truth"] is None
        assert sample["options"] == [row["sol1"], row["sol2"]] and int(sample["num_options"]) == 2
        assert f"Goal: {row['goal']}\nSolution 0: {row['sol1']}\nSolution 1: {row['sol2']}\n" in sample["prompt"]  # all of it: test_protocol_prompts


def test_piqa_labels_file_beside_jsonl(tmp_path):
    shutil.copy(shared_path("data", "multinet_sample", "piqa", "public", "piqa.jsonl"), tmp_path / "valid.jsonl")
    (tmp_path / "valid-labels.lst").write_text("1\n0\n0\n1\n")
    source = data.make_source("piqa", tmp_path)
    assert [source[index]["ground_truth"] for index in range(4)] == [1, 0, 0, 1]


def test_a_labels_file_disagreeing_with_a_rows_own_label_is_refused_naming_both(tmp_path):
    """Rows carrying a label and a `*labels.lst` beside them: a disagreement is refused rather than one silently winning."""
    rows = [json.loads(line) for line in shared_path("data", "multinet_sample", "piqa", "public", "piqa.jsonl").read_text().splitlines()]
    (tmp_path / "valid.jsonl").write_text("".join(json.dumps({**row, "label": 1}) + "\n" for row in rows))
    (tmp_path / "valid-labels.lst").write_text("1\n0\n0\n1\n")
    with pytest.raises(ValueError, match=r"valid-labels\.lst:2: label 0, but record valid\.jsonl:2 holds label 1$"):
        data.make_source("piqa", tmp_path)
    (tmp_path / "valid-labels.lst").write_text("1\n" * len(rows))
    assert [data.make_source("piqa", tmp_path)[index]["ground_truth"] for index in range(len(rows))] == [1] * len(rows)


def test_hidden_files_are_not_data_as_the_fingerprint_does_not_cover_them(tmp_path):
    """An editor's or tool's `.scratch.jsonl` beside the split would be read as questions, and its edits go unseen by
    the run manifest's data fingerprint, which leaves hidden files out."""
    shutil.copy(shared_path("data", "multinet_sample", "piqa", "public", "piqa.jsonl"), tmp_path / "valid.jsonl")
    before = fingerprints.fingerprint(tmp_path)
    count = len(data.make_source("piqa", tmp_path))
    shutil.copy(tmp_path / "valid.jsonl", tmp_path / ".scratch.jsonl")
    assert len(data.make_source("piqa", tmp_path)) == count and fingerprints.fingerprint(tmp_path) == before


def test_piqa_hf_arrow_split():
    directory = shared_path("data", "piqa_validation")
    with pa.ipc.open_stream(str(directory / "data-00000-of-00001.arrow")) as reader:
        rows = reader.read_all().to_pylist()
    source = data.make_source("piqa", directory)
    assert len(source) == len(rows) == 1838
    for index in (0, 917, 1837):
        sample = source[index]
        assert sample["ground_truth"] == rows[index]["label"]
        assert sample["options"] == [rows[index]["sol1"], rows[index]["sol2"]]
        assert f"\n\nGoal: {rows[index]['goal']}\n" in sample["prompt"]
    assert sum(source[index]["ground_truth"] for index in range(len(source))) == sum(row["label"] for row in rows)


def test_odinw_subsets_options_and_images():
    """Samples in subset order, each crop decoded as is, its label among the options (the options and prompts are
    compared with MultiNet's in test_protocol_prompts.py)."""
    root = shared_path("data", "multinet_sample", "odinw", "public")
    source = data.make_source("odinw", root.parent, split="public")
    expected = [(subset, pair) for subset in sorted(path for path in root.iterdir() if path.is_dir())
                for pair in json.loads((subset / "object_caption_pairs.json").read_text())]
    assert len(source) == len(expected) == 4
    for index, (subset, pair) in enumerate(expected):
        sample = source[index]
        assert sample["options"][sample["ground_truth"]] == pair["category_name"]
        assert sample["id"] == f"{subset.name}/{pair['bbox_image']}"
        np.testing.assert_array_equal(sample["image"], np.asarray(Image.open(subset / "bbox_images" / pair["bbox_image"]).convert("RGB")))


def test_odinw_evaluates_only_multinets_subsets(tmp_path):
    root = shared_path("data", "multinet_sample", "odinw", "public")
    shutil.copytree(root / "NorthAmericaMushrooms", tmp_path / "NorthAmericaMushrooms")
    shutil.copytree(root / "AerialMaritimeDrone", tmp_path / "Raccoon")  # a subset MultiNet's table leaves out
    source = data.make_source("odinw", tmp_path)
    assert {source[index]["subset"] for index in range(len(source))} == {"NorthAmericaMushrooms"}
    shutil.rmtree(tmp_path / "NorthAmericaMushrooms")
    with pytest.raises(FileNotFoundError, match="no ODinW subset of MultiNet's 24.*Raccoon"):
        data.make_source("odinw", tmp_path)


def test_bfcl_multinet_sample_turns_and_ground_truth():
    directory = shared_path("data", "multinet_sample", "bfcl_v3", "public")
    questions, answers = _json_lines(directory / "questions.jsonl"), {row["id"]: row for row in _json_lines(directory / "answers.jsonl")}
    source = data.make_source("bfcl", directory.parent, split="public")
    assert len(source) == len(questions)
    for index, question in enumerate(questions):
        sample = source[index]
        assert sample["id"] == question["id"] and sample["turns"] == question["question"]
        assert sample["ground_truth"] == answers[question["id"]]["ground_truth"]
        assert sample["function_docs"] is None and sample["involved_classes"] == question["involved_classes"]
        assert sample["prompt"].endswith("\n User:" + question["question"][0][0]["content"])  # the first turn's input


def test_bfcl_official_files_with_function_docs():
    directory = shared_path("data", "bfcl_v3")
    questions = _json_lines(directory / "BFCL_v3_multi_turn_base.json")
    answers = {row["id"]: row["ground_truth"] for row in _json_lines(directory / "possible_answer" / "BFCL_v3_multi_turn_base.json")}
    source = data.make_source("bfcl", directory)
    assert len(source) == len(questions) == 200
    doc_names = {path.stem: [doc["name"] for doc in _json_lines(path)] for path in (directory / "multi_turn_func_doc").glob("*.json")}
    for index in range(len(source)):
        sample = source[index]
        assert sample["ground_truth"] == answers[questions[index]["id"]]
        assert len(sample["ground_truth"]) == len(sample["turns"]) == int(sample["num_turns"])
    sample = source[0]
    class_files = {"GorillaFileSystem": "gorilla_file_system", "TwitterAPI": "posting_api"}
    assert [doc["name"] for doc in sample["function_docs"]] == [name for cls in questions[0]["involved_classes"] for name in doc_names[class_files[cls]]]


def test_overcooked_pickle_grouped_by_trial():
    directory = shared_path("data", "multinet_sample", "overcooked_ai", "public")
    rows = pickle.loads((directory / "2020_hh_trials_train.pickle").read_bytes())
    order = sorted(range(len(rows)), key=lambda index: ([row["trial_id"] for row in rows].index(rows[index]["trial_id"]), index))
    source = data.make_source("overcooked_ai", directory)
    assert len(source) == len(rows)
    for position, row_index in enumerate(order):
        row, sample = rows[row_index], source[position]
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(row["state"]))).convert("RGB"))
        np.testing.assert_array_equal(sample["image"], image)
        moves = {(0, -1): 0, (0, 1): 1, (1, 0): 2, (-1, 0): 3, (0, 0): 4, "interact": 5}
        p0, p1 = (moves[tuple(a) if isinstance(a, list) else a] for a in json.loads(row["joint_action"]))
        assert sample["ground_truth"] == 6 * p0 + p1 and sample["player_actions"].tolist() == [p0, p1]
        assert sample["layout_name"] == row["layout_name"] and sample["trial_id"] == row["trial_id"]
        assert float(sample["time_left"]) == pytest.approx(float(row["time_left"]))
        assert sample["prompt"].startswith(f"Layout {row['layout_name']}. Time: {float(row['time_elapsed']):.0f}s elapsed, "
                                           f"{float(row['time_left']):.0f}s remaining. ")


def test_overcooked_csv_matches_pickle(tmp_path):
    directory = shared_path("data", "multinet_sample", "overcooked_ai", "public")
    (tmp_path / "csv").mkdir()
    (tmp_path / "pickle").mkdir()
    shutil.copy(directory / "2020_hh_trials_train.csv", tmp_path / "csv")
    shutil.copy(directory / "2020_hh_trials_train.pickle", tmp_path / "pickle")
    with (directory / "2020_hh_trials_train.csv").open(newline="") as file:
        assert len(list(csv.DictReader(file))) == 5
    from_csv, from_pickle = data.make_source("overcooked_ai", tmp_path / "csv"), data.make_source("overcooked_ai", tmp_path / "pickle")
    assert data.make_source("overcooked_ai", directory).path.suffix == ".pickle"  # both present: MultiNet's pickle is read
    for index in range(len(from_pickle)):
        assert from_csv[index]["id"] == from_pickle[index]["id"] and from_csv[index]["ground_truth"] == from_pickle[index]["ground_truth"]
        np.testing.assert_array_equal(from_csv[index]["image"], from_pickle[index]["image"])


def test_overcooked_split_statistics_are_multinets_running_stats_bit_for_bit(tmp_path):
    """MultiNet's Pi0 script accumulated the Overcooked statistics with openpi's float32 `RunningStats` over its
    layout-wise batches of 5: `fixtures/multinet_overcooked_stats.json` holds what MultiNet's own dataloader and
    `get_dataset_stats` computed for these rows (`generate_multinet_overcooked_stats.py.txt`)."""
    reference = json.loads((pathlib.Path(__file__).parent / "fixtures" / "multinet_overcooked_stats.json").read_text())
    png = io.BytesIO()
    Image.new("RGB", (2, 2), (10, 20, 30)).save(png, "PNG")
    image = base64.b64encode(png.getvalue()).decode("ascii")
    rows = [{"state": image, "joint_action": joint_action, "reward": "0", "score": "0", "time_left": time_left,
             "time_elapsed": time_elapsed, "layout_name": layout, "trial_id": trial}
            for trial, layout, joint_action, time_left, time_elapsed in reference["rows"]]
    (tmp_path / "trials.pickle").write_bytes(pickle.dumps(rows))
    multinet = data.action_stats("overcooked_ai", tmp_path, kind="multinet")
    assert (multinet["mean"], multinet["std"]) == (reference["multinet_stats"]["mean"], reference["multinet_stats"]["std"])
    exact = data.action_stats("overcooked_ai", tmp_path, kind="exact")
    assert exact["std"] != multinet["std"] and exact["count"] == multinet["count"] == len(rows)


def test_overcooked_action_stats_over_joint_indices():
    stats = data.action_stats("overcooked_ai", shared_path("data", "multinet_sample", "overcooked_ai"), split="public")
    source = data.make_source("overcooked_ai", shared_path("data", "multinet_sample", "overcooked_ai", "public"))
    joint = np.array([source[index]["ground_truth"] for index in range(len(source))], float)
    assert stats["size"] == [1] and stats["min"] == [joint.min()] and stats["mean"] == [pytest.approx(joint.mean())]


def test_sqa3d_published_format(tmp_path):
    written = write_sqa3d(tmp_path / "sqa3d")
    source = data.make_source("sqa3d", tmp_path / "sqa3d", split="test")
    # scene0099_01 has no image, question ...003 no annotation: both skipped, as MultiNet did, and counted
    assert len(source) == len(written["questions"]) - 2
    assert source.skipped_without_image == 1 and source.skipped_without_annotation == 1
    first = source[0]
    assert first["ground_truth"] == "table" and first["id"] == "220602000000"
    np.testing.assert_array_equal(first["image"], written["image"])
    assert "Alternative" not in source[1]["prompt"] and source[1]["ground_truth"] == "two"


def test_sqa3d_annotation_without_answers_is_a_bad_record(tmp_path):
    written = write_sqa3d(tmp_path)
    annotations = [{**annotation, "answers": []} if index == 1 else annotation for index, annotation in enumerate(written["annotations"])]
    (tmp_path / "v1_balanced_sqa_annotations_test_scannetv2.json").write_text(json.dumps({"annotations": annotations}))
    with pytest.raises(BadRecordError, match="sqa3d: record .*\\[1\\]: field 'answers'"):
        data.make_source("sqa3d", tmp_path, split="test")[1]


def test_sqa3d_missing_split_file_names_the_file(tmp_path):
    write_sqa3d(tmp_path, split="val")
    with pytest.raises(FileNotFoundError, match="v1_balanced_questions_test_scannetv2.json"):
        data.make_source("sqa3d", tmp_path, split="test")


def test_unknown_domain_and_missing_split():
    with pytest.raises(ValueError, match="unknown domain"):
        data.make_source("atari", shared_path("data", "bfcl_v3"))
    with pytest.raises(FileNotFoundError, match=r"piqa_validation/train: no such split folder of piqa"):
        data.make_source("piqa", shared_path("data", "piqa_validation"), split="train")


@pytest.mark.parametrize("domain, folder", [("piqa", "piqa"), ("bfcl", "bfcl_v3"), ("odinw", "odinw"),
                                            ("openx_bimanual", "openx_bimanual")])
def test_the_folder_above_the_domains_is_refused_naming_the_domains_folder(domain, folder):
    """eval's --data_dir holds the domains' folders; data.load takes one domain's folder: given the one above, the
    error names the folder to pass."""
    root = shared_path("data", "multinet_sample")
    with pytest.raises(FileNotFoundError, match=rf"; {re.escape(str(root))} holds {domain}'s folder: pass "
                                                rf"data_dir={re.escape(str(root / folder))} \("):
        data.make_source(domain, root, split="public")
    assert data.make_source(domain, root / folder, split="public") is not None  # what the error says to pass


def test_odinw_categories_without_names_name_the_file_and_field(tmp_path):
    shutil.copytree(shared_path("data", "multinet_sample", "odinw", "public", "NorthAmericaMushrooms"), tmp_path / "NorthAmericaMushrooms")
    path = tmp_path / "NorthAmericaMushrooms" / "categories.json"
    path.write_text(json.dumps({key: value for key, value in json.loads(path.read_text()).items() if key != "categories"}))
    with pytest.raises(ValueError, match=r"NorthAmericaMushrooms/categories.json: categories: expected a list of"):
        data.make_source("odinw", tmp_path)


def test_bfcl_turn_without_text_content_is_a_bad_record(tmp_path):
    directory = shared_path("data", "multinet_sample", "bfcl_v3", "public")
    questions = _json_lines(directory / "questions.jsonl")
    questions[0]["question"][1] = [{"role": "user", "content": None}]
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps(question) + "\n" for question in questions))
    shutil.copy(directory / "answers.jsonl", tmp_path)
    with pytest.raises(BadRecordError, match="bfcl: record .*field 'question'.*text `content`"):
        data.make_source("bfcl", tmp_path)[0]
