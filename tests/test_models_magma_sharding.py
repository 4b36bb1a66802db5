"""Magma on 8 fake CPU devices: restored straight into model-axis shardings (large stacks assembled layer by layer on
the devices) and a batch the data axis does not divide: the fixture's greedy tokens still exact, for both cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from conftest import REPO_ROOT
from magma_helpers import magma_dir, magma_io

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    sys.path.insert(0, "tests")
    from magma_helpers import MULTI_USER, ROBOT_TASK, case_images, magma_dir
    from multinet_jax import sharding, weights
    from multinet_jax.models import magma, magma_inputs
    assert len(jax.devices()) == 8, jax.devices()
    sharding.MIN_SHARDED_SIZE = 0  # shard even the tiny model's matrices over "model"
    weights.trees.RESTORE_GROUP_BYTES = 1024  # every stacked parameter takes the layer-by-layer device path
    model = magma.load(magma_dir(), mesh=sharding.make_mesh("data:2,model:4"))
    kernel = model.params["llm"]["layers"]["mlp"]["gating_einsum"]
    prompts = {"robot": model.prompt(magma_inputs.action_prompt(ROBOT_TASK)),
               "multi": magma_inputs.chat_prompt(MULTI_USER, model.tokenizer.bos_token, image_start_end=False)}
    rows = ["multi", "robot", "multi"]  # 3 rows on a data axis of 2: padded, run, cut back
    generated = model.generate(model.batch([prompts[r] for r in rows], [case_images(r) for r in rows]), max_decoding_steps=8)
    json.dump({"generated": generated.tolist(), "rows": rows,
               "kernel_shards": len({str(s.index) for s in kernel.addressable_shards})}, sys.stdout)
    """
)


def test_eight_fake_devices_give_the_fixtures_tokens():
    magma_dir()  # skips when ../shared is absent
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    completed = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                               timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    assert result["kernel_shards"] == 4
    io = magma_io()
    for row, case in zip(result["generated"], result["rows"]):
        np.testing.assert_array_equal(row, io[f"{case}_generated_ids"])
