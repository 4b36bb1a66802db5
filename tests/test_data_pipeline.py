"""The shared Grain pipeline: order, limit, multi-host sharding, fixed-shape batches, bad records."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import shared_path
from data_helpers import CharTokenizer
from multinet_jax import data
from multinet_jax.data import pipeline, transforms


def _valid_indices(batches):
    return [int(index) for batch in batches for index, valid in zip(batch["sample_index"], batch["_mask"]) if valid]


def test_unbatched_samples_in_order_with_limit():
    samples = list(data.load("piqa", shared_path("data", "piqa_validation"), limit=5, shard_index=0, shard_count=1))
    assert [int(sample["sample_index"]) for sample in samples] == list(range(5))
    assert [sample["id"] for sample in samples] == [f"data-00000-of-00001.arrow:{index}" for index in range(5)]
    first = samples[0]  # PIQA has no image: MultiNet's black image, attended (its script left --mask_image_tokens off)
    assert first["image/base_0_rgb"].shape == (224, 224, 3) and first["image/base_0_rgb"].dtype == np.uint8
    assert not first["image/base_0_rgb"].any() and first["image_mask/base_0_rgb"] and first["state"].shape == (32,)
    assert "tokenized_prompt" not in first and "_valid" not in first


@pytest.mark.parametrize("shard_count, batch_size", [(1, 4), (3, 4), (4, 5)])
def test_shards_are_disjoint_cover_everything_and_stay_in_lockstep(shard_count, batch_size):
    directory, limit = shared_path("data", "piqa_validation"), 23
    everything = list(data.load("piqa", directory, limit=limit, shard_index=0, shard_count=1))
    shards = [list(data.load("piqa", directory, limit=limit, batch_size=batch_size, shard_index=i, shard_count=shard_count)) for i in range(shard_count)]
    assert len({len(batches) for batches in shards}) == 1  # same number of batches on every host
    per_shard = [_valid_indices(batches) for batches in shards]
    assert sorted(index for indices in per_shard for index in indices) == list(range(limit))
    for shard_index, indices in enumerate(per_shard):
        assert indices == list(range(shard_index, limit, shard_count))
        for batch in shards[shard_index]:
            assert batch["_mask"].shape == (batch_size,) and batch["state"].shape == (batch_size, 32)
            for index, valid, sample_id in zip(batch["sample_index"], batch["_mask"], batch["id"]):
                assert sample_id == (everything[index]["id"] if valid else None)


def test_batches_carry_tokens_and_options():
    batches = list(data.load("odinw", shared_path("data", "multinet_sample", "odinw"), split="public", tokenizer=CharTokenizer(), max_token_len=16, batch_size=3, shard_index=0, shard_count=1))
    assert len(batches) == 2 and batches[1]["_mask"].tolist() == [True, False, False]
    assert batches[0]["tokenized_prompt"].shape == (3, 16) and batches[0]["tokenized_prompt"].dtype == np.int32
    ids = CharTokenizer().prompt_ids(batches[0]["prompt"][0], "paligemma_processor")
    np.testing.assert_array_equal(batches[0]["tokenized_prompt"][0], ids[:16])  # truncated at the given 16 ...
    assert batches[0]["tokenized_prompt_mask"][0].all() and batches[0]["prompt_tokens"][0] == len(ids)  # ... and counted
    assert not batches[1]["tokenized_prompt_mask"][1].any()
    assert batches[0]["num_options"].tolist() == [5, 5, 2] and batches[1]["num_options"].tolist() == [2, 0, 0]
    assert batches[0]["options"][2] == ["CoW", "chanterelle"] and batches[1]["options"][1] is None  # root category left out
    assert batches[0]["image/base_0_rgb"].shape == (3, 224, 224, 3) and batches[0]["image/base_0_rgb"].dtype == np.uint8


def test_untruncated_prompts_pad_to_the_batchs_bucket():
    batches = list(data.load("odinw", shared_path("data", "multinet_sample", "odinw"), split="public", tokenizer=CharTokenizer(), batch_size=3, shard_index=0, shard_count=1))
    for batch in batches:
        lengths = batch["prompt_tokens"][batch["_mask"]]
        assert batch["tokenized_prompt"].shape[1] == max(transforms.prompt_bucket(int(n)) for n in lengths)
        assert batch["tokenized_prompt_mask"].sum(axis=1)[batch["_mask"]].tolist() == lengths.tolist()


def test_default_shard_is_this_jax_process():
    assert len(list(data.load("bfcl", shared_path("data", "bfcl_v3"), limit=4, batch_size=2))) == 2
    with pytest.raises(ValueError, match="both shard_index and shard_count"):
        data.load("bfcl", shared_path("data", "bfcl_v3"), shard_index=0)


@pytest.fixture()
def odinw_with_corrupt_image(tmp_path):
    root = tmp_path / "odinw"
    shutil.copytree(shared_path("data", "multinet_sample", "odinw", "public"), root)
    pairs = json.loads((root / "AerialMaritimeDrone" / "object_caption_pairs.json").read_text())
    (root / "AerialMaritimeDrone" / "bbox_images" / pairs[1]["bbox_image"]).write_bytes(b"\xff\xd8 not a jpeg")
    return root


def test_bad_record_fails_with_dataset_record_and_field(odinw_with_corrupt_image):
    with pytest.raises(data.BadRecordError, match=r"odinw: record AerialMaritimeDrone/object_caption_pairs.json\[1\]: field 'bbox_image'"):
        list(data.load("odinw", odinw_with_corrupt_image, shard_index=0, shard_count=1))


def test_bad_record_skipped_is_masked_and_reported(odinw_with_corrupt_image):
    kwargs = dict(on_bad_record="skip", shard_index=0, shard_count=1)
    batches = list(data.load("odinw", odinw_with_corrupt_image, batch_size=4, **kwargs))
    assert batches[0]["_mask"].tolist() == [True, False, True, True]
    assert batches[0]["sample_index"].tolist() == [0, 1, 2, 3]
    assert "field 'bbox_image'" in batches[0]["bad_record"][1] and batches[0]["bad_record"][0] is None
    assert [int(s["sample_index"]) for s in data.load("odinw", odinw_with_corrupt_image, **kwargs)] == [0, 2, 3]
    report = data.inspect("odinw", odinw_with_corrupt_image)
    assert report["num_samples"] == 4 and report["num_bad_records"] == 1 and "object_caption_pairs.json[1]" in report["bad_records"][0]


def test_on_bad_record_is_checked():
    with pytest.raises(ValueError, match="on_bad_record"):
        data.load("bfcl", shared_path("data", "bfcl_v3"), on_bad_record="ignore", shard_index=0, shard_count=1)


def test_worker_processes_keep_order_and_content():
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # Grain's workers read absl flags; `absl.app.run` parses them in real runs
    kwargs = dict(limit=7, batch_size=3, shard_index=0, shard_count=1)
    directory = shared_path("data", "multinet_sample", "odinw")
    in_process = list(data.load("odinw", directory, split="public", **kwargs))
    in_worker = list(data.load("odinw", directory, split="public", num_workers=1, **kwargs))
    assert len(in_worker) == len(in_process) == 2
    for ours, theirs in zip(in_worker, in_process):
        assert ours["id"] == theirs["id"] and ours["_mask"].tolist() == theirs["_mask"].tolist()
        np.testing.assert_array_equal(ours["image/base_0_rgb"], theirs["image/base_0_rgb"])
        assert ours["image/base_0_rgb"].dtype == np.uint8


def test_inspect_reports_counts_fields_and_one_sample():
    directory = shared_path("data", "bfcl_v3")
    first = json.loads((directory / "possible_answer" / "BFCL_v3_multi_turn_base.json").read_text().splitlines()[0])
    report = data.inspect("bfcl", directory, limit=3)
    assert report["num_samples"] == 200 and report["num_checked"] == 3 and report["action_dim"] is None
    assert report["sample"]["ground_truth"] == first["ground_truth"] and report["sample"]["id"] == first["id"]
    assert report["fields"]["state"] == {"dtype": "float32", "shape": [32]} and report["fields"]["turns"] == {"type": "list"}


def test_rows_with_images_of_different_sizes_batch_as_a_list_of_rows():
    """Overcooked's layouts render at different sizes: such a camera stays per row (the model's boundary resizes
    each as the model would); padding rows get black images; other keys must agree in shape."""
    def row(valid: bool, size: tuple[int, int]) -> dict:
        return {pipeline.VALID_KEY: valid, "id": f"{size}", "image/base_0_rgb": np.full((*size, 3), 7, np.uint8),
                "image_mask/base_0_rgb": np.asarray(valid), "state": np.zeros(32, np.float32)}

    batch = pipeline.Batcher()([row(True, (375, 675)), row(True, (255, 255)), row(False, (375, 675))])
    images = batch["image/base_0_rgb"]
    assert isinstance(images, list) and [image.shape for image in images] == [(375, 675, 3), (255, 255, 3), (375, 675, 3)]
    assert images[0].max() == 7 and images[2].max() == 0  # the padding row's image is black
    assert batch["state"].shape == (3, 32) and isinstance(pipeline.model_inputs({**batch, "sample_index": np.arange(3)})["image/base_0_rgb"], list)
    same = pipeline.Batcher()([row(True, (8, 8)), row(True, (8, 8))])
    assert isinstance(same["image/base_0_rgb"], np.ndarray) and same["image/base_0_rgb"].shape == (2, 8, 8, 3)
    ragged_state = [row(True, (8, 8)), {**row(True, (8, 8)), "state": np.zeros(31, np.float32)}]
    with pytest.raises(ValueError, match=r"state differs in shape within one batch"):
        pipeline.Batcher()(ragged_state)
