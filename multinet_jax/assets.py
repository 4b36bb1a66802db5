"""Named assets (checkpoints, tokenizers, the similarity embedder) resolved to local paths, cached once, offline-ready.

    resolve("pi0_base")                       # gs://openpi-assets/checkpoints/pi0_base, mirrored into the cache
    resolve("sentence-transformers/all-MiniLM-L6-v2")   # a snapshot in the Hugging Face hub's own cache
    resolve("checkpoints/pi0_tiny")           # a local path: returned unchanged

Every loader in this project takes local paths; the CLIs and `load_model` turn what a user wrote into one here,
so nothing else ever downloads. What a spec may be, in the order it is tried:
- an existing local path: itself (a local folder named like an asset wins over the asset);
- a registered name (`NAMED_ASSETS`, and openpi's published checkpoints `OPENPI_CHECKPOINT_NAMES`; any other
  checkpoint of its bucket by URL, `gs://openpi-assets/checkpoints/<name>`);
- `hf://owner/repo[@revision]`: any Hugging Face hub repository, fetched with `huggingface_hub`;
- any other URL fsspec reads (`gs://bucket/path` through gcsfs, `s3://`, `file://`, ...): mirrored into
  `<cache>/<protocol>/<bucket>/<path>`, where the cache is `$MULTINET_JAX_CACHE` (default `~/.cache/multinet_jax`);
- anything else: returned as a path, so the loader reports it in its own words; a bare name close to an asset's
  (`pi0_bse`) fails at once, naming the near ones, instead of trying the network.

Downloads from a URL are verified (every file's size, and its MD5 / CRC32C when the store publishes one, as GCS
does) and resume after an interruption: each file grows in `<file>.partial` from where it stopped and is renamed
only once verified; the asset counts as present only when its `<asset>.complete.json` record is written, which
holds every file's size and sha256 (its content manifest). Hosts sharing one cache (an NFS home on a pod slice)
download once: a file lock makes one the writer and the others wait. Hub repos land in the hub's cache
(`$HF_HUB_CACHE`), which does the same itself and names each file's blob by its content hash (sha256 for large
files, the git blob id for small ones).

Every resolution of a fetched asset verifies it against what was recorded when it was fetched (so a bit flipped
in the cache since is refused, `fingerprints.ContentError`, instead of loading as other weights): a URL asset's
files against its record's sizes and sha256s, a hub snapshot's files against their blob names. Digests are cached
by file identity (`fingerprints`), so this reads a file once. A local path (your own checkpoint, a copy of a
cached one) has no record: its integrity is not verified (beyond shapes and finite values when it loads); records
written before sha256s were recorded are checked by size only.

Offline (`offline=True`, `MULTINET_JAX_OFFLINE=1` or `HF_HUB_OFFLINE=1`; the CLIs' `--offline`) everything is
read from the caches; a missing asset is an `AssetError` naming it, where it was looked for and the
`multinet-jax fetch` command that gets it.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import difflib
import hashlib
import json
import logging
import os
import pathlib
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import tqdm

from multinet_jax import fingerprints

DEFAULT_CACHE_DIR = pathlib.Path.home() / ".cache" / "multinet_jax"
OFFLINE_ENVIRONMENT = ("MULTINET_JAX_OFFLINE", "HF_HUB_OFFLINE")
OPENPI_CHECKPOINTS = "gs://openpi-assets/checkpoints"
# openpi's published checkpoint names (pi0_base, pi0_fast_droid, pi05_libero, ...).
# The checkpoints openpi's README publishes under gs://openpi-assets/checkpoints/ (others of the bucket: by URL).
OPENPI_CHECKPOINT_NAMES = (
    "pi0_base", "pi0_fast_base", "pi05_base", "pi0_droid", "pi0_fast_droid", "pi05_droid", "pi0_libero", "pi0_fast_libero",
    "pi05_libero", "pi0_aloha_sim", "pi0_aloha_towel", "pi0_aloha_tupperware", "pi0_aloha_pen_uncap",
)
COMPLETE_SUFFIX = ".complete.json"
PARTIAL_SUFFIX = ".partial"
_CHUNK_BYTES = 8 << 20
_FETCH_COMMAND = "multinet-jax fetch"


class AssetError(ValueError):
    """An asset that cannot be had: the message names it, where it was looked for and what fetches it.

    `missing` is set (to the asset's name) when the asset is simply not in the cache and could not be downloaded,
    so that `resolve_all` can name one `multinet-jax fetch` command for all of them.
    """

    def __init__(self, detail: str, *, missing: str | None = None):
        super().__init__(f"{detail}; {_fetch_hint(missing)}" if missing else detail)
        self.detail, self.missing = detail, missing


@dataclasses.dataclass(frozen=True)
class Asset:
    """A named asset: where it comes from (`hf://owner/repo` or an fsspec URL) and what must be in it.

    `files`: the hub files to download (glob patterns; all when empty); `required`: files the loaders need,
    checked after every resolution so a partial snapshot never reaches them.
    """

    name: str
    url: str
    description: str
    files: tuple[str, ...] = ()
    required: tuple[str, ...] = ()


_EMBEDDER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                   "special_tokens_map.json", "sentence_bert_config.json", "modules.json", "1_Pooling/config.json")
NAMED_ASSETS: dict[str, Asset] = {
    asset.name: asset
    for asset in (
        Asset("paligemma_tokenizer", "gs://big_vision/paligemma_tokenizer.model",
              "PaliGemma's SentencePiece model (257,152 pieces), Pi0 / Pi0-FAST / Pi0.5's tokenizer"),
        Asset("physical-intelligence/fast", "hf://physical-intelligence/fast", "the FAST action tokenizer",
              files=("*.json", "*.py"), required=("processor_config.json", "tokenizer.json")),
        Asset("sentence-transformers/all-MiniLM-L6-v2", "hf://sentence-transformers/all-MiniLM-L6-v2",
              "MultiNet's similarity embedder (SQA3D, RoboVQA, BFCL)", files=_EMBEDDER_FILES,
              required=("config.json", "model.safetensors", "tokenizer.json")),
        Asset("openvla/openvla-7b", "hf://openvla/openvla-7b", "OpenVLA 7B (Hugging Face safetensors)",
              files=("*.json", "*.safetensors", "tokenizer.model", "*.py"), required=("config.json",)),
        Asset("microsoft/Magma-8B", "hf://microsoft/Magma-8B", "Magma 8B (Hugging Face safetensors)",
              files=("*.json", "*.safetensors"), required=("config.json", "tokenizer.json", "preprocessor_config.json")),
        Asset("lerobot/smolvla_base", "hf://lerobot/smolvla_base", "SmolVLA base (LeRobot policy: safetensors + processors)",
              files=("*.json", "*.safetensors"), required=("config.json", "model.safetensors")),
        # SmolVLA's backbone: its config and tokenizer only (the policy's checkpoint holds every weight SmolVLA uses).
        Asset("HuggingFaceTB/SmolVLM2-500M-Video-Instruct", "hf://HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
              "SmolVLM2-500M's config and tokenizer (SmolVLA's backbone)",
              files=("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"),
              required=("config.json", "tokenizer.json", "tokenizer_config.json")),
        *(
            Asset(f"paligemma_pt_{size}", f"gs://vertex-model-garden-paligemma-us/paligemma/pt_{size}.npz",
                  f"PaliGemma 3B pretrained at {size}x{size} (big_vision npz)")
            for size in (224, 448, 896)
        ),
    )
}
ALIASES = {
    "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "openvla-7b": "openvla/openvla-7b",
    "magma-8b": "microsoft/Magma-8B",
    "smolvla_base": "lerobot/smolvla_base",
}
DEFAULT_TOKENIZER = "paligemma_tokenizer"
DEFAULT_FAST_TOKENIZER = "physical-intelligence/fast"
DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def cache_dir() -> pathlib.Path:
    """The project's cache: `$MULTINET_JAX_CACHE`, default `~/.cache/multinet_jax` (read at every call)."""
    return pathlib.Path(os.environ.get("MULTINET_JAX_CACHE") or DEFAULT_CACHE_DIR).expanduser()


def is_offline(offline: bool | None = None) -> bool:
    """`offline` when given, else whether `MULTINET_JAX_OFFLINE` or `HF_HUB_OFFLINE` is set to a true value."""
    if offline is not None:
        return offline
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in OFFLINE_ENVIRONMENT)


