"""Mesh construction, parameter sharding rules, and identical outputs on 8 fake CPU devices vs 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from conftest import REPO_ROOT, openpi_io, openpi_observation
from models_helpers import openpi_checkpoint, take
from multinet_jax import sharding


def test_mesh_spec_parsing_and_errors():
    assert sharding.parse_mesh_spec("data:-1,model:2") == {"data": -1, "model": 2}
    sized = "must be a positive integer or -1"
    for bad, message in [("data:4", "needs both"), ("data:-1,model:-1", "at most one"), ("data:x,model:1", sized),
                         ("data:0,model:-1", sized), ("data:-2,model:-4", sized), ("data:+8,model:1", sized),
                         ("data:8_0,model:1", sized), ("batch:2,model:1", "expected")]:
        with pytest.raises(ValueError, match=message):
            sharding.parse_mesh_spec(bad)
    with pytest.raises(ValueError, match=r"^--mesh=data:0,model:-1: axis 'data' size '0' must be"):  # the flag named
        sharding.parse_mesh_spec("data:0,model:-1")
    mesh = sharding.make_mesh()
    assert mesh.axis_names == ("data", "model") and mesh.devices.size == len(jax.devices())
    with pytest.raises(ValueError, match="does not cover"):
        sharding.make_mesh(f"data:1,model:{len(jax.devices()) + 1}")


def test_param_spec_splits_the_largest_divisible_dimension():
    assert sharding.param_spec((18, 16384, 2048), 1) == PartitionSpec()
    assert sharding.param_spec((18, 16384, 2048), 4) == PartitionSpec(None, "model")
    assert sharding.param_spec((257152, 2048), 3) == PartitionSpec()  # neither 257152 nor 2048 divisible by 3
    assert sharding.param_spec((257152, 2048), 8) == PartitionSpec("model")
    assert sharding.param_spec((1024,), 8) == PartitionSpec()  # small: replicated


_EIGHT_DEVICE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    sys.path.insert(0, "tests")
    from conftest import openpi_io, openpi_observation
    from models_helpers import openpi_checkpoint, take
    from multinet_jax import sharding
    from multinet_jax.models import load_model
    import jax
    assert len(jax.devices()) == 8, jax.devices()
    sharding.MIN_SHARDED_SIZE = 0  # shard even the tiny model's matrices over "model"
    rows = [0, 1, 1, 0, 0, 1, 1, 0]
    results = {}
    for name, specs in (("pi0", ("data:8,model:1", "data:2,model:4")), ("pi05", ("data:2,model:4",))):
        observation = take(openpi_observation(name), rows)
        noise = openpi_io(name)["noise"][rows]
        for spec in specs:
            model = load_model(openpi_checkpoint(name), mesh=sharding.make_mesh(spec))
            kernel = model.params["PaliGemma"]["llm"]["layers"]["mlp"]["linear"]
            results[f"{name} {spec}"] = {
                "actions": np.asarray(model.sample_actions(observation, noise=noise, num_steps=3)).tolist(),
                "kernel_shards": len({str(s.index) for s in kernel.addressable_shards}),
            }
        # A batch the data axis does not divide is padded, sampled, and cut back.
        odd = model.sample_actions(take(observation, [0, 1, 2]), noise=noise[:3], num_steps=3)
        results[f"{name} odd batch on data:2,model:4"] = {"actions": np.asarray(odd).tolist()}
    from multinet_jax.models import decoding
    try:  # the token decoders do not pad: a batch the data axis does not divide is refused, saying so
        decoding.sample_tokens(model, take(observation, [0, 1, 2]), max_decoding_steps=2)
    except ValueError as error:
        results["odd batch decoded"] = str(error)
    json.dump(results, sys.stdout)
    """
)


@pytest.mark.parametrize("name", ["pi0", "pi05"])
def test_eight_fake_devices_give_the_same_actions_as_one(name, eight_device_results):
    from multinet_jax.models import load_model

    single = load_model(openpi_checkpoint(name))
    assert len(single.mesh.devices.flatten()) == 1
    noise = openpi_io(name)["noise"]
    expected = np.asarray(single.sample_actions(take(openpi_observation(name), [0, 1]), noise=noise, num_steps=3))
    expected = expected[[0, 1, 1, 0, 0, 1, 1, 0]]
    # Splitting matmuls over "model" changes float summation order; these chaotic fixture models amplify that to
    # ~5e-5 (Pi0) / ~5e-4 (Pi0.5, ~17x more sensitive) of max|action|; a wrong shard layout is off by order 1.
    tolerance = {"pi0": 1e-4, "pi05": 2e-3}[name] * np.abs(expected).max()
    assert eight_device_results["odd batch decoded"].startswith("a batch of 3 rows does not split over the mesh's data "
                                                                "axis (size 2)")
    results = {spec: result for spec, result in eight_device_results.items() if spec.startswith(f"{name} ")}
    assert len(results) == {"pi0": 3, "pi05": 2}[name]
    for spec, result in results.items():
        actions = np.asarray(result["actions"])
        np.testing.assert_allclose(actions, expected[: len(actions)], rtol=0, atol=tolerance, err_msg=spec)
    assert np.asarray(results[f"{name} odd batch on data:2,model:4"]["actions"]).shape == (3, 50, 32)
    assert results[f"{name} data:2,model:4"]["kernel_shards"] == 4
    if name == "pi0":
        assert results["pi0 data:8,model:1"]["kernel_shards"] == 1


@pytest.fixture(scope="module")
def eight_device_results() -> dict:
    """Actions of both fixtures on 8 fake CPU devices (one subprocess: the device count is fixed at start-up)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    openpi_checkpoint("pi05")  # skips when ../shared is absent
    completed = subprocess.run(
        [sys.executable, "-c", _EIGHT_DEVICE_SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout)


def test_initialize_distributed_only_when_asked():
    assert sharding.initialize_distributed(env={}) is False
    assert sharding.initialize_distributed(env={"MULTINET_JAX_DISTRIBUTED": "0"}) is False


def test_host_local_batch_becomes_a_data_sharded_global_array():
    mesh = sharding.make_mesh()
    batch = {"state": np.arange(len(jax.devices()) * 6, dtype=np.float32).reshape(-1, 3)}
    placed = sharding.host_local_batch_to_global(batch, mesh)
    assert placed["state"].sharding == sharding.batch_sharding(mesh)
    np.testing.assert_array_equal(np.asarray(placed["state"]), batch["state"])
