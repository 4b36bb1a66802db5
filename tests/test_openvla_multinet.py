"""OpenVLA as MultiNet ran it (`multinet_jax.models.openvla_actions`, `openvla_inputs.crop_center`): each rule of MultiNet's
OpenVLA harness (ManifoldRG/MultiNet src/eval/profiling/openvla) on its own cases."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from openvla_helpers import fixture_images, fixture_instructions, openvla_model
from multinet_jax import domains
from multinet_jax.models import InferenceOptions, openvla_actions
from multinet_jax.models.openvla_inputs import crop_center


def _tensorflow_crop(image: np.ndarray) -> np.ndarray:
    """OpenVLA's / MultiNet's `get_vla_action(center_crop=True)` image path, run with TensorFlow itself."""
    tf = pytest.importorskip("tensorflow")
    scaled = tf.expand_dims(tf.image.convert_image_dtype(tf.convert_to_tensor(image), tf.float32), 0)
    side = tf.reshape(tf.clip_by_value(tf.sqrt(0.9), 0, 1), shape=(1,))
    offset = (1 - side) / 2
    boxes = tf.stack([offset, offset, offset + side, offset + side], axis=1)
    cropped = tf.clip_by_value(tf.image.crop_and_resize(scaled, boxes, tf.range(1), (224, 224))[0], 0, 1)
    return tf.image.convert_image_dtype(cropped, tf.uint8, saturate=True).numpy()


@pytest.mark.parametrize("shape", [(224, 224, 3), (256, 320, 3), (480, 640, 3)])
def test_center_crop_is_tensorflows_crop_and_resize_bit_for_bit(shape):
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(crop_center(image), _tensorflow_crop(image))


def test_center_crop_changes_what_openvla_sees_and_refuses_float_images():
    model = openvla_model()
    image = fixture_images()[3]  # 256 x 320
    plain, cropped = model.pixels([image]), model.pixels([image], center_crop=True)
    assert plain.shape == cropped.shape == (1, 224, 224, 6) and not np.allclose(plain, cropped)
    np.testing.assert_allclose(cropped[0], model.image_processor(crop_center(image)))
    with pytest.raises(ValueError, match="uint8"):
        model.pixels([image.astype(np.float32)], center_crop=True)


def test_predict_actions_decodes_the_requested_dims_and_crops_on_request():
    model = openvla_model()
    images, instructions = fixture_images()[:2], fixture_instructions()[:2]
    observation = {"image/base_0_rgb": np.stack(images), "prompt": instructions}
    seven = model.predict_actions(observation, rng=None, options=InferenceOptions())
    fourteen = model.predict_actions(observation, rng=None, options=InferenceOptions(action_dim=14))
    assert seven.shape == (2, 1, 7) and fourteen.shape == (2, 1, 14)
    np.testing.assert_array_equal(fourteen[:, :, :7], seven)  # greedy: the first 7 tokens are the same
    expected = model.predict_action(images, instructions, center_crop=True)
    cropped = model.predict_actions(observation, rng=None, options=InferenceOptions(center_crop=True))
    stats = model.action_stats(None)
    unnormalized = np.where(stats["mask"], 0.5 * (cropped[:, 0] + 1) * (stats["q99"] - stats["q01"]) + stats["q01"], cropped[:, 0])
    np.testing.assert_array_equal(unnormalized, expected)


WINDOWS = json.loads((pathlib.Path(__file__).parent / "fixtures" / "multinet_openvla_window.json").read_text())


@pytest.mark.parametrize("case", sorted(WINDOWS["cases"]))
def test_the_ids_read_as_an_action_are_multinets_window(case):
    """`fixtures/multinet_openvla_window.json`: MultiNet's `_tokens_to_normalized_actions` (it reads the last `dims`
    ids of what `generate` returned: the prompt, then the ids up to the EOS) on 14 dims after OpenVLA's 7 action ids
    and EOS, 7 dims without EOS, 7 dims after an early EOS. The project's window, from the prompt (right-padded in a
    batch) and the decode padded after its EOS as `OpenVLAModel.generate` returns it, reads the same actions."""
    reference, model = WINDOWS["cases"][case], openvla_model()
    prompt, eos, dims = WINDOWS["prompt"], WINDOWS["eos_id"], reference["dims"]
    generated = reference["generated"] + [model.tokenizer.pad_id] * (dims - len(reference["generated"]))
    prompt_ids = np.array([prompt + [model.tokenizer.pad_id] * 3])  # right-padded, as in a batch with longer prompts
    prompt_mask = np.array([[True] * len(prompt) + [False] * 3])
    window = openvla_actions.multinet_window(prompt_ids, prompt_mask, np.array([generated]), dims, eos)
    np.testing.assert_array_equal(model.normalized_actions(window)[0], reference["multinet_normalized"])


def test_decoded_dims_are_the_statistics_dims_and_the_mask_leaves_the_last():
    bimanual = {"q01": [0.0] * 14, "q99": [1.0] * 14}
    assert openvla_actions.decoded_dims(bimanual) == 14  # MultiNet's get_action_dim under simple_mapping
    assert openvla_actions.multinet_mask(bimanual)["mask"] == [True] * 13 + [False]
    given = {**bimanual, "mask": [True] * 14}
    assert openvla_actions.multinet_mask(given) is given


def test_dataset_names_are_multinets():
    assert openvla_actions.dataset_name("openx_bimanual") == openvla_actions.BIMANUAL_DATASET
    assert openvla_actions.dataset_name("openx_jaco_play") == "jaco_play"


ACTION = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]


@pytest.mark.parametrize("dataset, gripper, expected", [
    # (MultiNet's dataset, gripper value, its converted action) per SimpleMapping.decode_action
    ("jaco_play", 0.03, [1.0, 0.1, 0.2, 0.3]),  # discrete_neg: < 0.05 -> -1, negated; GRIPPER_XYZ
    ("jaco_play", 0.5, [-0.0, 0.1, 0.2, 0.3]),
    ("jaco_play", 0.97, [-1.0, 0.1, 0.2, 0.3]),
    ("viola", 0.75, [-0.5, 0.4, 0.5, 0.6, 0.1, 0.2, 0.3]),  # normalize_neg: -(2x - 1); GRIPPER_RPY_XYZ
    ("berkeley_autolab_ur5", 0.99, [-1.0, 0.4, 0.5, 0.6, 0.1, 0.2, 0.3]),
    ("conq_hose_manipulation", 0.6, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0]),  # binary: > 0.5 -> 1
    ("conq_hose_manipulation", 0.5, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.0]),
    ("plex_robosuite", 0.2, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0]),  # normalize_binary_neg: -sign(2x - 1)
    ("berkeley_cable_routing", 0.7, [0.4, 0.5, 0.6, 0.1, 0.2, 0.3]),  # RPY_XYZ, no gripper pattern
    ("utokyo_xarm_pick_and_place_converted_externally_to_rlds", 0.7, [0.1, 0.2, 0.3, 0.6, 0.5, 0.4, 0.7]),
    ("stanford_mask_vit_converted_externally_to_rlds", 0.7, [0.1, 0.2, 0.3, 0.6, 0.7]),
    ("ucsd_pick_and_place_dataset_converted_externally_to_rlds", 0.7, [0.1, 0.2, 0.3, 0.7]),
    ("eth_agent_affordances", 0.7, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
])
def test_simple_mapping_on_multinets_cases(dataset, gripper, expected):
    action = [*ACTION[:6], gripper]
    np.testing.assert_allclose(openvla_actions.convert(action, dataset), expected, rtol=0, atol=1e-12)


def test_gripper_patterns_under_shortened_names_never_ran():
    # MultiNet keys "nyu_rot" / "utokyo_pr2" / "usc_cloth_sim" are never the dataset names it passes: reorder only
    for dataset in ("nyu_rot_dataset_converted_externally_to_rlds", "utokyo_pr2_opening_fridge_converted_externally_to_rlds"):
        assert openvla_actions.convert(ACTION, dataset) == ACTION
    assert openvla_actions.convert(ACTION, "usc_cloth_sim_converted_externally_to_rlds") == [0.1, 0.2, 0.3, 0.7]


def test_a_gripper_value_multinet_refused_is_invalid_and_unknown_datasets_pass_through():
    assert openvla_actions.convert([*ACTION[:6], 1.2], "jaco_play") is None  # MultiNet raised ValueError
    assert openvla_actions.convert([*ACTION[:6], -0.1], "conq_hose_manipulation") is None
    bimanual = list(np.linspace(-1, 1, 14))
    assert openvla_actions.convert(bimanual, openvla_actions.BIMANUAL_DATASET) == bimanual
    assert not openvla_actions.has_conversion(openvla_actions.BIMANUAL_DATASET)
    note = openvla_actions.conversion_note(openvla_actions.BIMANUAL_DATASET, 14)
    assert note["decoded_action_dims"] == 14 and "undefined" in note["conversion"]


def test_bad_openvla_action_settings_are_refused():
    with pytest.raises(ValueError, match="action_dim must be positive"):
        InferenceOptions(action_dim=0)
    with pytest.raises(ValueError, match="jaco_play: MultiNet converts OpenVLA's 7-dim actions, but the statistics have 4"):
        openvla_actions.check_convertible("jaco_play", 4)
    openvla_actions.check_convertible(openvla_actions.BIMANUAL_DATASET, 14)  # no conversion there: any dims


TERMINAL = json.loads((pathlib.Path(__file__).parent / "fixtures" / "multinet_openvla_terminal.json").read_text())


@pytest.mark.parametrize("dataset", sorted(TERMINAL["cases"]))
def test_the_ground_truth_is_multinets_without_its_terminate_dim(dataset):
    """`fixtures/multinet_openvla_terminal.json`: MultiNet's `drop_is_terminal_dim` on each dataset it names (and four
    it passes through), against the evaluator's transform of a record's ground truth and of the split's statistics."""
    rules, domain = openvla_actions.MultiNetActions(), f"openx_{dataset}"
    if dataset == openvla_actions.BIMANUAL_DATASET:
        domain = "openx_bimanual"
    expected = TERMINAL["cases"][dataset]
    np.testing.assert_array_equal(rules.ground_truth(domain, np.asarray(TERMINAL["action"])), expected)
    stats = {key: TERMINAL["action"] for key in ("min", "max", "mean", "std", "q01", "q99")}
    assert domains.transformed_stats(stats, lambda values: rules.ground_truth(domain, values))["q99"] == expected
    dropped = openvla_actions.domain_protocol(domain).ground_truth
    assert dropped == (openvla_actions.TERMINAL_DIM_DROPPED if len(expected) < 8 else domains.GROUND_TRUTH_AS_IS)


