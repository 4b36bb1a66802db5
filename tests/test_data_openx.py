"""Open-X and RoboVQA: MultiNet's tf.data snapshots and RLDS written by TFDS (tfrecord and ArrayRecord)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import threading

import numpy as np
import pytest

from conftest import shared_path
from data_helpers import CharTokenizer, tiny_rlds_episodes, write_tiny_rlds, write_translated_shards
from multinet_jax import data
from multinet_jax.data import openx, prompts, steps

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("multinet_jax_cache")


def _snapshot_steps(shard_dir):
    """Steps of one translated shard read with TensorFlow directly."""
    return list(tf.data.Dataset.load(str(shard_dir)).as_numpy_iterator())


@pytest.fixture(scope="module")
def bimanual(cache_dir):
    shard = shared_path("data", "multinet_sample", "openx_bimanual", "public", "translated_shard_0")
    source = data.make_source("openx_bimanual", shard.parent.parent, split="public", cache_dir=cache_dir)
    return source, _snapshot_steps(shard)


def test_bimanual_snapshot_fields(bimanual):
    source, expected = bimanual
    assert len(source) == len(expected) == 8
    for index, step in enumerate(expected):
        sample = source[index]
        assert sample["id"] == f"translated_shard_0/{index}"
        assert sample["prompt"] == step["language_instruction"].decode()
        np.testing.assert_array_equal(sample["image"], step["observation"]["image"])
        np.testing.assert_array_equal(np.float32(sample["ground_truth"]), step["action"])
        np.testing.assert_array_equal(sample["state"], np.concatenate([step["observation"]["pose_l"], step["observation"]["pose_r"]]))
        assert bool(sample["is_last"]) == bool(step["is_last"])


def test_bimanual_batches_are_model_ready(bimanual, cache_dir):
    _, expected = bimanual
    directory = shared_path("data", "multinet_sample", "openx_bimanual")
    batches = list(data.load("openx_bimanual", directory, split="public", cache_dir=cache_dir, tokenizer=CharTokenizer(), batch_size=3, shard_index=0, shard_count=1))
    assert len(batches) == 3
    assert [batch["_mask"].tolist() for batch in batches] == [[True] * 3, [True] * 3, [True, True, False]]
    assert np.concatenate([batch["sample_index"] for batch in batches]).tolist() == list(range(8)) + [-1]
    first = batches[0]  # the stored uint8 image at its native size: the model resizes it, as openpi does
    assert first["image/base_0_rgb"].shape == (3, 256, 256, 3) and first["image/base_0_rgb"].dtype == np.uint8
    np.testing.assert_array_equal(first["image/base_0_rgb"][0], expected[0]["observation"]["image"])
    assert first["image_mask/base_0_rgb"].all() and not first["image_mask/left_wrist_0_rgb"].any()
    assert first["image/right_wrist_0_rgb"].shape == (3, 256, 256, 3) and not first["image/right_wrist_0_rgb"].any()
    np.testing.assert_array_equal(first["state"][0, :12], np.concatenate([expected[0]["observation"]["pose_l"], expected[0]["observation"]["pose_r"]]))
    assert np.all(first["state"][:, 12:] == 0)
    ids = CharTokenizer().prompt_ids("Reach a towel.", "openpi")
    assert expected[0]["language_instruction"] == b"Reach a towel."
    assert first["tokenized_prompt"].shape == (3, 48)  # MultiNet's Open-X length
    np.testing.assert_array_equal(first["tokenized_prompt"][0], ids + [0] * (48 - len(ids)))
    np.testing.assert_array_equal(first["tokenized_prompt_mask"][0], np.arange(48) < len(ids))
    assert batches[2]["ground_truth"][2] is None and not batches[2]["image/base_0_rgb"][2].any()


def test_bimanual_action_stats(bimanual, cache_dir):
    _, expected = bimanual
    actions = np.stack([step["action"] for step in expected]).astype(np.float64)
    stats = data.action_stats("openx_bimanual", shared_path("data", "multinet_sample", "openx_bimanual"), split="public", cache_dir=cache_dir)
    assert stats["size"] == [14] and stats["count"] == 8
    np.testing.assert_allclose(stats["min"], actions.min(0))
    np.testing.assert_allclose(stats["max"], actions.max(0))
    np.testing.assert_allclose(stats["mean"], actions.mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats["std"], actions.std(0), rtol=1e-9, atol=1e-12)
    assert np.all(np.array(stats["q01"]) >= actions.min(0) - 1e-9) and np.all(np.array(stats["q99"]) <= actions.max(0) + 1e-9)


def test_multinets_vlm_instruction_only_where_asked(cache_dir):
    """MultiNet's VLM quadrupedal instruction describes saytap's 12 joints: a split of other dims (here the bimanual
    sample's 14, read as openx_quadrupedal) opens for a model answering with actions, and is refused, naming the
    split, only where a run asks the instruction (`instruction_prompt`, Magma's text answers)."""
    directory = shared_path("data", "multinet_sample", "openx_bimanual")
    plain = data.make_source("openx_quadrupedal", directory, split="public", cache_dir=cache_dir)
    assert prompts.INSTRUCTION_PROMPT not in plain[0] and len(plain[0]["ground_truth"]) == 14
    asked = data.make_source("openx_quadrupedal", directory, split="public", cache_dir=cache_dir, instruction_prompt=True)
    with pytest.raises(ValueError, match=f"^{re.escape(str(directory / 'public'))}: openx_quadrupedal: the split's actions "
                                         "have 14 dims, MultiNet's utokyo_saytap_converted_externally_to_rlds definitions describe 12"):
        asked[0]
    with pytest.raises(ValueError, match=f"^{re.escape(str(directory / 'public'))}: MultiNet defines no VLM instruction "
                                         "prompt for openx_bimanual \\(it has definitions for openx_quadrupedal\\)"):
        data.make_source("openx_bimanual", directory, split="public", cache_dir=cache_dir, instruction_prompt=True)


def test_robovqa_last_frame_question_and_answer(cache_dir):
    directory = shared_path("data", "multinet_sample", "openx_multi_embodiment")
    expected = [step for index in (0, 1) for step in _snapshot_steps(directory / "public" / f"translated_shard_{index}")]
    source = data.make_source("openx_multi_embodiment", directory, split="public", cache_dir=cache_dir)
    assert len(source) == len(expected) == 2
    for index, step in enumerate(expected):
        sample = source[index]
        question = step["observation"]["raw_text_question"].decode()
        context, asked = question.split("Q:", 1)
        assert sample["prompt"].endswith(f"\n\nQuestion: Task and Context: {context.strip()}\n Question: {asked.strip()}")
        assert sample["ground_truth"] == step["observation"]["raw_text_answer"].decode()
        np.testing.assert_array_equal(sample["image"], step["observation"]["images"][-1])
        assert sample["id"] == f"translated_shard_{index}/0"
    assert data.action_stats("openx_multi_embodiment", directory, split="public", cache_dir=cache_dir) is None


def test_robovqa_text_fields_stored_as_vectors_are_refused_naming_the_shard_and_step(tmp_path):
    """MultiNet's sample with its question and answer saved as 1-element string vectors (its loader's `.numpy().decode()`
    cannot read them): the conversion names the shard and the step, not an internal TypeError."""
    tf = pytest.importorskip("tensorflow")
    source = shared_path("data", "multinet_sample", "openx_multi_embodiment", "public", "translated_shard_0")
    target = tmp_path / "openx_multi_embodiment" / "public" / "translated_shard_0"

    def as_vectors(step):
        observation = {**step["observation"], **{key: tf.reshape(step["observation"][key], [1])
                                                  for key in ("raw_text_question", "raw_text_answer")}}
        return {**step, "observation": observation}

    tf.data.Dataset.load(str(source)).map(as_vectors).save(str(target))
    with pytest.raises(ValueError, match=f"^{re.escape(str(target.parent))}: step translated_shard_0/0: field "
                                         "'observation/raw_text_answer': an array of <U\\d+ \\(shape \\[1\\]\\)"):
        data.make_source("openx_multi_embodiment", tmp_path / "openx_multi_embodiment", split="public",
                         cache_dir=tmp_path / "cache")


ACTION_STATS = json.loads((pathlib.Path(__file__).parent / "fixtures" / "multinet_openx_action_stats.json").read_text())


@pytest.mark.parametrize("case", sorted(ACTION_STATS["cases"]))
def test_split_statistics_and_ground_truth_are_multinets_for_dict_and_float64_actions(case, tmp_path):
    """`fixtures/multinet_openx_action_stats.json`: MultiNet's `OpenXDataset` on the same shards. An action dict's
    statistics are float64 sums of numpy's float32 squares (a plain float32 tensor's are float32 sums of TensorFlow's:
    `test_protocol_openx_reference`); a float64 action's ground truth stays float64."""
    reference = ACTION_STATS["cases"][case]
    actions = reference["actions"] if case == "dict_action" else [np.asarray(row, np.float64) for row in reference["actions"]]
    directory = write_translated_shards(tmp_path / reference["domain"], [actions])
    source = data.make_source(reference["domain"], directory, cache_dir=tmp_path / "cache")
    stats = source.action_stats("multinet")
    for key, expected in reference["stats"].items():
        np.testing.assert_array_equal(stats[key], expected, err_msg=key)
    assert [source[index]["ground_truth"] for index in range(len(source))] == reference["ground_truth"]


@pytest.fixture(scope="module", params=["tfrecord", "array_record"])
def tiny_rlds(request, tmp_path_factory):
    return write_tiny_rlds(tmp_path_factory.mktemp("rlds"), request.param)


def _expected_by_key():
    return {(step["language_instruction"], index): step for steps_ in tiny_rlds_episodes() for index, step in enumerate(steps_)}


def test_rlds_read_back(tiny_rlds, cache_dir):
    expected = _expected_by_key()
    source = data.make_source("openx_tiny_rlds", tiny_rlds, cache_dir=cache_dir)
    assert len(source) == len(expected) == 9
    seen = set()
    for index in range(len(source)):
        sample = source[index]
        key = (sample["prompt"], int(sample["step_id"]))
        step = expected[key]
        seen.add(key)
        np.testing.assert_array_equal(sample["image"], step["observation"]["image"])
        np.testing.assert_array_equal(sample["state"], step["observation"]["state"])
        action = step["action"]  # dict: keys sorted (gripper, terminate, world_vector), int leaf dropped
        np.testing.assert_array_equal(sample["action"], np.concatenate([action["gripper"], action["world_vector"]]))
        assert sample["action_dict"]["terminate"] == int(action["terminate"])
        assert sample["id"] == f"test/{sample['episode_id'].split('/')[1]}/{int(sample['step_id'])}"
    assert seen == set(expected)


def test_rlds_convert_then_load_converted(tiny_rlds, tmp_path):
    manifest = openx.convert(tiny_rlds, tmp_path / "converted", steps_per_file=4)
    assert manifest["num_steps"] == 9 and manifest["num_episodes"] == 3 and len(manifest["files"]) == 3
    assert manifest["action_stats"]["size"] == [4]
    assert manifest["features"]["action/world_vector"] == ["float32", [3]]
    assert openx.detect_format(tmp_path / "converted") == "steps"
    source = data.make_source("openx_tiny_rlds", tmp_path / "converted")
    again = steps.StepSource(tmp_path / "converted")
    assert [source[index]["id"] for index in range(9)] == [openx.step_record_name(again[index]) for index in range(9)]
    second = openx.convert(tiny_rlds, tmp_path / "converted_again", steps_per_file=4)
    assert [steps.StepSource(tmp_path / "converted_again")[i]["observation/state"].tolist() for i in range(9)] == [again[i]["observation/state"].tolist() for i in range(9)]
    assert second["action_stats"] == manifest["action_stats"]


def test_rlds_conversion_is_cached(tiny_rlds, cache_dir):
    first = openx.ensure_converted(tiny_rlds, cache_dir=cache_dir)
    stamp = (first / steps.MANIFEST).stat().st_mtime_ns
    assert openx.ensure_converted(tiny_rlds, cache_dir=cache_dir) == first
    assert (first / steps.MANIFEST).stat().st_mtime_ns == stamp


def test_openx_bad_records_name_the_field():
    step = {openx.EPISODE_KEY: "ep", openx.STEP_KEY: np.int64(3), "observation/image": np.zeros((4, 4), np.uint8), "action": np.zeros(2, np.float32)}
    with pytest.raises(data.BadRecordError, match="openx_x: record ep/3: field 'observation/image': expected uint8"):
        openx.openx_sample(step, "openx_x")
    step["observation/image"] = np.zeros((4, 4, 3), np.uint8)
    step["action"] = np.zeros(2, np.int64)
    with pytest.raises(data.BadRecordError, match="field 'action': expected floats"):
        openx.openx_sample(step, "openx_x")
    del step["action"]
    with pytest.raises(data.BadRecordError, match="field 'action': missing"):
        openx.openx_sample(step, "openx_x")


def test_not_an_openx_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an Open-X dataset"):
        data.make_source("openx_bimanual", tmp_path)


def _tree(directory):
    return {path.relative_to(directory).as_posix(): path.stat().st_mtime_ns for path in sorted(directory.rglob("*"))}


def test_conversion_lands_in_the_cache_and_never_in_the_data_folder(tmp_path, monkeypatch):
    shard = shared_path("data", "multinet_sample", "openx_bimanual", "public", "translated_shard_0")
    data_dir = tmp_path / "data"
    shutil.copytree(shard, data_dir / "translated_shard_0")  # writable, as a shared NFS folder may be
    before = _tree(data_dir)
    monkeypatch.setenv("MULTINET_JAX_CACHE", str(tmp_path / "cache"))
    converted = openx.ensure_converted(data_dir)
    assert converted.parent == tmp_path / "cache" / "converted"
    assert _tree(data_dir) == before
    assert len(steps.StepSource(converted)) == 8 and steps.read_manifest(converted)["action_stats"]["size"] == [14]
    assert openx.ensure_converted(data_dir) == converted

    # Touched, the source is the same data; with a second shard it is another dataset, converted anew beside the first.
    touched = data_dir / "translated_shard_0" / "snapshot.metadata"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    assert openx.ensure_converted(data_dir) == converted
    shutil.copytree(shard, data_dir / "translated_shard_1")
    reconverted = openx.ensure_converted(data_dir)
    assert reconverted != converted and reconverted.parent == converted.parent
    assert len(steps.StepSource(reconverted)) == 16


def test_processes_sharing_a_cache_convert_once(tmp_path, caplog):
    shard = shared_path("data", "multinet_sample", "openx_bimanual", "public", "translated_shard_0")
    cache = tmp_path / "cache"
    results = []
    threads = [threading.Thread(target=lambda: results.append(openx.ensure_converted(shard.parent, cache_dir=cache)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert [path.name for path in (cache / "converted").iterdir() if path.is_dir()] == [results[0].name]
    # One converted; the others waited on its lock and then found its manifest.
    assert sum("converting" in record.message for record in caplog.records if record.levelname == "WARNING") == 2