def lookup(spec: str) -> Asset | None:
    """The registered asset a name stands for (openpi checkpoint names by pattern), else None."""
    name = ALIASES.get(spec, spec)
    if name in NAMED_ASSETS:
        return NAMED_ASSETS[name]
    if name in OPENPI_CHECKPOINT_NAMES:
        return Asset(name, f"{OPENPI_CHECKPOINTS}/{name}", f"openpi checkpoint {name}", required=("params/_METADATA",))
    return None


def asset_for(spec: str) -> Asset | None:
    """The asset a spec names (a registered name or a URL), or None for a plain path."""
    if "://" in spec:
        return Asset(spec, spec, spec)
    return lookup(spec)


def resolve(spec: str | pathlib.Path, *, offline: bool | None = None) -> pathlib.Path:
    """A local path for `spec` (see the module docstring), downloading it into the cache unless offline."""
    text = os.path.expanduser(str(spec))
    if "://" not in text and pathlib.Path(text).exists():
        return pathlib.Path(text)
    asset = asset_for(text)
    if asset is None:
        if os.sep not in text and near_names(text):
            raise not_found(text)
        return pathlib.Path(text)
    offline = is_offline(offline)
    path = _resolve_hub(asset, offline) if asset.url.startswith("hf://") else _resolve_url(asset, offline)
    missing = [name for name in asset.required if not (path / name).exists()]
    if missing:
        raise AssetError(f"{asset.name}: {path} lacks {', '.join(missing)}; {_refetch_hint(asset)}")
    return path


