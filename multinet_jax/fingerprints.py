"""Content fingerprints of files and folders, and content manifests: telling "the same bytes" apart.

A fingerprint is a sha256 over every file's path relative to the fingerprinted root, its size and the sha256 of
its whole content, so a copy of a checkpoint or dataset in another place (or restored with other modification
times) has the same fingerprint, and a re-written, truncated, extended, renamed or edited file (anywhere in it)
changes it. Linked files and folders are read through the link: the fingerprint is of what a reader of the folder
reads. It is what a run manifest records of every input. Hidden entries (a name starting with "."), such as
conversions stored beside the data or a content manifest, are derived files, not inputs, and are skipped.

Hashing whole files is affordable because each file's digest is cached (`digest_cache_dir()`, default
`~/.cache/multinet_jax/digests/`, one small JSON per file) under its resolved path, size, modification and change
times and inode: a resume, or the next run on the same 13 GB checkpoint, stats the files instead of reading them.
Any write through the filesystem changes the change time (which no user can set back), so only a change beneath
it (a disk flipping bits, a raw block write) can leave a stale digest standing; such a file is hashed again once it
is copied or moved to another filesystem. Files that are not local (a `gs://` URL) are hashed in full every time.

`verify` compares files with a content manifest, every file's size and sha256 as recorded when they were fetched
(the download record of an asset, `assets.py`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

from etils import epath

_READ_CHUNK = 1 << 20


class ContentError(ValueError):
    """A file whose bytes are not the ones its content manifest recorded (corrupt, edited or truncated)."""


def as_path(location: str | pathlib.Path) -> epath.Path:
    """A local path (resolved) or a URL such as gs://bucket/dir, as an epath."""
    return epath.Path(location if "://" in str(location) else pathlib.Path(location).resolve())


def exists(path: epath.Path) -> bool:
    """Whether `path` exists; an unreachable location (gs:// offline, no credentials) is an OSError naming it."""
    try:
        return path.exists()
    except Exception as error:  # TensorFlow's gfile / gcsfs raise their own types for network failures
        raise ConnectionError(f"{path}: unreachable ({type(error).__name__}: {' '.join(str(error).split())[:300]})") from None


def digest_cache_dir() -> pathlib.Path:
    """Where file digests are cached: `<$MULTINET_JAX_CACHE>/digests` (read at every call)."""
    from multinet_jax import assets

    return assets.cache_dir() / "digests"


def _hash_file(path: Any) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stat_key(path: pathlib.Path) -> dict[str, Any]:
    info = path.stat()
    return {"path": str(path), "bytes": info.st_size, "mtime_ns": info.st_mtime_ns, "ctime_ns": info.st_ctime_ns,
            "inode": info.st_ino}


