"""Pi0 / Pi0.5 sampling behaviour: camera masking and skipping, per-sample noise, batch-size invariance, noise shape
errors, Gemma KV cache. The sampling tests run on both openpi fixtures (`pi0`, `pi05`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import openpi_io, openpi_observation
from models_helpers import openpi_checkpoint, random_like, relative_error, take
from multinet_jax.models import configs, load_model
from multinet_jax.models.observation import resize_with_pad, to_model_range
from multinet_jax.models.gemma import Gemma
from multinet_jax.models.masks import make_attn_mask

# Same computation in a different batch layout: only float summation order may differ, which this chaotic
# fixture model (every weight perturbed by 0.3 N(0, 1)) amplifies to ~3e-5 of max|action| (once just over 1e-4);
# a real error (wrong row, mask or noise) is of order 1.
LAYOUT_TOLERANCE = 1e-3


@pytest.fixture(scope="module", params=["pi0", "pi05"])
def fixture(request):
    """(fixture name, its float32 model)."""
    return request.param, load_model(openpi_checkpoint(request.param))


@pytest.fixture
def model(fixture):
    return fixture[1]


@pytest.fixture
def observation(fixture):
    return openpi_observation(fixture[0])


@pytest.fixture
def io(fixture):
    return openpi_io(fixture[0])


def test_masked_camera_pixels_do_not_change_outputs(model, observation, io):
    noise = io["noise"]
    observation["image_mask/left_wrist_0_rgb"] = np.array([False, True])
    masked = np.asarray(model.sample_actions(observation, noise=noise))
    observation["image/left_wrist_0_rgb"][0] = np.random.default_rng(0).uniform(-1, 1, (224, 224, 3))
    repainted = np.asarray(model.sample_actions(observation, noise=noise))
    np.testing.assert_array_equal(repainted, masked)  # masked keys get exactly zero attention weight
    # The mask itself matters: sample 0 differs from the unmasked fixture output, sample 1 does not.
    unmasked = io["actions_10step_f32"]
    assert relative_error(masked[0], unmasked[0]) > 1e-2
    assert relative_error(masked[1], unmasked[1]) < 5e-3


def test_camera_masked_for_the_whole_batch_is_skipped_exactly(model, observation, io):
    noise = io["noise"]
    observation["image_mask/right_wrist_0_rgb"] = np.array([False, False])
    skipped = np.asarray(model.sample_actions(observation, noise=noise))
    encoded = np.asarray(model.sample_actions(observation, noise=noise, skip_absent_cameras=False))
    assert len(model.prepare_inputs(observation)["images"]) == 2
    np.testing.assert_allclose(skipped, encoded, rtol=0, atol=LAYOUT_TOLERANCE * np.abs(encoded).max())


def test_same_sample_same_actions_at_batch_1_and_inside_batch_4(model, observation):
    rng = jax.random.key(42)
    batch4 = take(observation, [0, 1, 1, 0])
    batch4["sample_index"] = np.array([10, 11, 12, 13], np.int32)
    actions4 = np.asarray(model.sample_actions(batch4, rng=rng))
    single = take(observation, [1])
    single["sample_index"] = np.array([12], np.int32)
    actions1 = np.asarray(model.sample_actions(single, rng=rng))
    np.testing.assert_allclose(actions1[0], actions4[2], rtol=0, atol=LAYOUT_TOLERANCE * np.abs(actions4).max())
    # Rows 1 and 2 hold the same observation but different sample indices, hence different noise and actions.
    assert relative_error(actions4[1], actions4[2]) > 1e-2


def test_noise_comes_from_rng_folded_with_sample_index(model, observation):
    observation["sample_index"] = np.array([5, 9], np.int32)
    rng = jax.random.key(3)
    expected_noise = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(rng, i), (50, 32))) for i in (5, 9)])
    np.testing.assert_array_equal(np.asarray(model.make_noise(observation, rng)), expected_noise)
    from_rng = np.asarray(model.sample_actions(observation, rng=rng))
    from_noise = np.asarray(model.sample_actions(observation, noise=expected_noise))
    np.testing.assert_allclose(from_rng, from_noise, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 10, 32), r"noise has shape \(2, 10, 32\) but the model samples \(2, 50, 32\).*action_horizon=10"),
        ((2, 50, 7), r"noise has shape \(2, 50, 7\) but the model samples \(2, 50, 32\).*action_dim is 32"),
        ((3, 50, 32), r"noise has shape \(3, 50, 32\), expected \(2, 50, 32\)"),
    ],
)
def test_noise_of_the_wrong_shape_names_both_shapes(model, observation, shape, message):
    with pytest.raises(ValueError, match=message):
        model.sample_actions(observation, noise=np.zeros(shape, np.float32))


def test_nan_noise_is_refused(model, observation):
    """NaN noise would come back as NaN actions, scored invalid, with nothing failing."""
    noise = np.zeros((2, model.config.action_horizon, model.config.action_dim), np.float32)
    noise[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"^noise holds NaN or infinite values$"):
        model.sample_actions(observation, noise=noise)


def test_native_size_uint8_images_are_resized_inside_the_model_as_openpi_does(model, observation, io):
    """A 256x320 uint8 camera gives the actions of its openpi-preprocessed 224x224 float image (179x224 + black bars)."""
    native = np.random.default_rng(0).integers(0, 256, (2, 256, 320, 3), dtype=np.uint8)
    resized = np.asarray(resize_with_pad(jnp.asarray(to_model_range(native)), 224, 224))
    assert np.all(resized[:, :22] == -1.0) and np.all(resized[:, 201:] == -1.0) and np.all(resized[:, 22:201] > -1.0 - 1e-6)
    from_native = np.asarray(model.sample_actions({**observation, "image/base_0_rgb": native}, noise=io["noise"], num_steps=3))
    from_resized = np.asarray(model.sample_actions({**observation, "image/base_0_rgb": resized}, noise=io["noise"], num_steps=3))
    np.testing.assert_allclose(from_native, from_resized, rtol=0, atol=1e-5 * np.abs(from_resized).max())


def test_a_batch_mixing_image_sizes_gives_each_rows_own_actions(model, observation, io):
    """Per-row images of different sizes (the pipeline's list for, e.g., Overcooked's layouts) are resized row by row at
    the boundary exactly as the model resizes a batch of one size: each row's actions are those it gets alone."""
    rng = np.random.default_rng(1)
    rows = [rng.integers(0, 256, (256, 320, 3), dtype=np.uint8), rng.integers(0, 256, (150, 100, 3), dtype=np.uint8)]
    mixed = np.asarray(model.sample_actions({**observation, "image/base_0_rgb": rows}, noise=io["noise"], num_steps=3))
    for index, row in enumerate(rows):
        alone = {key: value[index : index + 1] for key, value in observation.items()} | {"image/base_0_rgb": row[None]}
        own = np.asarray(model.sample_actions(alone, noise=io["noise"][index : index + 1], num_steps=3))
        np.testing.assert_allclose(mixed[index], own[0], rtol=0, atol=LAYOUT_TOLERANCE * np.abs(own).max())