def near_names(spec: str) -> list[str]:
    """Asset names a mistyped `spec` may have meant."""
    return difflib.get_close_matches(spec, [*NAMED_ASSETS, *ALIASES, *OPENPI_CHECKPOINT_NAMES], n=3, cutoff=0.75)


def not_found(spec: str) -> AssetError:
    """The error for a spec that is neither an existing path nor an asset, naming the asset names close to it."""
    near = near_names(spec)
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    return AssetError(f"{spec}: no such file or directory, and no asset of that name{hint}; other openpi checkpoints: "
                      f"{OPENPI_CHECKPOINTS}/<name>, hub repos: hf://owner/repo")


def resolve_all(specs: Mapping[str, str | pathlib.Path], *, offline: bool | None = None) -> dict[str, pathlib.Path]:
    """`resolve` for each role ("checkpoint", "tokenizer", ...); every missing asset reported in one error. A local
    path that shadows an asset's name (a folder `pi0_base` in the working directory) is said on stderr: the user may
    have meant the published one."""
    resolved, problems = {}, []
    for role, spec in specs.items():
        text = os.path.expanduser(str(spec))
        shadowed = lookup(text)
        if shadowed is not None and pathlib.Path(text).exists():
            print(f"note: --{role}={text} is the local {text}, not the published {shadowed.description} "
                  f"({shadowed.url}); write ./{text} to say so", file=sys.stderr, flush=True)
        try:
            resolved[role] = resolve(spec, offline=offline)
        except AssetError as error:
            problems.append(error)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        missing = [error.missing for error in problems if error.missing]
        detail = "; ".join(error.detail for error in problems)  # then one command that fetches everything missing
        raise AssetError(f"{detail}; {_fetch_hint(*missing)}" if missing else detail)
    return resolved


def cached_path(asset: Asset) -> pathlib.Path:
    """Where a URL asset is mirrored: `<cache>/<protocol>/<bucket>/<path>`."""
    protocol, _, rest = asset.url.partition("://")
    return cache_dir() / protocol / rest.strip("/")


def _fetch_hint(*names: str) -> str:
    return (f"fetch {'it' if len(names) == 1 else 'them'} on a machine with network with "
            f"`{_FETCH_COMMAND} {' '.join(names)}` (and copy the caches here if it is another machine)")


def _refetch_hint(asset: Asset) -> str:
    return f"fetch it again with `{_FETCH_COMMAND} {asset.name}`"


# ------------------------------------------------------------------------------------------ hub repos


def _hub_repo(asset: Asset) -> tuple[str, str | None]:
    """(repo id, revision or None) of an `hf://owner/repo[@revision]` URL."""
    repo, _, revision = asset.url.removeprefix("hf://").partition("@")
    if repo.count("/") != 1:
        raise AssetError(f"{asset.name}: a hub URL is hf://owner/repo[@revision], got {asset.url!r}")
    return repo, revision or None


def hub_cache_dir() -> str | None:
    """`$HF_HUB_CACHE` read now (huggingface_hub reads it once, at import); None: the hub's default."""
    return os.environ.get("HF_HUB_CACHE") or None


