"""Named assets: names -> publishers, the hub's cache read offline, gs:// mirrored (verified, resumable, one writer).

Nothing here touches the network: the hub cache is laid out by hand from ../shared/models/all-MiniLM-L6-v2 in
the hub's own format, and an in-memory fsspec filesystem registered for `gs://` stands in for Google Cloud Storage.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import shutil
import threading
import time

import fsspec
import google_crc32c
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from conftest import shared_path
from multinet_jax import assets, fingerprints, weights

EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def build_hub_cache(hub_dir: pathlib.Path, source: pathlib.Path, repo: str, skip: tuple[str, ...] = ()) -> pathlib.Path:
    """`source`'s files as a snapshot of `repo` in the hub's cache layout (blobs named by content hash, snapshot
    symlinks, refs/main); returns the snapshot folder."""
    repo_dir = hub_dir / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source).as_posix()
        if not path.is_file() or relative in skip:
            continue
        blob = repo_dir / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.symlink_to(path.resolve())  # the 90 MB weights are not copied
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(pathlib.Path(*[".."] * (relative.count("/") + 2), "blobs", blob.name))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


class FakeGCS(MemoryFileSystem):
    """An in-memory store answering for gs://, publishing each object's MD5 and CRC32C as GCS does (base64)."""

    protocol = ("gs", "gcs")
    store: dict = {}
    pseudo_dirs = [""]
    wrong_md5: set[str] = set()
    reads: list[str] = []
    latency_s = 0.0
    unreachable = False

    def info(self, path, **kwargs):
        if self.unreachable:
            raise ConnectionError("Cannot connect to host storage.googleapis.com:443")
        info = dict(super().info(path, **kwargs))
        if info["type"] == "file":
            content = self.cat_file(path)
            digest = hashlib.md5(content).digest()
            info["md5Hash"] = base64.b64encode(digest[::-1] if info["name"] in self.wrong_md5 else digest).decode()
            info["crc32c"] = base64.b64encode(google_crc32c.Checksum(content).digest()).decode()
        return info

    def find(self, path, detail=False, **kwargs):
        found = super().find(path, detail=detail, **kwargs)
        return {name: self.info(name) for name in found} if detail else found

    def _open(self, path, mode="rb", **kwargs):
        if "r" in mode:
            self.reads.append(path)
            time.sleep(self.latency_s)
        return super()._open(path, mode, **kwargs)


@pytest.fixture
def gcs(monkeypatch, tmp_path):
    """A fresh fake gs:// store and an empty project cache."""
    monkeypatch.setenv("MULTINET_JAX_CACHE", str(tmp_path / "cache"))
    FakeGCS.store, FakeGCS.wrong_md5, FakeGCS.reads, FakeGCS.latency_s, FakeGCS.unreachable = {}, set(), [], 0.0, False
    fsspec.register_implementation("gs", FakeGCS, clobber=True)
    FakeGCS.clear_instance_cache()
    yield FakeGCS()
    fsspec.register_implementation("gs", "gcsfs.GCSFileSystem", clobber=True)  # fsspec's own entry


def upload(fs: FakeGCS, source: pathlib.Path, url: str) -> dict[str, bytes]:
    files = {path.relative_to(source).as_posix(): path.read_bytes() for path in source.rglob("*") if path.is_file()}
    for relative, content in files.items():
        fs.pipe(f"{url}/{relative}", content)
    return files


def test_names_map_to_their_publishers():
    assert assets.lookup("pi0_base").url == "gs://openpi-assets/checkpoints/pi0_base"
    assert assets.lookup("pi0_fast_droid").url == "gs://openpi-assets/checkpoints/pi0_fast_droid"
    assert assets.lookup("pi05_libero").url == "gs://openpi-assets/checkpoints/pi05_libero"
    assert assets.lookup(assets.DEFAULT_TOKENIZER).url == "gs://big_vision/paligemma_tokenizer.model"
    assert assets.lookup(assets.DEFAULT_FAST_TOKENIZER).url == "hf://physical-intelligence/fast"
    assert assets.lookup("all-MiniLM-L6-v2").url == "hf://sentence-transformers/all-MiniLM-L6-v2"
    assert assets.lookup("openvla-7b").url == "hf://openvla/openvla-7b"
    assert assets.lookup("smolvla_base").url == "hf://lerobot/smolvla_base"
    assert assets.lookup("paligemma_pt_224").url == "gs://vertex-model-garden-paligemma-us/paligemma/pt_224.npz"
    for not_a_name in ("pi0", "checkpoints/pi0_tiny", "Pi0_base", "pi0_base/params"):
        assert assets.lookup(not_a_name) is None