def test_a_ground_truth_without_the_terminate_dim_multinet_drops_is_refused():
    with pytest.raises(ValueError, match=r"^berkeley_cable_routing: MultiNet's OpenVLA scoring drops the terminate_episode "
                                         r"dim 3 of its ground truth, which has 3 dims$"):
        openvla_actions.MultiNetActions().ground_truth("openx_berkeley_cable_routing", np.zeros(3))


def test_split_statistics_unnormalize_the_raw_action_and_score_without_its_terminate_dim():
    """OpenVLA decodes as many dims as the raw statistics have (7 on cable routing, converted to 6 by RPY_XYZ); the
    dropped ones (6) score: the unnormalization statistics are the raw split's, masked."""
    raw = {key: list(np.arange(7.0)) for key in ("q01", "q99", "min", "max", "mean", "std")}
    norm_stats = openvla_actions.MultiNetActions().split_statistics("openx_berkeley_cable_routing", raw)
    assert openvla_actions.decoded_dims(norm_stats) == 7 and norm_stats["mask"] == [True] * 6 + [False]
    converted = openvla_actions.convert(list(np.arange(7.0)), "berkeley_cable_routing")
    truth = openvla_actions.MultiNetActions().ground_truth("openx_berkeley_cable_routing", np.arange(7.0))
    assert len(converted) == len(truth) == 6
