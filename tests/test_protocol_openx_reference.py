"""Open-X as MultiNet's own Pi0 code ran it, against `../shared/multinet_reference/openx_bimanual_pi0_inputs.npz`.

The reference was written by MultiNet's unmodified `openx_inference.py` (action horizon 1) on the bimanual sample
shard: what SigLIP received (after openpi's float resize), the masks, state and prompt tokens, the split statistics
it computed, and the final predictions it maps a fixed model output to.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from conftest import shared_path
from multinet_jax import data, domains
from multinet_jax.models.observation import resize_with_pad, validate
from multinet_jax.tokenizers import PALIGEMMA_VOCAB_SIZE
from tokenizers_helpers import build_test_paligemma

pytest.importorskip("tensorflow")

ACTION_DIM = 14


@functools.cache
def _reference() -> dict[str, np.ndarray]:
    with np.load(shared_path("multinet_reference", "openx_bimanual_pi0_inputs.npz")) as npz:
        return {key: npz[key] for key in npz.files}


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return _reference()


@pytest.fixture(scope="module")
def multinet_stats(tmp_path_factory) -> dict:
    directory = shared_path("data", "multinet_sample", "openx_bimanual")
    cache_dir = tmp_path_factory.mktemp("cache")
    return data.action_stats("openx_bimanual", directory, split="public", cache_dir=cache_dir, kind="multinet")


def test_split_statistics_are_multinets_bit_for_bit(reference, multinet_stats):
    assert multinet_stats["count"] == int(reference["stats_count"]) and multinet_stats["size"] == [ACTION_DIM]
    for name in ("mean", "std", "min", "max", "q01", "q99"):
        np.testing.assert_array_equal(np.asarray(multinet_stats[name]), reference[f"stats_{name}"], err_msg=name)
    # A constant dimension (a gripper) gets std sqrt(1e-8) = 1e-4 in float32, not 0.
    assert multinet_stats["std"][6] == reference["normstats_std"][6] == np.float32(1e-4)


def test_fixed_output_maps_to_multinets_predictions(reference, multinet_stats):
    """Horizon 1 semantics: step 0 of the output, first 14 dims, `x * (std + 1e-6) + mean` with the split's stats."""
    raw = reference["raw_actions_n50x32"][:, :1, :]  # what a Pi0Config(action_horizon=1) model returns
    predictions = domains.continuous_predictions(raw, ACTION_DIM, domains.ActionNorm("mean_std", multinet_stats))
    np.testing.assert_allclose(np.asarray(predictions), reference["mn_pred_from_raw_step0"], rtol=0, atol=1e-9)


def test_exact_statistics_differ_from_multinets_on_the_gripper(reference, tmp_path):
    exact = data.action_stats("openx_bimanual", shared_path("data", "multinet_sample", "openx_bimanual"), split="public",
                              cache_dir=tmp_path, kind="exact")
    np.testing.assert_allclose(exact["std"], reference["gt_action"].astype(np.float64).std(axis=0), rtol=1e-9, atol=1e-12)
    assert exact["std"][6] == 0.0 and reference["stats_std"][6] > 0


@pytest.fixture(scope="module")
def bimanual_batch(tmp_path_factory) -> dict:
    """The reference shard through our data pipeline, with the 257,152-piece PaliGemma vocabulary MultiNet used."""
    work = tmp_path_factory.mktemp("bimanual")
    tokenizer = build_test_paligemma(work)
    directory = shared_path("data", "multinet_sample", "openx_bimanual")
    return next(iter(data.load("openx_bimanual", directory, split="public", tokenizer=tokenizer, batch_size=8,
                               cache_dir=work / "cache", shard_index=0, shard_count=1)))


_CAMERAS = {"base_0_rgb": "base", "left_wrist_0_rgb": "left_wrist", "right_wrist_0_rgb": "right_wrist"}


def test_images_reach_siglip_as_in_multinets_run(reference, bimanual_batch):
    """uint8 at native size from the pipeline, then the model's observation boundary and its openpi resize (what
    `PaliGemma.embed_prefix` runs): within 1e-6 of what SigLIP saw."""
    np.testing.assert_array_equal(bimanual_batch["image/base_0_rgb"], reference["raw_image_uint8"])
    observation = validate(data.model_inputs(bimanual_batch), image_size=224, vocab_size=PALIGEMMA_VOCAB_SIZE, state_dim=32)
    to_siglip = jax.jit(lambda image: resize_with_pad(image, 224, 224))
    for ours, theirs in _CAMERAS.items():
        np.testing.assert_array_equal(observation[f"image_mask/{ours}"], reference[f"image_mask_{theirs}"])
        seen = np.asarray(to_siglip(observation[f"image/{ours}"]))
        np.testing.assert_allclose(seen, reference[f"image_{theirs}_model"], rtol=0, atol=1e-6, err_msg=ours)


def test_state_and_prompt_tokens_are_multinets_exactly(reference, bimanual_batch):
    assert list(bimanual_batch["prompt"]) == reference["prompt_text"].tolist()
    np.testing.assert_array_equal(bimanual_batch["state"], reference["state"])
    np.testing.assert_array_equal(bimanual_batch["tokenized_prompt"], reference["tokenized_prompt"])
    np.testing.assert_array_equal(bimanual_batch["tokenized_prompt_mask"], reference["tokenized_prompt_mask"])