def file_sha256(path: str | pathlib.Path | epath.Path) -> str:
    """The sha256 of a whole file; local files through the digest cache (module docstring)."""
    if "://" in str(path):
        return _hash_file(epath.Path(path))
    path = pathlib.Path(path).resolve()
    key = _stat_key(path)
    entry = digest_cache_dir() / f"{hashlib.sha256(str(path).encode()).hexdigest()[:40]}.json"
    try:
        cached = json.loads(entry.read_text())
        if {name: cached.get(name) for name in key} == key:
            return cached["sha256"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass  # none yet, or unreadable: hash the file
    digest = _hash_file(path)
    if _stat_key(path) == key:  # unchanged while it was read
        _write_atomically(entry, {**key, "sha256": digest})
    return digest


def _write_atomically(path: pathlib.Path, value: Any) -> None:
    """`value` as JSON at `path`, or nothing when the cache cannot be written (a read-only home: no cache, no error)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
            json.dump(value, handle)
        os.replace(handle.name, path)
    except OSError:
        pass


def _walk(root: epath.Path) -> Iterator[tuple[epath.Path, list[str], list[str]]]:
    """`root.walk()`, descending into linked folders where the filesystem is local: a dataset folder whose shards are
    links to other folders is those shards' content. A link back to a folder above it (a loop) is not entered."""
    if "://" in str(root):
        yield from root.walk()
        return
    real_ancestors = {str(root): frozenset()}
    for directory, subdirectories, names in os.walk(root, followlinks=True):
        real, above = os.path.realpath(directory), real_ancestors.pop(directory)
        if real in above:
            subdirectories.clear()
            continue
        for name in subdirectories:
            real_ancestors[os.path.join(directory, name)] = above | {real}
        yield epath.Path(directory), subdirectories, names


def hidden(relative: pathlib.PurePath) -> bool:
    """Whether a path under a fingerprinted folder is left out of its fingerprint (a part named with a leading dot:
    editors' and tools' own files), and so out of what the data loaders read (`glob`)."""
    return any(part.startswith(".") for part in relative.parts)


def glob(directory: pathlib.Path, pattern: str) -> list[pathlib.Path]:
    """`directory.glob(pattern)` sorted, less hidden paths: the data files a fingerprint of `directory` covers (Python's
    glob matches `.scratch.jsonl` with `*.jsonl`, which the fingerprint would not see change)."""
    return sorted(path for path in directory.glob(pattern) if not hidden(path.relative_to(directory)))


def only(directory: pathlib.Path, pattern: str) -> pathlib.Path | None:
    """The one `pattern` file of `directory` (`glob`'s; None when there is none). Several are refused: which one was
    meant (one split among several, a stale copy) would be a guess."""
    found = glob(directory, pattern)
    if len(found) > 1:
        raise ValueError(f"{directory}: several {pattern} files {[p.name for p in found]}; point data_dir at one split's")
    return found[0] if found else None


def _files(root: epath.Path) -> list[tuple[str, epath.Path]]:
    """(relative name, path) of every non-hidden file under `root` (or `root` itself when it is a file)."""
    if not root.is_dir():
        return [("", root)]  # a file is its content, whatever it is called
    found = []
    for directory, subdirectories, names in _walk(root):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]  # prunes the walk
        relative = directory.relative_to(root)
        if hidden(relative):
            continue
        found += [((relative / name).as_posix(), directory / name) for name in names if not hidden(pathlib.PurePath(name))]
    return sorted(found, key=lambda item: item[0])


def fingerprint(location: str | pathlib.Path) -> dict[str, Any]:
    """`{"sha256", "files", "bytes"}` of a file or a folder (recursively); see the module docstring.

    Raises FileNotFoundError naming `location` when it does not exist.
    """
    root = as_path(location)
    if not exists(root):
        raise FileNotFoundError(f"{root}: no such file or directory")
    digest = hashlib.sha256()
    total_bytes = 0
    files = _files(root)
    for name, path in files:
        size = path.stat().length
        total_bytes += size
        digest.update(f"{name}\0{size}\0{file_sha256(path)}\n".encode())
    return {"sha256": digest.hexdigest(), "files": len(files), "bytes": total_bytes}


def verify(root: str | pathlib.Path, files: Mapping[str, Mapping[str, Any]], record: str | pathlib.Path) -> None:
    """Every file `files` lists (`{relative name: {"bytes", "sha256"}}`; sha256 may be None: size only) has its
    recorded size and sha256 under `root`; ContentError names the first that does not and the `record` it was
    compared with."""
    for relative, expected in sorted(files.items()):
        path = pathlib.Path(root) / relative if relative else pathlib.Path(root)
        if not path.is_file():
            raise ContentError(f"{path}: missing, but {record} lists it; the checkpoint is incomplete")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise ContentError(f"{path}: {size} bytes, but {record} records {expected['bytes']}; the file is truncated "
                               "or was replaced")
        if expected.get("sha256") and file_sha256(path) != expected["sha256"]:
            raise ContentError(f"{path}: its sha256 {file_sha256(path)[:16]}... differs from the {expected['sha256'][:16]}... "
                               f"that {record} records: the file is corrupt or was edited")
