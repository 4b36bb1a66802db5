"""Transforms, the step record codec, streaming action statistics and prompt rules, on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from multinet_jax.data import prompts, steps, transforms
from multinet_jax.data.overcooked import parse_joint_action
from multinet_jax.data.stats import NUM_QUANTILE_BINS, RunningActionStats, compute_action_stats


def test_paligemma_processor_resize_is_a_straight_bicubic_resize():
    """No aspect ratio kept, no padding (unlike openpi's resize_with_pad): a constant 100x200 image fills 224x224."""
    constant = transforms.paligemma_processor_resize(np.full((100, 200, 3), 77, np.uint8))
    assert constant.shape == (224, 224, 3) and constant.dtype == np.uint8 and np.all(constant == 77)
    checkers = (np.indices((30, 40)).sum(axis=0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, axis=2)
    resized = transforms.paligemma_processor_resize(checkers)
    np.testing.assert_array_equal(resized, np.asarray(Image.fromarray(checkers).resize((224, 224), Image.BICUBIC)))
    assert not np.array_equal(resized, np.asarray(Image.fromarray(checkers).resize((224, 224), Image.BILINEAR)))


def test_paligemma_processor_resize_is_identity_at_224():
    image = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    assert transforms.paligemma_processor_resize(image) is image


def test_pad_state_pads_and_truncates():
    np.testing.assert_array_equal(transforms.pad_state(np.array([1.0, 2.0])), [1.0, 2.0] + [0.0] * 30)
    np.testing.assert_array_equal(transforms.pad_state(np.arange(40.0)), np.arange(32.0))
    np.testing.assert_array_equal(transforms.pad_state(None), np.zeros(32))


def test_camera_inputs_keep_the_native_size_and_black_masked_wrists():
    image = np.random.default_rng(1).integers(0, 255, (256, 320, 3), dtype=np.uint8)
    inputs = transforms.camera_inputs(image, transforms.PI0_CAMERAS)
    assert inputs["image/base_0_rgb"] is image and bool(inputs["image_mask/base_0_rgb"])
    for camera in transforms.PI0_CAMERAS[1:]:  # MultiNet's zeros_like(base): black, masked, the base's size
        assert inputs[f"image/{camera}"].shape == image.shape and not inputs[f"image/{camera}"].any()
        assert not bool(inputs[f"image_mask/{camera}"])
    resized = transforms.camera_inputs(image, transforms.PI0_CAMERAS, paligemma_resize=224)
    assert resized["image/base_0_rgb"].shape == resized["image/right_wrist_0_rgb"].shape == (224, 224, 3)


def test_camera_inputs_without_an_image_show_the_blank_image_or_mask_everything():
    white = transforms.camera_inputs(None, transforms.PI0_CAMERAS, blank_image=255)
    assert np.all(white["image/base_0_rgb"] == 255) and white["image/base_0_rgb"].shape == (224, 224, 3)
    assert bool(white["image_mask/base_0_rgb"]) and not bool(white["image_mask/left_wrist_0_rgb"])
    masked = transforms.camera_inputs(None, transforms.PI0_CAMERAS)
    assert not any(bool(masked[f"image_mask/{camera}"]) for camera in transforms.PI0_CAMERAS)


class _Chars:
    def prompt_ids(self, text, prompt_format):
        return [2] + [ord(character) for character in text]


def test_tokenize_truncates_at_max_len_and_tells_the_full_length():
    tokens = transforms.tokenize(_Chars(), "x" * 40, "openpi", 16)
    assert tokens["tokenized_prompt"].shape == (16,) and tokens["tokenized_prompt_mask"].all()
    assert int(tokens["prompt_tokens"]) == 41
    padded = transforms.tokenize(_Chars(), "xy", "openpi", 16)
    assert padded["tokenized_prompt"].tolist() == [2, 120, 121] + [0] * 13 and padded["tokenized_prompt_mask"].sum() == 3


def test_untruncated_prompts_are_padded_to_a_power_of_two_bucket():
    assert [transforms.prompt_bucket(n) for n in (0, 1, 32, 33, 64, 250, 257, 2049)] == [32, 32, 32, 64, 64, 256, 512, 4096]
    tokens = transforms.tokenize(_Chars(), "x" * 40, "paligemma_processor", None)
    assert tokens["tokenized_prompt"].shape == (64,) and tokens["tokenized_prompt_mask"].sum() == 41 == int(tokens["prompt_tokens"])


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


@pytest.mark.parametrize(
    "raw, question",
    [  # openx_dataloader.py's robot_vqa rule: split once at "Q:"
        ("goal: tidy up  Q: what next? Q: later", "Task and Context: goal: tidy up\n Question: what next? Q: later"),
        ("Q: is the drawer open?", "Question: is the drawer open?"),
        ("no question here", "no question here"),
        ("current goal is: push Q:", "Task and Context: current goal is: push\n Question: "),
    ],
)
def test_robovqa_question_follows_multinets_split(raw, question):
    assert prompts.robovqa_question(raw) == question


@pytest.mark.parametrize(
    "text, joint, players, known",
    [
        ("[[0, -1], [0, -1]]", 0, (0, 0), True),
        ('[[0, -1], "interact"]', 5, (0, 5), True),
        ('["interact", [1, 0]]', 32, (5, 2), True),
        ("[[-1, 0], [0, 1]]", 19, (3, 1), True),
        ("[[0, 0], [0, 0]]", 28, (4, 4), True),
        ("[[2, 2], [0, 0]]", 28, (4, 4), False),
        ('[[0, 1], "stay"]', 10, (1, 4), False),  # one player's fallback to STAY (tests/test_protocol_prompts.py: MultiNet's)
    ],
)
def test_overcooked_joint_action(text, joint, players, known):
    assert parse_joint_action(text) == (joint, players, known)
