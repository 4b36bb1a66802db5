"""Open-X as MultiNet's own Pi0 code ran it, against `../shared/multinet_reference/openx_bimanual_pi0_inputs.npz`.

The reference was written by MultiNet's unmodified `openx_inference.py` (action horizon 1) on the bimanual sample
shard: what SigLIP received (after openpi's float resize), the masks, state and prompt tokens, the split statistics
it computed, and the final predictions it maps a fixed model output to. Single-arm and mobile-manipulation ground
truth and statistics are compared with what MultiNet's own code made of constructed action dicts.
"""

from __future__ import annotations

import functools
import json
import pathlib

import jax
import numpy as np
import pytest

from conftest import shared_path
from data_helpers import write_translated_shards
from multinet_jax import data, domains
from multinet_jax.data import BadRecordError, transforms
from multinet_jax.eval.loop import check_split_std
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


# Single arm (Bridge) and mobile manipulation (RT-1): MultiNet's Pi0 script rebuilt the ground truth from the action
# dict and recomputed the split's statistics over the rebuilt actions. `fixtures/multinet_generated.json` holds
# constructed Bridge- / RT-1-style action dicts and what MultiNet's own dataloader and functions made of them.
REBUILT = json.loads((pathlib.Path(__file__).parent / "fixtures" / "multinet_generated.json").read_text())["openx"]


@pytest.fixture(scope="module", params=sorted(REBUILT))
def rebuilt_domain(request, tmp_path_factory) -> tuple[str, pathlib.Path, pathlib.Path, dict]:
    name, reference = request.param, REBUILT[request.param]
    work = tmp_path_factory.mktemp(name)
    directory = write_translated_shards(work / name, reference["shards"], tuple(reference["state_fields"]))
    return name, directory, work / "cache", reference


def test_ground_truth_is_rebuilt_from_the_action_dict_as_multinet_did(rebuilt_domain):
    name, directory, cache, reference = rebuilt_domain
    source = data.make_source(name, directory, cache_dir=cache)
    truth = [source[index]["ground_truth"] for index in range(len(source))]
    np.testing.assert_array_equal(np.asarray(truth, np.float64), np.asarray(reference["multinet_ground_truth"], np.float64))


def test_split_statistics_are_recomputed_over_the_rebuilt_actions_bit_for_bit(rebuilt_domain):
    name, directory, cache, reference = rebuilt_domain
    stats = data.action_stats(name, directory, cache_dir=cache, kind="multinet")
    for key in ("count", "size", "min", "max", "mean", "std"):
        assert stats[key] == reference["multinet_stats"][key], key
    exact = data.action_stats(name, directory, cache_dir=cache, kind="exact")
    truth = np.asarray(reference["multinet_ground_truth"], np.float64)
    np.testing.assert_allclose(exact["std"], truth.std(axis=0), rtol=1e-12, atol=1e-15)
    # Unnormalized with these statistics, a prediction has the rebuilt actions' 7 dims, as MultiNet's process_output.
    raw = np.random.default_rng(0).standard_normal((2, 1, 32))
    assert np.shape(domains.continuous_predictions(raw, len(truth[0]), domains.ActionNorm("mean_std", stats))) == (2, 7)


def test_other_names_keep_the_flat_action(rebuilt_domain):
    """The rebuild belongs to the two MultiNet domains: the same data under another name scores its float leaves."""
    name, directory, cache, reference = rebuilt_domain
    sample = data.make_source("openx_same_data", directory, cache_dir=cache)[0]
    leaves = reference["shards"][0][0]
    floats = [np.reshape(leaf["value"], -1) for _, leaf in sorted(leaves.items()) if leaf["dtype"].startswith("float")]
    np.testing.assert_array_equal(sample["ground_truth"], np.concatenate(floats).astype(np.float32))
    assert data.action_stats("openx_same_data", directory, cache_dir=cache, kind="multinet")["size"] == [len(sample["ground_truth"])]


def test_an_action_dict_without_the_rebuilds_keys_is_a_bad_record(tmp_path):
    shard = [{key: leaf for key, leaf in step.items() if key != "open_gripper"} for step in REBUILT["openx_single_arm"]["shards"][0]]
    directory = write_translated_shards(tmp_path / "openx_single_arm", [shard])
    with pytest.raises(BadRecordError, match=r"field 'action': MultiNet rebuilt openx_single_arm's actions from \['world_vector', "
                                             r"'rotation_delta', 'open_gripper'\]"):
        data.make_source("openx_single_arm", directory, cache_dir=tmp_path / "cache")[0]


STATES = json.loads((pathlib.Path(__file__).parent / "fixtures" / "multinet_openx_state.json").read_text())["cases"]


@pytest.mark.parametrize("case", sorted(STATES))
def test_state_is_built_from_the_fields_a_step_has_as_multinet_did(case, tmp_path):
    """`fixtures/multinet_openx_state.json`: MultiNet's dataloader and its Pi0 script's `_prepare_state` on shards with
    RT-1's real observation fields (no `yaw`, which the script lists and skips when absent), none of them (a zero
    state) and the bimanual poses; the project's state from the same shards, padded to Pi0's 32 dims as the script did."""
    reference = STATES[case]
    directory = write_translated_shards(tmp_path / reference["dataset"], reference["shards"], state_shapes=reference["state_shapes"])
    source = data.make_source(reference["dataset"], directory, cache_dir=tmp_path / "cache")
    states = [transforms.pad_state(source[index]["state"]) for index in range(len(source))]
    np.testing.assert_array_equal(np.asarray(states, np.float64), np.asarray(reference["multinet_state"], np.float64))


def test_multinets_statistics_without_a_std_are_not_unnormalized_with_and_the_way_out_is_named(tmp_path):
    """MultiNet's float32 `E[x^2] - E[x]^2` falls below zero for a dim of small spread about a large mean (its std NaN:
    every prediction invalid): the statistics are kept for the metrics (min, max, mean), unnormalizing with them is
    refused naming the dim and --unnormalize=split_exact, whose float64 statistics have a std."""
    rng = np.random.default_rng(0)  # a plain float32 action tensor (an action dict's sums were float64: finite std)
    steps = [np.asarray([1000 + 0.01 * rng.standard_normal(), rng.standard_normal()], np.float32) for _ in range(64)]
    directory = write_translated_shards(tmp_path / "openx_same_data", [steps])
    multinet = data.action_stats("openx_same_data", directory, cache_dir=tmp_path / "cache", kind="multinet")
    assert np.isnan(multinet["std"][0]) and np.isfinite([multinet[name] for name in ("min", "max", "mean")]).all()
    with pytest.raises(ValueError, match=r"openx_same_data: MultiNet's split statistics have no std in dims \[0\] .* "
                                         r"--unnormalize=split_exact unnormalizes with the float64 statistics"):
        check_split_std("openx_same_data", multinet)
    exact = data.action_stats("openx_same_data", directory, cache_dir=tmp_path / "cache", kind="exact")
    check_split_std("openx_same_data", exact)
    assert 0 < exact["std"][0] < 0.02
