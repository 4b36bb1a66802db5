"""OpenVLA on 8 fake CPU devices: restored straight into model-axis shardings (large stacks assembled layer by layer
on the devices) and a batch the data axis does not divide: the fixture's greedy tokens and actions still exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from conftest import REPO_ROOT
from openvla_helpers import openvla_dir, openvla_io

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, "tests")
    from openvla_helpers import fixture_images, fixture_instructions, openvla_dir
    from multinet_jax import sharding, weights
    from multinet_jax.models import load_model
    assert len(jax.devices()) == 8, jax.devices()
    sharding.MIN_SHARDED_SIZE = 0  # shard even the tiny model's matrices over "model"
    weights.trees.RESTORE_GROUP_BYTES = 1024  # every stacked parameter takes the layer-by-layer device path
    model = load_model(openvla_dir(), mesh=sharding.make_mesh("data:2,model:4"))
    kernel = model.params["llm"]["layers"]["mlp"]["gating_einsum"]
    rows = [3, 0, 2]  # 3 rows on a data axis of 2: padded, run, cut back
    actions = model.predict_action([fixture_images()[r] for r in rows], [fixture_instructions()[r] for r in rows])
    json.dump({"actions": actions.tolist(), "rows": rows,
               "kernel_shards": len({str(s.index) for s in kernel.addressable_shards})}, sys.stdout)
    """
)


def test_eight_fake_devices_give_the_fixtures_actions():
    openvla_dir()  # skips when ../shared is absent
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    completed = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                               timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    assert result["kernel_shards"] == 4
    np.testing.assert_array_equal(result["actions"], openvla_io()["actions_f64"][result["rows"]])