def _resolve_hub(asset: Asset, offline: bool) -> pathlib.Path:
    # Imported by name: `import huggingface_hub` alone does not load its `constants` submodule (2.4).
    from huggingface_hub import constants, errors, snapshot_download

    repo, revision = _hub_repo(asset)
    where = hub_cache_dir() or constants.HF_HUB_CACHE
    try:
        path = snapshot_download(
            repo, revision=revision, cache_dir=hub_cache_dir(), allow_patterns=list(asset.files) or None,
            local_files_only=offline,
        )
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled) as error:
        reason = "offline" if offline else f"the hub could not be reached ({type(error).__name__})"
        raise AssetError(f"{asset.name}: not in the Hugging Face cache {where} and {reason}", missing=asset.name) from None
    except (errors.RepositoryNotFoundError, errors.GatedRepoError, errors.RevisionNotFoundError) as error:
        raise AssetError(f"{asset.name}: the hub refused {asset.url} ({type(error).__name__}); "
                         "check the name, or log in (`hf auth login`) for a gated repo") from None
    _verify_blobs(pathlib.Path(path))
    return pathlib.Path(path)


_SHA256, _GIT_OID = re.compile(r"[0-9a-f]{64}"), re.compile(r"[0-9a-f]{40}")


def _verify_blobs(snapshot: pathlib.Path) -> None:
    """Each file of a hub snapshot links to a blob named by its content hash (the hub's ETag: sha256 for LFS files,
    the git blob id otherwise); a blob whose bytes do not hash to its name is refused. Files that are not such links
    (a cache on a filesystem without symlinks) are not verified."""
    for link in sorted(snapshot.rglob("*")):
        if not link.is_symlink() or not link.is_file():
            continue
        name = pathlib.Path(os.readlink(link)).name
        if _SHA256.fullmatch(name):
            digest = fingerprints.file_sha256(link)
        elif _GIT_OID.fullmatch(name):
            data = link.read_bytes()
            digest = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        else:
            continue
        if digest != name:
            raise fingerprints.ContentError(
                f"{link}: its content hashes to {digest[:16]}..., not to the {name[:16]}... the hub named its blob "
                f"by: the cached file is corrupt; delete {link.resolve()} and fetch it again")


# ------------------------------------------------------------------------------------------ URLs (gs://, ...)


def _read_record(path: pathlib.Path) -> tuple[dict[str, int], dict[str, str]] | None:
    """(files' sizes, files' sha256) of a mirrored asset's download record; None when no download finished."""
    record_path = path.with_name(path.name + COMPLETE_SUFFIX)
    if not record_path.exists():
        return None
    try:
        record = json.loads(record_path.read_text())
        return record["files"], record.get("sha256", {})
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise AssetError(f"{record_path}: not a download record (no \"files\"); remove it and fetch again") from None


def _is_complete(path: pathlib.Path) -> bool:
    """Whether a mirrored asset was fully downloaded and verified, and its files are still all there."""
    record = _read_record(path)
    if record is None:
        return False
    files, digests = record
    record_path = path.with_name(path.name + COMPLETE_SUFFIX)
    for relative, size in files.items():
        local = path / relative if relative else path
        if not local.is_file() or local.stat().st_size != size:
            return False
    fingerprints.verify(path, {relative: {"bytes": size, "sha256": digests.get(relative)} for relative, size in files.items()},
                        record_path)
    return True


