"""SmolVLA on 8 fake CPU devices: restored straight into model-axis shardings (stacks assembled layer by layer on the
devices) and a batch the data axis does not divide: the fixture's action chunks still within 1e-4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from conftest import REPO_ROOT
from smolvla_helpers import smolvla_dir, smolvla_io

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, "tests")
    from smolvla_helpers import preprocessed_observation, smolvla_dir, smolvla_io
    from multinet_jax import sharding, weights
    from multinet_jax.models import smolvla
    assert len(jax.devices()) == 8, jax.devices()
    sharding.MIN_SHARDED_SIZE = 0  # shard even the tiny model's matrices over "model"
    weights.trees.RESTORE_GROUP_BYTES = 1024  # every stacked parameter takes the layer-by-layer device path
    model = smolvla.load(smolvla_dir(), mesh=sharding.make_mesh("data:2,model:4"))
    kernel = model.params["expert"]["layers"]["cross_attn_0"]["mlp"]["gating_einsum"]
    rows = [1, 0, 1]  # 3 rows on a data axis of 2: padded, run, cut back
    observation = {key: value[rows] for key, value in preprocessed_observation().items()}
    actions = model.sample_actions(observation, noise=smolvla_io()["noise"][rows])
    json.dump({"actions": np.asarray(actions).tolist(), "rows": rows,
               "kernel_shards": len({str(s.index) for s in kernel.addressable_shards})}, sys.stdout)
    """
)


def test_eight_fake_devices_give_the_fixtures_actions():
    smolvla_dir()  # skips when ../shared is absent
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    completed = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                               timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    assert result["kernel_shards"] == 4
    np.testing.assert_allclose(result["actions"], smolvla_io()["actions_padded"][result["rows"]], rtol=0, atol=1e-4)
