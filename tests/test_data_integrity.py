"""Counts the formats record are checked against what was read, and a failed conversion leaves nothing behind."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from conftest import shared_path
from data_helpers import write_tiny_rlds
from multinet_jax.data import openx

tf = pytest.importorskip("tensorflow")


def _truncated_bimanual_shard(tmp_path: pathlib.Path) -> pathlib.Path:
    """MultiNet's 8-step bimanual shard whose snapshot file holds only its first 4 records (cut at a record end)."""
    source = shared_path("data", "multinet_sample", "openx_bimanual", "public", "translated_shard_0")
    shard = tmp_path / "openx_bimanual" / "translated_shard_0"
    shutil.copytree(source, shard)
    for path in shard.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # ../shared is read-only; the copy must be writable
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
