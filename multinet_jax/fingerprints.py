"""Content fingerprints of files and folders: what a run manifest records to tell "the same inputs" apart.

A fingerprint is a sha256 over every file's path relative to the fingerprinted root, its size and a digest of
its bytes, so a copy of a checkpoint or dataset in another place (or restored with other modification times)
has the same fingerprint, and a re-written, truncated, extended or renamed file changes it.

Cost is bounded, because this runs before every evaluation: files up to `FULL_HASH_BYTES` are hashed whole
(tokenizers, metadata, JSON/CSV/JSONL data, small shards); larger files by their size plus their first and last
`EDGE_BYTES` (a full Pi0 checkpoint is 13 GB, MultiNet's Open-X folders hundreds of GB, and a `gs://` checkpoint
would be downloaded in full). What this misses is an edit in the middle of a large file that keeps its size; the
per-sample checks of a resume (ids and ground truth against the data) and the checkpoint's finite-value check
are the other guards. Hidden entries (a name starting with "."), such as conversions stored beside the data,
are derived files, not inputs, and are skipped.
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any

from etils import epath

FULL_HASH_BYTES = 8 << 20
EDGE_BYTES = 1 << 20
_READ_CHUNK = 1 << 20


def as_path(location: str | pathlib.Path) -> epath.Path:
    """A local path (resolved) or a URL such as gs://bucket/dir, as an epath."""
    return epath.Path(location if "://" in str(location) else pathlib.Path(location).resolve())


def exists(path: epath.Path) -> bool:
    """Whether `path` exists; an unreachable location (gs:// offline, no credentials) is an OSError naming it."""
    try:
        return path.exists()
    except Exception as error:  # TensorFlow's gfile / gcsfs raise their own types for network failures
        raise ConnectionError(f"{path}: unreachable ({type(error).__name__}: {' '.join(str(error).split())[:300]})") from None


def _file_digest(path: epath.Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if size <= FULL_HASH_BYTES:
            while chunk := handle.read(_READ_CHUNK):
                digest.update(chunk)
        else:
            digest.update(handle.read(EDGE_BYTES))
            handle.seek(size - EDGE_BYTES)
            digest.update(handle.read(EDGE_BYTES))
    return digest.hexdigest()


def _files(root: epath.Path) -> list[tuple[str, epath.Path]]:
    """(relative name, path) of every non-hidden file under `root` (or `root` itself when it is a file)."""
    if not root.is_dir():
        return [("", root)]  # a file is its content, whatever it is called
    found = []
    for directory, subdirectories, names in root.walk():
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]  # prunes the walk
        relative = directory.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        found += [((relative / name).as_posix(), directory / name) for name in names if not name.startswith(".")]
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
        digest.update(f"{name}\0{size}\0{_file_digest(path, size)}\n".encode())
    return {"sha256": digest.hexdigest(), "files": len(files), "bytes": total_bytes}