def test_observation_errors_name_the_key(model, observation):
    two_channels = {**observation, "image/base_0_rgb": observation["image/base_0_rgb"][..., :2]}
    with pytest.raises(ValueError, match=r"image/base_0_rgb.*\(2, 224, 224, 2\), expected \(2, height, width, 3\)"):
        model.sample_actions(two_channels)
    del observation["state"]
    with pytest.raises(ValueError, match=r"observation\['state'\]: missing"):
        model.sample_actions(observation)


def test_gemma_kv_cache_modes_agree_with_one_causal_pass():
    """Prefill + concat, and a preallocated cache written token by token, both equal one full causal pass."""
    config = configs.GEMMA_TINY
    gemma = Gemma((config,), vocab_size=64)
    params = random_like(jax.eval_shape(lambda: gemma.init(jax.random.key(0), method=Gemma.init_all)))
    run = jax.jit(lambda x, pos, mask, cache, index: gemma.apply(
        params, [x], pos, mask, kv_cache=cache, cache_write_index=index))
    batch, length, prefill = 2, 7, 4
    tokens = jax.random.randint(jax.random.key(1), (batch, length), 0, 64)
    embedded = gemma.apply(params, tokens, method=Gemma.embed)
    positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
    causal = make_attn_mask(jnp.ones((batch, length), bool), jnp.ones(length, bool))
    (full,), (keys, _) = run(embedded, positions, causal, None, None)
    assert keys.shape == (config.depth, batch, length, config.num_kv_heads, config.head_dim)

    # Mode 2: prefix cache, then the rest attends over concat(cache, new).
    head = slice(None, prefill)
    tail = slice(prefill, None)
    _, cache = run(embedded[:, head], positions[:, head], causal[:, head, head], None, None)
    (rest,), (concat_keys, _) = run(embedded[:, tail], positions[:, tail], causal[:, tail], cache, None)
    np.testing.assert_allclose(rest, full[:, tail], atol=1e-5)
    np.testing.assert_allclose(concat_keys, keys, atol=1e-5)

    # Mode 3: preallocated cache, prefill written at slot 0, then one token per step at a traced index.
    empty = jnp.zeros_like(keys)
    (first,), cache = run(embedded[:, head], positions[:, head], causal[:, head], (empty, empty), jnp.int32(0))
    outputs = [first]
    for index in range(prefill, length):
        step = slice(index, index + 1)
        (out,), cache = run(embedded[:, step], positions[:, step], causal[:, step], cache, jnp.int32(index))
        outputs.append(out)
    np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), full, atol=1e-5)
    np.testing.assert_allclose(cache[0], keys, atol=1e-5)