@contextlib.contextmanager
def exclusive(path: pathlib.Path, what: str) -> Iterator[None]:
    """One writer for `path` among every process and host sharing its folder; the others wait here.

    Callers check for a finished result again inside: a waiter usually finds the writer's result there.
    """
    import filelock

    lock = filelock.FileLock(str(path) + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        logging.warning("waiting for another process to finish %s (lock %s)", what, lock.lock_file)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _resolve_url(asset: Asset, offline: bool) -> pathlib.Path:
    path = cached_path(asset)
    if _is_complete(path):
        return path
    if offline:
        raise AssetError(f"{asset.name}: not in the cache (looked in {path}) and offline", missing=asset.name)
    with exclusive(path, f"downloading {asset.url}"):
        if not _is_complete(path):
            _download(asset, path)
    return path


def _remote_files(fs: Any, root: str) -> dict[str, dict[str, Any]]:
    """{path relative to the asset ("" for a single-file asset): fsspec info} of everything under `root`."""
    if not fs.isdir(root):
        return {"": fs.info(root)}
    prefix = root.rstrip("/") + "/"  # fsspec lists names in the same form as the root it was given
    return {
        name.removeprefix(prefix): info
        for name, info in fs.find(root, detail=True).items()
        if info.get("type", "file") == "file"
    }


def _download(asset: Asset, path: pathlib.Path) -> None:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(asset.url)
        files = _remote_files(fs, root)
    except FileNotFoundError:
        raise AssetError(f"{asset.name}: {asset.url} does not exist") from None
    except ImportError as error:
        raise AssetError(f"{asset.name}: reading {asset.url} needs a filesystem package ({error})") from None
    except OSError as error:  # no network, refused credentials, ...
        raise AssetError(f"{asset.name}: could not list {asset.url} ({type(error).__name__}: {error}); "
                         f"nothing was found in the cache at {path} either", missing=asset.name) from None
    if not files:
        raise AssetError(f"{asset.name}: {asset.url} holds no files")
    total = sum(int(info["size"]) for info in files.values())
    # A file already here is kept when an interrupted download verified and renamed it (no record yet), or when it
    # still hashes to what the last finished download recorded; a re-download (a record that no longer matches) may
    # find files corrupted since, whose size alone says nothing.
    previous = _read_record(path)
    digests: dict[str, str] = {}
    with tqdm.tqdm(total=total, unit="B", unit_scale=True, desc=asset.name, dynamic_ncols=True) as progress:
        for relative, info in sorted(files.items()):
            local = path / relative if relative else path
            if local.is_file() and local.stat().st_size == int(info["size"]):
                digests[relative] = fingerprints.file_sha256(local)
                if previous is None or previous[1].get(relative) == digests[relative]:
                    progress.update(int(info["size"]))
                    continue
            _download_file(fs, info["name"], info, local, progress)
            digests[relative] = fingerprints.file_sha256(local)
    record = {"url": asset.url, "files": {relative: int(info["size"]) for relative, info in files.items()},
              "sha256": digests}
    record_path = path.with_name(path.name + COMPLETE_SUFFIX)
    temporary = record_path.with_name(record_path.name + ".tmp")
    temporary.write_text(json.dumps(record, indent=1, sort_keys=True))
    temporary.replace(record_path)


def _download_file(fs: Any, remote: str, info: Mapping[str, Any], local: pathlib.Path, progress: tqdm.tqdm) -> None:
    """One file into `<local>.partial`, continued from its current length, verified, then renamed."""
    size = int(info["size"])
    partial = local.with_name(local.name + PARTIAL_SUFFIX)
    local.parent.mkdir(parents=True, exist_ok=True)
    offset = partial.stat().st_size if partial.exists() else 0
    if offset > size:  # the remote file changed since: start over
        partial.unlink()
        offset = 0
    progress.update(offset)
    with fs.open(remote, "rb") as source, open(partial, "ab") as target:
        source.seek(offset)
        while chunk := source.read(_CHUNK_BYTES):
            target.write(chunk)
            progress.update(len(chunk))
        target.flush()
        os.fsync(target.fileno())
    problem = _verification_problem(partial, info)
    if problem:
        partial.unlink()
        raise AssetError(f"{remote}: {problem}; the partial download was removed, run the command again")
    partial.replace(local)


def _crc32c() -> Any:
    import google_crc32c  # installed with gcsfs, the one store that publishes CRC32C

    return google_crc32c.Checksum()


# Checksums a store may publish in its file info (GCS: base64 of the digest): name -> new hasher.
_CHECKSUMS = {"md5Hash": hashlib.md5, "crc32c": _crc32c}


def _verification_problem(path: pathlib.Path, info: Mapping[str, Any]) -> str | None:
    """Why a downloaded file does not match its remote info (size, published checksums), or None."""
    size = path.stat().st_size
    if size != int(info["size"]):
        return f"downloaded {size} bytes, the store lists {info['size']}"
    for key, new_hasher in _CHECKSUMS.items():
        if not info.get(key):
            continue
        hasher = new_hasher()
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK_BYTES):
                hasher.update(chunk)
        got = base64.b64encode(hasher.digest()).decode()
        if got != info[key]:
            return f"{key} {got} of the downloaded bytes differs from the store's {info[key]}"
    return None
