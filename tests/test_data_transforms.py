"""Transforms, the step record codec, streaming action statistics and prompt rules, on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest

from multinet_jax.data import prompts, steps, transforms
from multinet_jax.data.overcooked import parse_joint_action
from multinet_jax.data.stats import NUM_QUANTILE_BINS, RunningActionStats, compute_action_stats


def test_resize_with_pad_keeps_aspect_and_pads_black():
    image = np.full((100, 200, 3), 77, np.uint8)  # w = 2h -> 224 x 112 content, 56 black rows above and below
    out = transforms.resize_with_pad(image)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert np.all(out[:56] == 0) and np.all(out[168:] == 0)
    assert np.all(out[56:168] == 77)


def test_resize_with_pad_odd_padding_goes_below_and_right():
    image = np.full((224, 75, 3), 200, np.uint8)  # already 224 high: width stays 75, pad 149 -> 74 left, 75 right
    out = transforms.resize_with_pad(image)
    assert np.all(out[:, :74] == 0) and np.all(out[:, 74:149] == 200) and np.all(out[:, 149:] == 0)


def test_resize_is_identity_at_target_size():
    image = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    assert transforms.resize_with_pad(image) is image


def test_to_model_range_endpoints():
    values = transforms.to_model_range(np.array([0, 51, 255], np.uint8))
    np.testing.assert_allclose(values, [-1.0, 51 / 127.5 - 1.0, 1.0], rtol=0, atol=1e-6)
    assert values.dtype == np.float32


def test_to_model_range_is_openpis_and_hugging_faces_bit_for_bit():
    """openpi's `x / 255 * 2 - 1` and the HF SigLIP processor's rescale + normalize, for every uint8 value."""
    pixels = np.arange(256, dtype=np.uint8)
    openpi = pixels.astype(np.float32) / 255.0 * 2.0 - 1.0
    rescaled = (pixels.astype(np.float64) * (1 / 255)).astype(np.float32)
    hugging_face = (rescaled - np.float32(0.5)) / np.float32(0.5)
    np.testing.assert_array_equal(transforms.to_model_range(pixels), openpi)
    np.testing.assert_array_equal(transforms.to_model_range(pixels), hugging_face)


def test_pad_state_pads_and_truncates():
    np.testing.assert_array_equal(transforms.pad_state(np.array([1.0, 2.0])), [1.0, 2.0] + [0.0] * 30)
    np.testing.assert_array_equal(transforms.pad_state(np.arange(40.0)), np.arange(32.0))
    np.testing.assert_array_equal(transforms.pad_state(None), np.zeros(32))


def test_camera_inputs_masks_missing_cameras():
    inputs = transforms.images_to_model_range(transforms.camera_inputs(np.full((10, 10, 3), 255, np.uint8), transforms.PI0_CAMERAS))
    assert np.all(inputs["image/base_0_rgb"] == 1.0) and bool(inputs["image_mask/base_0_rgb"])
    for camera in transforms.PI0_CAMERAS[1:]:
        assert np.all(inputs[f"image/{camera}"] == -1.0) and not bool(inputs[f"image_mask/{camera}"])


def test_tokenize_checks_shapes():
    class Short:
        def tokenize_prompt(self, text, max_len):
            return np.zeros(3, np.int32), np.ones(3, bool)

    with pytest.raises(ValueError, match="expected"):
        transforms.tokenize(Short(), "hi", 8)


def test_step_codec_round_trip():
    step = steps.flatten({
        "observation": {"image": np.arange(24, dtype=np.uint8).reshape(2, 4, 3), "joint": np.array([1.5, -2.0])},
        "language_instruction": "open the drawer — gently",
        "is_last": np.bool_(True),
        "_step_index": np.int64(7),
    })
    decoded = steps.decode_step(steps.encode_step(step))
    assert sorted(decoded) == sorted(step)
    assert decoded["language_instruction"] == "open the drawer — gently"
    assert decoded["_step_index"].shape == () and int(decoded["_step_index"]) == 7
    np.testing.assert_array_equal(decoded["observation/image"], step["observation/image"])
    np.testing.assert_array_equal(decoded["observation/joint"], step["observation/joint"])
    assert decoded["is_last"].dtype == np.bool_ and bool(decoded["is_last"])


def test_running_stats_match_numpy_with_growing_range():
    rng = np.random.default_rng(0)
    actions = np.concatenate([rng.normal(size=(3000, 3)), 4.0 * rng.normal(size=(7000, 3)) + 1.0])  # range grows mid-stream
    stats = RunningActionStats()
    for chunk in np.array_split(actions, 13):
        stats.update(chunk)
    result = stats.result()
    assert result["count"] == 10000 and result["size"] == [3]
    np.testing.assert_allclose(result["min"], actions.min(0))
    np.testing.assert_allclose(result["max"], actions.max(0))
    np.testing.assert_allclose(result["mean"], actions.mean(0), rtol=1e-10)
    np.testing.assert_allclose(result["std"], actions.std(0), rtol=1e-10)
    # a histogram quantile lands between the order statistics around q * n, give or take a bin per re-binning
    ordered, bin_width = np.sort(actions, axis=0), (actions.max(0) - actions.min(0)) / NUM_QUANTILE_BINS
    for name, rank in (("q01", 100), ("q99", 9900)):
        value = np.array(result[name])
        assert np.all(value >= ordered[rank - 2] - 3 * bin_width) and np.all(value <= ordered[rank + 1] + 3 * bin_width), name


def test_compute_action_stats_single_pass_equals_batched():
    actions = np.random.default_rng(1).uniform(-1, 1, size=(50, 2))
    np.testing.assert_allclose(compute_action_stats(iter(actions), chunk=7)["mean"], actions.mean(0))


def test_robovqa_prompt_splits_at_first_q():
    assert prompts.robovqa_prompt("goal: tidy up  Q: what next? Q: later") == "Task and Context: goal: tidy up\n Question: what next? Q: later"
    with pytest.raises(ValueError):
        prompts.robovqa_prompt("no question here")


@pytest.mark.parametrize(
    "text, joint, players, known",
    [
        ("[[0, -1], [0, -1]]", 0, (0, 0), True),
        ('[[0, -1], "interact"]', 5, (0, 5), True),
        ('["interact", [1, 0]]', 32, (5, 2), True),
        ("[[-1, 0], [0, 1]]", 19, (3, 1), True),
        ("[[0, 0], [0, 0]]", 28, (4, 4), True),
        ("[[2, 2], [0, 0]]", 28, (4, 4), False),
        ("not a literal", 28, (4, 4), False),
    ],
)
def test_overcooked_joint_action(text, joint, players, known):
    assert parse_joint_action(text) == (joint, players, known)


def test_overcooked_options_follow_joint_index():
    assert prompts.OVERCOOKED_JOINT_OPTIONS[5] == "Player 0: NORTH, Player 1: INTERACT"
    assert prompts.OVERCOOKED_JOINT_OPTIONS[32] == "Player 0: INTERACT, Player 1: EAST"
    assert len(prompts.OVERCOOKED_JOINT_OPTIONS) == 36