def test_gemma_logits_use_the_tied_embedding_in_float32():
    config = configs.GEMMA_TINY
    gemma = Gemma((config,), vocab_size=64, dtype="bfloat16")
    params = random_like(jax.eval_shape(lambda: gemma.init(jax.random.key(0), method=Gemma.init_all)))
    x = jax.random.normal(jax.random.key(1), (1, 3, config.width)).astype(jnp.bfloat16)
    logits = gemma.apply(params, x, method=Gemma.logits)
    table = np.asarray(params["params"]["embedder"]["input_embedding"], np.float32)
    expected = np.asarray(x, np.float32) @ np.asarray(table.astype(jnp.bfloat16), np.float32).T
    assert logits.dtype == jnp.float32 and logits.shape == (1, 3, 64)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-4)


def test_camera_order_in_the_dict_does_not_matter_and_openpis_cameras_are_required(model, observation, io):
    """openpi's jitted model sees its cameras in `IMAGE_KEYS` order (sorted, as jax flattens a dict) whatever order
    the dict was built in, and its `preprocess_observation` refuses a missing camera."""
    expected = np.asarray(model.sample_actions(observation, noise=io["noise"], num_steps=3))
    reversed_keys = dict(reversed(list(observation.items())))
    assert [key for key in reversed_keys if key.startswith("image/")][0] == "image/right_wrist_0_rgb"
    np.testing.assert_array_equal(np.asarray(model.sample_actions(reversed_keys, noise=io["noise"], num_steps=3)), expected)
    missing = {key: value for key, value in observation.items() if not key.endswith("right_wrist_0_rgb")}
    with pytest.raises(ValueError, match=r"observation\['image/right_wrist_0_rgb'\]: missing: the model takes exactly"):
        model.sample_actions(missing)
    extra = {**observation, "image/top_0_rgb": observation["image/base_0_rgb"]}
    with pytest.raises(ValueError, match=r"observation\['image/top_0_rgb'\]: not one of the model's cameras"):
        model.sample_actions(extra)
