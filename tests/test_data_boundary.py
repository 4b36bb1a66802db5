"""Folders a loader could read two ways, and fields of the wrong type, refused at the boundary naming the file and
field (audit 16): each case is a publisher's real format (Hugging Face Arrow split, tf.data snapshots, pickles,
CSVs, JSON Lines) with one thing wrong."""

from __future__ import annotations

import csv
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
from data_helpers import writable_copy, write_sqa3d
from multinet_jax import data
from multinet_jax.data import BadRecordError, openx


# ---------------------------------------------------------------------------- PIQA (Hugging Face save_to_disk)


def _piqa_split(directory: pathlib.Path, parts: int) -> pathlib.Path:
    """The shared PIQA validation split saved as `datasets.save_to_disk` writes `parts` shards: data-NNNNN-of-MMMMM.arrow
    streams (the original schema and its metadata), state.json listing them, the original dataset_info.json."""
    source = shared_path("data", "piqa_validation")
    with pa.ipc.open_stream(str(source / "data-00000-of-00001.arrow")) as reader:
        table = reader.read_all()
    directory.mkdir()
    shutil.copy(source / "dataset_info.json", directory)
    state = json.loads((source / "state.json").read_text())
    bounds = np.linspace(0, table.num_rows, parts + 1).astype(int)
    state["_data_files"] = []
    for part, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        name = f"data-{part:05d}-of-{parts:05d}.arrow"
        with pa.ipc.new_stream(str(directory / name), table.schema) as writer:
            writer.write_table(table.slice(start, stop - start))
        state["_data_files"].append({"filename": name})
    (directory / "state.json").write_text(json.dumps(state))
    return directory


def test_piqa_arrow_reads_the_files_state_json_lists_in_its_order(tmp_path):
    directory = _piqa_split(tmp_path / "piqa", parts=2)
    state = json.loads((directory / "state.json").read_text())
    state["_data_files"].reverse()  # datasets.load_from_disk reads them in the listed order, not the sorted one
    (directory / "state.json").write_text(json.dumps(state))
    source = data.make_source("piqa", directory)
    assert len(source) == 1838 and source[0]["id"] == "data-00001-of-00002.arrow:0"


def test_piqa_arrow_stray_copy_beside_the_split_is_refused(tmp_path):
    """A copy left beside the split would be read too, every question twice."""
    directory = writable_copy(shared_path("data", "piqa_validation"), tmp_path / "piqa")
    shutil.copy(directory / "data-00000-of-00001.arrow", directory / "data-00000-of-00001-old.arrow")
    with pytest.raises(ValueError, match=r"piqa/data-00000-of-00001-old.arrow: not listed in state.json's _data_files"):
        data.make_source("piqa", directory)


def test_piqa_arrow_missing_listed_file_is_refused(tmp_path):
    directory = _piqa_split(tmp_path / "piqa", parts=2)
    (directory / "data-00001-of-00002.arrow").unlink()
    with pytest.raises(FileNotFoundError, match=r"piqa/data-00001-of-00002.arrow: missing, though state.json lists it"):
        data.make_source("piqa", directory)


def test_a_selected_piqa_subset_loads_though_dataset_info_keeps_the_parents_count(tmp_path):
    """`datasets`' `select` keeps the parent's `dataset_info.json` (1838 rows for validation) and writes the files it
    kept into `state.json`: the files listed are read, the recorded count is not held against them."""
    directory = _piqa_split(tmp_path / "piqa", parts=2)
    (directory / "data-00001-of-00002.arrow").unlink()
    state = json.loads((directory / "state.json").read_text())
    state["_data_files"] = state["_data_files"][:1]
    (directory / "state.json").write_text(json.dumps(state))
    assert len(data.make_source("piqa", directory)) == 919


# ---------------------------------------------------------------------------- Open-X


