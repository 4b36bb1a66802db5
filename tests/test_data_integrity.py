"""Counts the formats record are checked against what was read, a failed conversion leaves nothing behind, and a
conversion is found again by its source's content (not its paths or times), shard names left to no guess."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

from conftest import shared_path
from data_helpers import writable_copy, write_tiny_rlds
from multinet_jax.data import openx, steps

tf = pytest.importorskip("tensorflow")


def _truncated_bimanual_shard(tmp_path: pathlib.Path) -> pathlib.Path:
    """MultiNet's 8-step bimanual shard whose snapshot file holds only its first 4 records (cut at a record end)."""
    source = shared_path("data", "multinet_sample", "openx_bimanual", "public", "translated_shard_0")
    shard = writable_copy(source, tmp_path / "openx_bimanual" / "translated_shard_0")
    shorter = tmp_path / "first_four"
    tf.data.Dataset.load(str(source)).take(4).save(str(shorter))
    (snapshot,) = shard.rglob("*.snapshot")
    (short_snapshot,) = shorter.rglob("*.snapshot")
    snapshot.write_bytes(short_snapshot.read_bytes())
    return shard.parent


def test_truncated_snapshot_shard_is_an_error_not_a_shorter_dataset(tmp_path):
    directory = _truncated_bimanual_shard(tmp_path)
    with pytest.raises(ValueError, match=r"translated_shard_0: snapshot.metadata records 8 elements but the shard's files hold 4"):
        openx.convert(directory, tmp_path / "converted")
    assert not (tmp_path / "converted").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["first_four", "openx_bimanual"]  # no staging folder
    with pytest.raises(ValueError, match=r"records 8 elements but the shard's files hold 4"):  # into new folders
        openx.convert(directory, tmp_path / "out" / "a" / "b" / "converted")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["first_four", "openx_bimanual"]  # none left behind


def test_failed_conversion_keeps_an_earlier_one_intact(tmp_path):
    good = shared_path("data", "multinet_sample", "openx_bimanual", "public")
    converted = tmp_path / "converted"
    manifest = openx.convert(good, converted)
    before = {path.name: path.read_bytes() for path in converted.iterdir()}
    with pytest.raises(ValueError, match="records 8 elements"):
        openx.convert(_truncated_bimanual_shard(tmp_path / "bad"), converted)
    assert {path.name: path.read_bytes() for path in converted.iterdir()} == before
    assert manifest["num_steps"] == 8


def test_unfinalized_snapshot_is_refused(tmp_path):
    directory = _truncated_bimanual_shard(tmp_path)
    metadata_path = directory / "translated_shard_0" / "snapshot.metadata"
    from tensorflow.core.protobuf import snapshot_pb2

    metadata = snapshot_pb2.SnapshotMetadataRecord.FromString(metadata_path.read_bytes())
    metadata.finalized = False
    metadata_path.write_bytes(metadata.SerializeToString())
    with pytest.raises(ValueError, match="snapshot.metadata: the snapshot was never finalized"):
        openx.convert(directory, tmp_path / "converted")


def test_rlds_tfrecord_missing_episodes_fail_naming_the_builder(tmp_path):
    builder_dir = write_tiny_rlds(tmp_path, "tfrecord")
    (shard,) = builder_dir.glob("*.tfrecord*")
    records = list(tf.data.TFRecordDataset(str(shard)).as_numpy_iterator())
    with tf.io.TFRecordWriter(str(shard)) as writer:  # the same file, cut after its second record
        for record in records[:2]:
            writer.write(record)
    # TFDS checks the recorded count itself here (`dataset_info.json` 3, file 2); the error names the builder.
    with pytest.raises(ValueError, match=rf"{builder_dir}: unreadable 'test' episodes .*expected to contain 3 elements but contained only 2"):
        openx.convert(builder_dir, tmp_path / "converted")
    assert not (tmp_path / "converted").exists()


def test_folders_of_linked_shards_are_told_apart(tmp_path):
    """A dataset folder whose shard is a link to a snapshot elsewhere is that snapshot: two such folders linking to
    other data get their own conversions, each of its own steps."""
    full = shared_path("data", "multinet_sample", "openx_bimanual", "public", "translated_shard_0")
    first_four = tmp_path / "first_four"
    tf.data.Dataset.load(str(full)).take(4).save(str(first_four))
    converted = {}
    for name, target in [("full", full), ("short", first_four)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "translated_shard_0").symlink_to(target, target_is_directory=True)
        converted[name] = openx.ensure_converted(tmp_path / name, cache_dir=tmp_path / "cache")
    assert converted["full"] != converted["short"]
    assert [steps.read_manifest(converted[name])["num_steps"] for name in ("full", "short")] == [8, 4]


def test_a_source_edited_in_place_is_converted_anew_and_a_copy_is_not(tmp_path):
    """The conversion's key is the source's content: an edit that keeps every size and modification time gets a new
    conversion; the same bytes in another folder, with other times, reuse the first."""
    source = writable_copy(shared_path("data", "multinet_sample", "openx_bimanual", "public"), tmp_path / "source")
    key = openx.conversion_dir(source, cache_dir=tmp_path / "cache")
    copy = shutil.copytree(source, tmp_path / "elsewhere", copy_function=shutil.copy)  # new modification times
    assert openx.conversion_dir(copy, cache_dir=tmp_path / "cache") == key
    (snapshot,) = source.rglob("*.snapshot")
    times, content = snapshot.stat(), bytearray(snapshot.read_bytes())
    content[len(content) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(content))
    os.utime(snapshot, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert snapshot.stat().st_size == times.st_size and snapshot.stat().st_mtime_ns == times.st_mtime_ns
    assert openx.conversion_dir(source, cache_dir=tmp_path / "cache") != key
    assert openx.conversion_dir(source, split="train", cache_dir=tmp_path / "cache") != openx.conversion_dir(source, cache_dir=tmp_path / "cache")


def test_an_empty_source_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: holds no file to convert"):
        openx.conversion_dir(tmp_path / "empty", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("names, error", [
    (["translated_shard_0", "translated_shard_0 copy"], r"translated_shard_0 copy: a snapshot shard not named translated_shard_<number>"),
    (["translated_shard_1", "translated_shard_01"], r"translated_shard_01 and translated_shard_1 are both shard 1"),
])
def test_snapshot_shards_of_stray_or_repeated_names_are_refused(tmp_path, names, error):
    shard = shared_path("data", "multinet_sample", "openx_bimanual", "public", "translated_shard_0")
    for name in names:
        writable_copy(shard, tmp_path / "data" / name)
    with pytest.raises(ValueError, match=error):
        openx.translated_shards(tmp_path / "data")
    with pytest.raises(ValueError, match=error):
        openx.convert(tmp_path / "data", tmp_path / "converted")
    assert not (tmp_path / "converted").exists()