def test_local_paths_are_returned_unchanged_even_when_named_like_an_asset(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pi0_base").mkdir()
    assert assets.resolve("pi0_base") == pathlib.Path("pi0_base")
    # a run says which one it took, unless the path says it is local
    assert assets.resolve_all({"checkpoint": "pi0_base"}) == {"checkpoint": pathlib.Path("pi0_base")}
    assert "note: --checkpoint=pi0_base is the local pi0_base, not the published openpi checkpoint pi0_base " \
           "(gs://openpi-assets/checkpoints/pi0_base); write ./pi0_base to say so" in capsys.readouterr().err
    assert assets.resolve_all({"checkpoint": "./pi0_base"}) == {"checkpoint": pathlib.Path("pi0_base")}
    assert not capsys.readouterr().err
    assert assets.resolve(tmp_path / "missing" / "dir") == tmp_path / "missing" / "dir"  # the loader reports it


def test_offline_switches(monkeypatch):
    monkeypatch.delenv("MULTINET_JAX_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert not assets.is_offline() and assets.is_offline(True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert assets.is_offline() and not assets.is_offline(False)


def test_hub_repo_resolves_offline_from_the_hub_cache_and_embeds_like_the_original(tmp_path, monkeypatch):
    from huggingface_hub import scan_cache_dir

    from multinet_jax.metrics import SentenceEmbedder

    source = shared_path("models", "all-MiniLM-L6-v2")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = build_hub_cache(tmp_path / "hub", source, EMBEDDER)
    scanned = scan_cache_dir(tmp_path / "hub")
    assert not scanned.warnings and [repo.repo_id for repo in scanned.repos] == [EMBEDDER]  # the hub's own layout
    for name in ("all-MiniLM-L6-v2", EMBEDDER, f"hf://{EMBEDDER}"):
        assert assets.resolve(name, offline=True) == snapshot
    texts = ["put the red block in the bowl", "open the drawer"]
    np.testing.assert_array_equal(SentenceEmbedder(snapshot).embed(texts), SentenceEmbedder(source).embed(texts))


def test_missing_hub_repo_offline_names_it_the_cache_and_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(assets.AssetError) as error:
        assets.resolve("all-MiniLM-L6-v2", offline=True)
    message = str(error.value)
    assert "\n" not in message
    assert EMBEDDER in message and str(tmp_path / "hub") in message and "offline" in message
    assert f"multinet-jax fetch {EMBEDDER}" in message


def test_a_snapshot_without_the_weights_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    build_hub_cache(tmp_path / "hub", shared_path("models", "all-MiniLM-L6-v2"), EMBEDDER, skip=("model.safetensors",))
    with pytest.raises(assets.AssetError, match="lacks model.safetensors.*multinet-jax fetch sentence-transformers"):
        assets.resolve(EMBEDDER, offline=True)


def test_openpi_name_is_mirrored_from_gcs_verified_and_then_read_offline(gcs, tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "OPENPI_CHECKPOINT_NAMES", (*assets.OPENPI_CHECKPOINT_NAMES, "pi0_reference"))
    checkpoint = shared_path("openpi_reference", "pi0", "ckpt", "0")
    uploaded = upload(gcs, checkpoint, "gs://openpi-assets/checkpoints/pi0_reference")
    path = assets.resolve("pi0_reference", offline=False)
    assert path == tmp_path / "cache" / "gs" / "openpi-assets" / "checkpoints" / "pi0_reference"
    assert {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()} == uploaded
    assert not list(path.rglob("*" + assets.PARTIAL_SUFFIX))
    record = json.loads(path.with_name(path.name + assets.COMPLETE_SUFFIX).read_text())
    assert record["files"] == {name: len(content) for name, content in uploaded.items()}
    assert record["sha256"] == {name: hashlib.sha256(content).hexdigest() for name, content in uploaded.items()}
    assert weights.checkpoint_shapes(path) == weights.checkpoint_shapes(checkpoint)  # a real orbax checkpoint

    gcs.store.clear()  # the store is gone: the cache alone answers, online or not
    reads = len(gcs.reads)
    assert assets.resolve("pi0_reference", offline=True) == path == assets.resolve("pi0_reference", offline=False)
    assert len(gcs.reads) == reads


def test_single_file_asset_and_offline_miss(gcs, tmp_path):
    with pytest.raises(assets.AssetError) as error:
        assets.resolve(assets.DEFAULT_TOKENIZER, offline=True)
    cached = tmp_path / "cache" / "gs" / "big_vision" / "paligemma_tokenizer.model"
    assert str(error.value) == (
        f"paligemma_tokenizer: not in the cache (looked in {cached}) and offline; fetch it on a machine with network "
        "with `multinet-jax fetch paligemma_tokenizer` (and copy the caches here if it is another machine)"
    )
    tokenizer = shared_path("tokenizers", "gemma_tokenizer.model").read_bytes()
    gcs.pipe("gs://big_vision/paligemma_tokenizer.model", tokenizer)
    assert assets.resolve(assets.DEFAULT_TOKENIZER, offline=False) == cached
    assert cached.read_bytes() == tokenizer


def test_an_interrupted_download_resumes_where_it_stopped(gcs, tmp_path):
    content = np.random.default_rng(0).bytes(3 * 1024 * 1024 + 17)
    gcs.pipe("gs://bucket/weights.npz", content)
    partial = tmp_path / "cache" / "gs" / "bucket" / ("weights.npz" + assets.PARTIAL_SUFFIX)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(content[:1_000_000])  # what a killed download left
    path = assets.resolve("gs://bucket/weights.npz", offline=False)
    # Appending the whole file again would give 1 MB too many bytes and fail the size check.
    assert path.read_bytes() == content and not partial.exists()


def test_a_checksum_mismatch_is_caught_and_nothing_is_kept(gcs, tmp_path):
    gcs.pipe("gs://bucket/model/a.bin", b"a" * 1000)
    gcs.pipe("gs://bucket/model/b.bin", b"b" * 1000)
    gcs.wrong_md5.add(gcs.info("gs://bucket/model/b.bin")["name"])
    with pytest.raises(assets.AssetError, match=r"b\.bin: md5Hash .* differs from the store's"):
        assets.resolve("gs://bucket/model", offline=False)
    path = tmp_path / "cache" / "gs" / "bucket" / "model"
    assert not path.with_name("model" + assets.COMPLETE_SUFFIX).exists() and not (path / "b.bin.partial").exists()
    with pytest.raises(assets.AssetError, match="not in the cache"):
        assets.resolve("gs://bucket/model", offline=True)
    gcs.wrong_md5.clear()
    assert (assets.resolve("gs://bucket/model", offline=False) / "b.bin").read_bytes() == b"b" * 1000


def test_concurrent_resolutions_download_once(gcs, caplog):
    FakeGCS.latency_s = 0.2  # a slow store, so the resolutions overlap
    for index in range(4):
        gcs.pipe(f"gs://bucket/ckpt/part{index}", bytes([index]) * 200_000)
    results, errors = [], []

    def resolve() -> None:
        try:
            results.append(assets.resolve("gs://bucket/ckpt", offline=False))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=resolve) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    assert sorted(gcs.reads) == sorted(f"gs://bucket/ckpt/part{index}" for index in range(4))  # each file read once
    assert sum("waiting for another process to finish downloading" in r.message for r in caplog.records) == 3


def test_a_missing_remote_object_is_named(gcs):
    with pytest.raises(assets.AssetError, match="gs://openpi-assets/checkpoints/pi0_nonexistent does not exist"):
        assets.resolve("gs://openpi-assets/checkpoints/pi0_nonexistent", offline=False)


def test_a_mistyped_name_fails_at_once_naming_the_near_ones(gcs):
    """An openpi-looking name that is not a published checkpoint is not looked for in the bucket (without network
    that took 82 s of retries): the error names the close ones, and URLs reach the rest of the bucket."""
    with pytest.raises(assets.AssetError, match=r"pi0_bse: no such file or directory, and no asset of that name \(did you "
                       r"mean pi0_base.*\?\); other openpi checkpoints: gs://openpi-assets/checkpoints/<name>"):
        assets.resolve("pi0_bse", offline=False)
    assert gcs.reads == []


def test_a_cached_file_changed_since_its_download_is_refused(gcs, tmp_path):
    """The download record is the asset's content manifest: a bit flipped in the cache (same size) is named."""
    content = np.random.default_rng(0).bytes(100_000)
    gcs.pipe("gs://bucket/model/weights.bin", content)
    path = assets.resolve("gs://bucket/model", offline=False)
    corrupt = bytearray(content)
    corrupt[50_000] ^= 1
    (path / "weights.bin").write_bytes(bytes(corrupt))
    with pytest.raises(fingerprints.ContentError, match=rf"{path}/weights.bin: its sha256 .* differs from the .* that "
                       rf"{path}.complete.json records: the file is corrupt or was edited"):
        assets.resolve("gs://bucket/model", offline=True)


def test_a_hub_blob_that_does_not_hash_to_its_name_is_refused(tmp_path, monkeypatch):
    """The hub names each blob by its content hash (git blob id for small files, sha256 for LFS ones)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    source = tmp_path / "source"
    shutil.copytree(shared_path("models", "all-MiniLM-L6-v2"), source)
    snapshot = build_hub_cache(tmp_path / "hub", source, EMBEDDER)
    config = snapshot / "config.json"  # a small file: re-linked to a blob named by its git blob id, as the hub does
    data = config.read_bytes()
    git_blob = snapshot.parents[1] / "blobs" / hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    git_blob.write_bytes(data)
    config.unlink()
    config.symlink_to(pathlib.Path("..", "..", "blobs", git_blob.name))
    assert assets.resolve(EMBEDDER, offline=True) == snapshot
    git_blob.write_bytes(data.replace(b"384", b"385"))
    with pytest.raises(fingerprints.ContentError, match=rf"{config}: its content hashes to .*, not to the .* the hub named "
                       "its blob by: the cached file is corrupt"):
        assets.resolve(EMBEDDER, offline=True)
    git_blob.write_bytes(data)
    tokenizer = source / "tokenizer.json"  # the blob of a large file is named by its sha256
    tokenizer.write_bytes(tokenizer.read_bytes().replace(b"[UNK]", b"[UNQ]", 1))
    with pytest.raises(fingerprints.ContentError, match=rf"{snapshot / 'tokenizer.json'}: its content hashes to"):
        assets.resolve(EMBEDDER, offline=True)


def test_file_urls_are_mirrored_like_any_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MULTINET_JAX_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "published" / "fast"
    shutil.copytree(shared_path("fast_reference", "tokenizer"), source)
    path = assets.resolve(source.as_uri(), offline=False)
    assert path.is_relative_to(tmp_path / "cache" / "file")
    assert sorted(p.name for p in path.iterdir()) == sorted(p.name for p in source.iterdir())


def test_bad_asset_specs_and_records_fail_clearly(gcs, tmp_path):
    with pytest.raises(assets.AssetError, match=r"hf://no-owner: a hub URL is hf://owner/repo\[@revision\]"):
        assets.resolve("hf://no-owner", offline=True)
    gcs.pipe("gs://bucket/file.bin", b"x")
    path = assets.resolve("gs://bucket/file.bin", offline=False)
    record = path.with_name(path.name + assets.COMPLETE_SUFFIX)
    record.write_text("{not json")
    with pytest.raises(assets.AssetError, match=f"{record}: not a download record"):
        assets.resolve("gs://bucket/file.bin", offline=True)
    record.unlink()
    path.unlink()
    gcs.rm("gs://bucket/file.bin")
    with pytest.raises(assets.AssetError, match="gs://bucket/file.bin does not exist"):
        assets.resolve("gs://bucket/file.bin", offline=False)


def test_no_network_and_no_cache_names_the_asset_and_the_fetch_command(gcs, tmp_path):
    gcs.pipe("gs://openpi-assets/checkpoints/pi0_base/params/_METADATA", b"{}")
    FakeGCS.unreachable = True
    with pytest.raises(assets.AssetError) as error:
        assets.resolve("pi0_base", offline=False)
    message = str(error.value)
    assert message.startswith("pi0_base: could not list gs://openpi-assets/checkpoints/pi0_base (ConnectionError: ")
    assert str(tmp_path / "cache" / "gs" / "openpi-assets" / "checkpoints" / "pi0_base") in message
    assert "`multinet-jax fetch pi0_base`" in message