def test_translated_shard_without_snapshot_metadata_is_refused(tmp_path):
    """A shard folder whose metadata is missing (a partial copy) was skipped: one episode fewer, silently."""
    directory = writable_copy(shared_path("data", "multinet_sample", "openx_multi_embodiment", "public"), tmp_path / "robovqa")
    (directory / "translated_shard_1" / "snapshot.metadata").unlink()
    with pytest.raises(ValueError, match=r"robovqa/translated_shard_1: no snapshot.metadata"):
        data.make_source("openx_multi_embodiment", directory, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("inside", ["", "converted"])
def test_convert_refuses_an_output_inside_its_input(tmp_path, inside):
    directory = writable_copy(shared_path("data", "multinet_sample", "openx_bimanual", "public"), tmp_path / "bimanual")
    with pytest.raises(ValueError, match=r"the output is inside the input"):
        openx.convert(directory, directory / inside)
    assert sorted(path.name for path in directory.iterdir()) == ["translated_shard_0"]


def test_converted_steps_beside_raw_shards_are_refused(tmp_path):
    """Shards added beside a conversion were left unread: the folder's manifest made it "converted"."""
    pytest.importorskip("tensorflow")
    source = shared_path("data", "multinet_sample", "openx_multi_embodiment", "public")
    converted = tmp_path / "converted"
    openx.convert(source, converted)
    shutil.copytree(source / "translated_shard_1", converted / "translated_shard_1")
    with pytest.raises(ValueError, match=r"converted: holds both converted steps \(multinet_steps.json\) and raw Open-X data"):
        data.make_source("openx_multi_embodiment", converted)


# ---------------------------------------------------------------------------- Overcooked


def _overcooked_rows() -> list[dict]:
    return pickle.loads(shared_path("data", "multinet_sample", "overcooked_ai", "public", "2020_hh_trials_train.pickle").read_bytes())


def _write_csv(path: pathlib.Path, rows: list[dict], encoding: str = "utf-8") -> None:
    with path.open("w", newline="", encoding=encoding) as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_overcooked_reads_the_pickle_as_multinet_and_refuses_a_csv_beside_it_with_other_rows(tmp_path):
    rows = _overcooked_rows()
    (tmp_path / "2020_hh_trials_test.pickle").write_bytes(pickle.dumps(rows))
    _write_csv(tmp_path / "2020_hh_trials_test.csv", rows)
    assert data.make_source("overcooked_ai", tmp_path).path.suffix == ".pickle"  # the same rows: MultiNet's file is read
    _write_csv(tmp_path / "2020_hh_trials_test.csv", rows[:3])
    with pytest.raises(ValueError, match=r"2020_hh_trials_test.csv: holds other rows than 2020_hh_trials_test.pickle"):
        data.make_source("overcooked_ai", tmp_path)


def test_overcooked_row_without_trial_id_is_a_bad_record(tmp_path):
    """MultiNet's loader raised KeyError; grouped under a trial "None", the rows were scored as one trial."""
    rows = _overcooked_rows()
    del rows[2]["trial_id"]
    (tmp_path / "trials.pickle").write_bytes(pickle.dumps(rows))
    with pytest.raises(BadRecordError, match=r"overcooked_ai: record trials.pickle:2: field 'trial_id': missing$"):
        data.make_source("overcooked_ai", tmp_path)


def test_overcooked_csv_with_a_byte_order_mark_reads_as_without(tmp_path):
    rows = _overcooked_rows()
    (tmp_path / "plain").mkdir()
    (tmp_path / "bom").mkdir()
    _write_csv(tmp_path / "plain" / "trials.csv", rows)
    _write_csv(tmp_path / "bom" / "trials.csv", rows, encoding="utf-8-sig")
    plain, bom = data.make_source("overcooked_ai", tmp_path / "plain"), data.make_source("overcooked_ai", tmp_path / "bom")
    assert bom[0]["id"] == plain[0]["id"]
    np.testing.assert_array_equal(bom[0]["image"], plain[0]["image"])


def test_overcooked_missing_state_is_named_once(tmp_path):
    rows = _overcooked_rows()
    del rows[0]["state"]
    (tmp_path / "trials.pickle").write_bytes(pickle.dumps(rows))
    with pytest.raises(BadRecordError, match=r"^overcooked_ai: record trials.pickle:0: field 'state': missing$"):
        data.make_source("overcooked_ai", tmp_path)[0]


# ---------------------------------------------------------------------------- SQA3D


def test_sqa3d_scene_with_two_images_is_refused_naming_both(tmp_path):
    """MultiNet kept whichever image its rglob yielded last; here the depth map sorted first and was scored."""
    write_sqa3d(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "scene0015_00_bev_depth.png")
    with pytest.raises(ValueError, match=r"scene0015_00_vh_clean_top_down.png: a second image of scene0015_00, beside "
                                         r".*scene0015_00_bev_depth.png"):
        data.make_source("sqa3d", tmp_path, split="test")


@pytest.mark.parametrize("answer", [{}, {"answer": None}, {"answer": ["red", "blue"]}, {"answer": ""}, "red"])
def test_sqa3d_first_answer_not_a_text_is_a_bad_record(tmp_path, answer):
    written = write_sqa3d(tmp_path)
    annotations = [{**item, "answers": [answer]} if index == 0 else item for index, item in enumerate(written["annotations"])]
    (tmp_path / "v1_balanced_sqa_annotations_test_scannetv2.json").write_text(json.dumps({"annotations": annotations}))
    source = data.make_source("sqa3d", tmp_path, split="test")
    with pytest.raises(BadRecordError, match=r"sqa3d: record .*\[0\]: field 'answers\[0\].answer': expected a non-empty text"):
        source[0]
    assert source[1]["ground_truth"] == "two"


# ---------------------------------------------------------------------------- BFCL


def _bfcl_copy(tmp_path: pathlib.Path) -> tuple[pathlib.Path, list[dict], list[dict]]:
    directory = writable_copy(shared_path("data", "multinet_sample", "bfcl_v3", "public"), tmp_path / "bfcl")
    read = lambda name: [json.loads(line) for line in (directory / name).read_text().splitlines() if line.strip()]
    return directory, read("questions.jsonl"), read("answers.jsonl")


def _write_lines(path: pathlib.Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.mark.parametrize("ground_truth", [[["ls(a=True)"], "touch(file_name='todo.txt')"], "ls()", [[1]], None])
def test_bfcl_malformed_ground_truth_is_refused_at_load_naming_the_line(tmp_path, ground_truth):
    """It was found only when scoring, after the model ran on every conversation, naming no file."""
    directory, _, answers = _bfcl_copy(tmp_path)
    answers[1]["ground_truth"] = ground_truth
    _write_lines(directory / "answers.jsonl", answers)
    with pytest.raises(BadRecordError, match=r"bfcl: record answers.jsonl:2: field 'ground_truth': expected a list of turns, "
                                             r"each a list of call strings"):
        data.make_source("bfcl", directory)


@pytest.mark.parametrize("field, value, expected", [
    ("involved_classes", "GorillaFileSystem", "a list of strings"),
    ("involved_classes", [1], "a list of strings"),
    ("path", "GorillaFileSystem.ls", "a list of strings"),
    ("initial_config", "not a dict", "an object"),
])
def test_bfcl_environment_field_of_another_type_is_a_bad_record(tmp_path, field, value, expected):
    """A string of classes was joined letter by letter into the prompt ("G, o, r, i, l, l, a")."""
    directory, questions, _ = _bfcl_copy(tmp_path)
    questions[0][field] = value
    _write_lines(directory / "questions.jsonl", questions)
    source = data.make_source("bfcl", directory)
    with pytest.raises(BadRecordError, match=rf"bfcl: record questions.jsonl:1: field '{field}': expected {expected}"):
        source[0]
    assert source[1]["involved_classes"] == questions[1]["involved_classes"]


def test_a_bfcl_folder_holding_both_layouts_is_refused(tmp_path):
    """MultiNet's questions/answers.jsonl beside BFCL's own file: the first layout was read without a word."""
    directory, _, _ = _bfcl_copy(tmp_path)
    shutil.copy(shared_path("data", "bfcl_v3", "BFCL_v3_multi_turn_base.json"), directory / "BFCL_v3_multi_turn_base.json")
    with pytest.raises(ValueError, match=r"bfcl: holds both questions.jsonl and BFCL_v3_multi_turn_base.json; keep one layout"):
        data.make_source("bfcl", directory)


# ---------------------------------------------------------------------------- ODinW


@pytest.mark.parametrize("bbox_image", ["hidden", "absolute", "climbing"])
def test_odinw_bbox_image_outside_the_fingerprinted_crops_is_a_bad_record(tmp_path, bbox_image):
    """The data fingerprint covers the non-hidden files under the data folder: a crop read from elsewhere could change
    unseen by the run manifest."""
    subset = writable_copy(shared_path("data", "multinet_sample", "odinw", "public", "NorthAmericaMushrooms"),
                           tmp_path / "data" / "NorthAmericaMushrooms")
    pairs = json.loads((subset / "object_caption_pairs.json").read_text())
    crop = subset / "bbox_images" / pairs[0]["bbox_image"]
    outside = shutil.copy(crop, tmp_path / "outside.jpg")
    shutil.copy(crop, subset / "bbox_images" / ".hidden.jpg")
    pairs[0]["bbox_image"] = {"hidden": ".hidden.jpg", "absolute": str(outside), "climbing": "../../../outside.jpg"}[bbox_image]
    (subset / "object_caption_pairs.json").write_text(json.dumps(pairs))
    source = data.make_source("odinw", tmp_path / "data")
    with pytest.raises(BadRecordError, match=r"odinw: record .*\[0\]: field 'bbox_image': .*not a file inside "
                                             r"NorthAmericaMushrooms/bbox_images"):
        source[0]
    assert source[1]["id"] == f"NorthAmericaMushrooms/{pairs[1]['bbox_image']}"


# ---------------------------------------------------------------------------- splits


def test_domain_folder_of_split_folders_without_a_split_says_to_pass_one():
    directory = shared_path("data", "multinet_sample", "piqa")
    with pytest.raises(FileNotFoundError, match=r"no split was given and .*/piqa holds the folders public: pass --split=<name>"):
        data.make_source("piqa", directory)


@pytest.mark.parametrize("stray", ["old-valid-labels.lst", "train.jsonl"])
def test_a_piqa_folder_holding_two_labels_files_or_two_splits_is_refused_naming_both(tmp_path, stray):
    """A stray labels file sorted first was read as the labels; a second jsonl was concatenated with the first (two
    splits scored as one). MultiNet's PIQADataset reads one file."""
    shutil.copy(shared_path("data", "multinet_sample", "piqa", "public", "piqa.jsonl"), tmp_path / "valid.jsonl")
    (tmp_path / "valid-labels.lst").write_text("1\n0\n0\n1\n")
    shutil.copy(tmp_path / ("valid-labels.lst" if stray.endswith(".lst") else "valid.jsonl"), tmp_path / stray)
    pattern = "*labels.lst" if stray.endswith(".lst") else "*.jsonl"
    with pytest.raises(ValueError, match=rf"several {re.escape(pattern)} files \['{re.escape(min(stray, 'valid' + pattern[1:]))}'"):
        data.make_source("piqa", tmp_path)
