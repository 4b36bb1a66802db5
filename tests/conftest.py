"""Shared test fixtures: where `../shared` is, and how tests that need it skip outside CI."""

from __future__ import annotations

import atexit
import functools
import os
import pathlib
import shutil
import tempfile

import numpy as np

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DIR = pathlib.Path(os.environ.get("MULTINET_JAX_SHARED", REPO_ROOT.parent / "shared"))

# Tests never touch the network nor the user's caches: named assets resolve offline (a test that downloads passes
# offline=False with a local stand-in for the store), and the project's cache is a fresh folder per session.
os.environ["MULTINET_JAX_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"
_SESSION_CACHE = tempfile.mkdtemp(prefix="multinet_jax_test_cache_")
atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)
os.environ["MULTINET_JAX_CACHE"] = _SESSION_CACHE
os.environ["HF_HUB_CACHE"] = os.path.join(_SESSION_CACHE, "huggingface_hub")


def shared_path(*parts: str) -> pathlib.Path:
    """Path of a file in `../shared`; skips the test when it is absent (a user's fresh clone).

    In CI (`CI=true`) `../shared` is always beside the clone, so a missing file fails loudly instead.
    """
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            raise FileNotFoundError(f"CI must have {path} (../shared beside the clone)")
        pytest.skip(f"needs {path}: ../shared (data, fixtures, tokenizers) is not beside this clone")
    return path


@pytest.fixture(scope="session")
def shared() -> pathlib.Path:
    """The `../shared` folder itself (skips when absent outside CI)."""
    return shared_path()


@functools.cache
def _openpi_io(model: str) -> dict[str, np.ndarray]:
    with np.load(shared_path("openpi_reference", model, "io.npz")) as data:
        return {key: data[key] for key in data.files}


def openpi_io(model: str) -> dict[str, np.ndarray]:
    """openpi's golden `<model>/io.npz` ("pi0" or "fast"): a fresh dict of the cached arrays."""
    return dict(_openpi_io(model))


def openpi_observation(model: str) -> dict[str, np.ndarray]:
    """The fixture's observation dict: keys without `obs/`, copied, in the file's camera order."""
    return {key.removeprefix("obs/"): value.copy() for key, value in _openpi_io(model).items() if key.startswith("obs/")}


@pytest.fixture
def fresh_traces():
    """For a test that patches what tracing reads (a mocked device, a broken kernel): jit caches key on the inputs
    and the attention mode, not on the patch, so traces made before must not serve it, nor its traces later tests."""
    import jax

    jax.clear_caches()
    yield
    jax.clear_caches()
