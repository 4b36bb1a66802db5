"""Real inputs for the tokenizer and decoding tests: a PaliGemma vocabulary built from Gemma's, real actions, and
the prompts openpi's own code built."""

from __future__ import annotations

import functools
import json
import pathlib
from collections.abc import Mapping

import numpy as np

from conftest import shared_path
from multinet_jax.tokenizers import PaliGemmaTokenizer, build_paligemma_vocab


def build_test_paligemma(directory: pathlib.Path) -> PaliGemmaTokenizer:
    """PaliGemma's 257,152-piece tokenizer rebuilt from `../shared/tokenizers/gemma_tokenizer.model`."""
    gemma = shared_path("tokenizers", "gemma_tokenizer.model")
    return PaliGemmaTokenizer(build_paligemma_vocab(gemma, directory / "paligemma_tokenizer.model"))


def bimanual_shard_episode() -> tuple[np.ndarray, list[str]]:
    """Actions [steps, 14] and instructions of MultiNet's openx_bimanual sample shard (a tf.data snapshot)."""
    import tensorflow as tf

    path = shared_path("data", "multinet_sample", "openx_bimanual", "public", "translated_shard_0")
    steps = list(tf.data.Dataset.load(str(path)).as_numpy_iterator())
    actions = np.stack([step["action"] for step in steps]).astype(np.float64)
    return actions, [step["language_instruction"].decode() for step in steps]


def bimanual_ground_truth_actions() -> np.ndarray:
    """The 126 real 14-dim bimanual actions MultiNet scored its published Pi0 result against."""
    path = shared_path("data", "multinet_pi0_openx_bimanual_results.json")
    return np.asarray(json.loads(path.read_text())["all_gt"], np.float64)


def sliding_chunks(actions: np.ndarray, horizon: int) -> list[np.ndarray]:
    """Every window of `horizon` consecutive steps: the action chunks a policy is trained to emit."""
    return [actions[start : start + horizon] for start in range(len(actions) - horizon + 1)]


OPENPI_PROMPTS = pathlib.Path(__file__).resolve().parent / "fixtures" / "openpi_prompts.json"


@functools.cache
def openpi_prompts() -> dict:
    """What openpi's own input transforms built (`fixtures/openpi_prompts.json`, see `fixtures/README.md`)."""
    return json.loads(OPENPI_PROMPTS.read_text())


def openpi_prompt_cases(model: str) -> list[dict]:
    """The fixture's cases for openpi's model type "pi0", "pi05" or "pi0_fast"."""
    return [case for case in openpi_prompts()["cases"] if case["model"] == model]


def openpi_case_state(case: dict) -> np.ndarray | None:
    """The case's float32 state before normalization; None for openpi's empty state, as a sample without one is built."""
    return np.array(case["state"], np.float32) if case["state"] else None


def assert_openpi_prompt(case: dict, row: Mapping[str, np.ndarray]) -> None:
    """`row`'s ids and masks are openpi's for `case`, at every position, padding included, and no others."""
    assert sorted(key for key in row if key.startswith("token")) == sorted(key for key in case if key.startswith("token"))
    assert np.asarray(row["tokenized_prompt"]).tolist() == case["tokenized_prompt"], case["name"]
    for key in ("tokenized_prompt_mask", "token_ar_mask", "token_loss_mask"):
        if key in case:
            assert "".join(str(int(x)) for x in np.asarray(row[key])) == case[key], (case["name"], key)
