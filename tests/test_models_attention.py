"""The attention fast path (`models/attention.py`) on CPU: everything but cuDNN's kernel, with XLA's in its place.

`jax.nn.dot_product_attention(implementation="xla")` runs the fast path's own layout, mask and GQA handling; it must
equal the reference `gemma.grouped_attention` to float32 rounding (bf16 noise in bfloat16), keep a fully masked
row's uniform attention, and whole models must give the golden tests' answers through it.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoding_helpers import fast_model, fast_observation, pi0_model
from models_helpers import pi0_io, pi0_observation, relative_error
from multinet_jax.models import attention
from multinet_jax.models.attention import Device, choose
from multinet_jax.models.gemma import grouped_attention

HOPPER = Device("gpu", cuda=True, compute_capability=(9, 0))
AMPERE = Device("gpu", cuda=True, compute_capability=(8, 0))
BF16_NOISE = 2.0**-6  # a few bfloat16 roundings (8 significant bits) of outputs scaled to 1
GOLDEN_TOLERANCE = 5e-3  # test_models_pi0_parity's float32 tolerance

# (batch, query tokens, keys, heads, kv heads, head dim): Gemma's GQA prefix, SigLIP's MHA, the KV-cache decode step.
SHAPES = {"gqa_prefix": (2, 5, 7, 4, 2, 16), "mha": (2, 6, 6, 3, 3, 16), "decode_step": (3, 1, 9, 4, 1, 16)}


def _inputs(shape: tuple[int, ...], dtype, masked: bool):
    b, t, s, heads, kv_heads, head_dim = shape
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((b, t, heads, head_dim)) * head_dim**-0.5, dtype)
    k, v = (jnp.asarray(rng.standard_normal((b, s, kv_heads, head_dim)), dtype) for _ in range(2))
    if not masked:
        return q, k, v, None
    mask = rng.random((b, t, s)) > 0.4
    mask[0, 0] = False  # a row with no valid key: openpi's prefill attends uniformly over every slot
    mask[..., 0] |= np.arange(b)[:, None] > 0  # every other row keeps a key
    return q, k, v, jnp.asarray(mask)


def _attend(mode: str, q, k, v, mask):
    with attention.mode(mode):
        return np.asarray(jax.jit(grouped_attention)(q, k, v, mask), np.float32)


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("name", SHAPES)
def test_fast_path_layout_equals_reference_in_float32(name, masked):
    q, k, v, mask = _inputs(SHAPES[name], jnp.float32, masked)
    with attention.recording() as calls:
        reference, fast = _attend("reference", q, k, v, mask), _attend("xla", q, k, v, mask)
    assert [call["implementation"] for call in calls] == ["reference", "xla"]  # one jitted function, traced per mode
    assert fast.shape == q.shape
    np.testing.assert_allclose(fast, reference, rtol=0, atol=1e-6 * np.abs(reference).max())
    if masked:  # the row without keys: the mean of every value of its KV head, on both paths
        group = q.shape[2] // k.shape[2]
        uniform = np.repeat(np.asarray(v[0]).mean(axis=0), group, axis=0)
        for output in (reference, fast):
            np.testing.assert_allclose(output[0, 0], uniform, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", SHAPES)
def test_fast_path_in_bfloat16_is_within_bfloat16_noise(name):
    q, k, v, mask = _inputs(SHAPES[name], jnp.bfloat16, masked=True)
    reference, fast = _attend("reference", q, k, v, mask), _attend("xla", q, k, v, mask)
    exact = _attend("reference", *(x.astype(jnp.float32) for x in (q, k, v)), mask)
    assert np.abs(fast - reference).max() <= BF16_NOISE * np.abs(exact).max()
    assert np.abs(fast - exact).max() <= BF16_NOISE * np.abs(exact).max()


def _spec(shape, dtype=jnp.bfloat16):
    return jax.ShapeDtypeStruct(shape, dtype)


@pytest.mark.parametrize("q_shape, kv_shape, dtype, device, expected", [
    ((1, 816, 8, 256), (1, 816, 1, 256), jnp.bfloat16, HOPPER, "cudnn"),  # Gemma 2B prefix, GQA 8:1, head dim 256
    ((1, 1, 8, 256), (1, 880, 1, 256), jnp.bfloat16, HOPPER, "cudnn"),  # its KV-cache decode step
    ((3, 256, 16, 72), (3, 256, 16, 72), jnp.float16, AMPERE, "cudnn"),  # SigLIP So400m
    ((1, 816, 8, 256), (1, 816, 1, 256), jnp.bfloat16, AMPERE, "reference"),  # head dim 256 needs Hopper
    ((1, 816, 8, 256), (1, 816, 1, 256), jnp.float32, HOPPER, "reference"),  # cuDNN has no float32 kernel
    ((1, 5, 4, 20), (1, 5, 4, 20), jnp.bfloat16, HOPPER, "reference"),  # head dim not a multiple of 8
    ((1, 5, 4, 16), (1, 5, 4, 16), jnp.bfloat16, Device("gpu", cuda=False), "reference"),  # ROCm
    ((1, 5, 4, 16), (1, 5, 4, 16), jnp.bfloat16, Device("cpu"), "reference"),
    ((1, 5, 4, 16), (1, 5, 4, 16), jnp.bfloat16, Device("tpu"), "reference"),
])
def test_auto_picks_cudnn_only_for_gpu_calls_it_supports(q_shape, kv_shape, dtype, device, expected):
    choice = choose(_spec(q_shape, dtype), _spec(kv_shape, dtype), _spec(kv_shape, dtype), "auto", device)
    assert choice.implementation == expected, choice
    if expected == "reference" and device.platform == "gpu":
        assert "cuDNN cannot" in choice.reason


def test_modes_override_the_backend_and_mixed_dtypes_stay_on_the_reference():
    q, kv = _spec((1, 5, 4, 16)), _spec((1, 5, 4, 16))
    assert choose(q, kv, kv, "reference", HOPPER).implementation == "reference"
    assert choose(q, kv, kv, "xla", Device("cpu")).implementation == "xla"
    mixed = choose(q, _spec((1, 5, 4, 16), jnp.float32), kv, "auto", HOPPER)
    assert mixed.implementation == "reference" and "bfloat16/float32/bfloat16" in mixed.reason
    with pytest.raises(ValueError, match="attention mode must be one of auto, reference, xla, got 'cudnn'"):
        with attention.mode("cudnn"):
            pass


def test_auto_takes_the_per_shape_table_where_cudnn_can_take_the_call():
    """`choices`: the suite's measured per-shape choice, data passed to the trace; other shapes, and calls cuDNN
    cannot take, stay as `auto` chooses them."""
    q, kv, long_kv = _spec((1, 1, 8, 256)), _spec((1, 9, 1, 256)), _spec((1, 64, 1, 256))
    table = {attention.shape_key(q.shape, kv.shape, q.dtype): "reference"}
    assert choose(q, kv, kv, "auto", HOPPER, table).implementation == "reference"
    assert choose(q, long_kv, long_kv, "auto", HOPPER, table).implementation == "cudnn"
    assert choose(q, kv, kv, "auto", Device("cpu"), {attention.shape_key(q.shape, kv.shape, q.dtype): "cudnn"}
                  ).implementation == "reference"
    assert choose(q, kv, kv, "xla", HOPPER, table).implementation == "xla"  # a forced mode is not auto's choice
    with pytest.raises(ValueError, match="attention choices must be among cudnn, reference, got xla"):
        with attention.choices({attention.shape_key(q.shape, kv.shape, q.dtype): "xla"}):
            pass


def test_a_gpu_traces_the_cudnn_call_and_logs_each_refusal_once(monkeypatch, caplog, fresh_traces):
    """A mocked Hopper GPU: the wrapper asks jax for cuDNN (here answered by XLA's kernel); float32 stays ours."""
    monkeypatch.setattr(attention, "current_device", lambda: HOPPER)
    monkeypatch.setattr(attention, "_logged", set())
    real, asked = jax.nn.dot_product_attention, []

    def xla_in_place_of_cudnn(*args, implementation, **kwargs):
        asked.append(implementation)
        return real(*args, implementation="xla", **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", xla_in_place_of_cudnn)
    q, k, v, mask = _inputs(SHAPES["gqa_prefix"], jnp.bfloat16, masked=True)
    reference = _attend("reference", q, k, v, mask)
    assert np.abs(_attend("auto", q, k, v, mask) - reference).max() <= BF16_NOISE * np.abs(reference).max()
    assert asked == ["cudnn"]
    with caplog.at_level(logging.WARNING, logger=attention.__name__), attention.recording() as calls:
        q32, k32, v32 = (x.astype(jnp.float32) for x in (q, k, v))
        for _ in range(2):
            _attend("auto", q32, k32, v32, mask)
            _attend("auto", q32[:, :3], k32, v32, mask[:, :3])
    assert asked == ["cudnn"]
    assert {call["implementation"] for call in calls} == {"reference"} and len(attention.distinct(calls)) == 2
    assert all("cuDNN cannot: dtypes float32" in call["reason"] for call in calls)
    refusals = [record for record in caplog.records if "cuDNN cannot" in record.getMessage()]
    assert len(refusals) == 1  # once per reason
    assert attention.manifest_entry() == {"mode": "auto", "fast_path": "cudnn"}


def test_whole_pi0_through_the_fast_path_meets_the_golden_tolerance():
    model, io = pi0_model(), pi0_io()
    with attention.mode("reference"):
        reference = model.sample_actions(pi0_observation(), noise=io["noise"], num_steps=3)
    with attention.mode("xla"), attention.recording() as calls:
        fast = model.sample_actions(pi0_observation(), noise=io["noise"], num_steps=3)
    assert {call["implementation"] for call in calls} == {"xla"} and len(attention.distinct(calls)) >= 3
    assert relative_error(fast, reference) <= GOLDEN_TOLERANCE / 100
    assert relative_error(fast, io["actions_3step_f32"]) <= GOLDEN_TOLERANCE


def test_pi0_fast_decode_through_the_fast_path_emits_the_same_tokens():
    """The fixture's rows with a masked camera make prefill rows without keys (openpi_exact's uniform attention)."""
    model, observation = fast_model(), fast_observation()
    with attention.mode("reference"):
        reference = np.asarray(model.sample_tokens(observation, max_decoding_steps=24))
    with attention.mode("xla"), attention.recording() as calls:
        fast = np.asarray(model.sample_tokens(observation, max_decoding_steps=24))
    assert any(call["q"][1] == 1 for call in calls)  # the KV-cache decode step went through it
    np.testing.assert_array_equal(fast, reference)

