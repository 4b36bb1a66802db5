"""Every sharding rule of multinet_jax: the device mesh, batch and parameter shardings, multi-host helpers.

One mesh with axes ("data", "model"). Batches are split over "data". Parameters are replicated when the "model"
axis has size 1; otherwise each large matrix is split FSDP-style over "model" along its largest dimension that
the axis size divides (XLA inserts the all-gathers), so a model too big for one device still fits.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXES = ("data", "model")
# Arrays smaller than this stay replicated: splitting them saves nothing and costs a collective.
MIN_SHARDED_SIZE = 2**20


def parse_mesh_spec(spec: str) -> dict[str, int]:
    """`"data:-1,model:2"` (`--mesh`) -> {"data": -1, "model": 2}; -1 (at most one) takes the remaining devices."""
    sizes: dict[str, int] = {}
    for part in spec.split(","):
        name, sep, size = part.strip().partition(":")
        if not sep or name not in AXES or name in sizes:
            raise ValueError(f"--mesh={spec}: expected 'data:N,model:M' with axes {AXES}, got part {part!r}")
        if not (size.strip().isdigit() and int(size) >= 1) and size.strip() != "-1":
            raise ValueError(f"--mesh={spec}: axis {name!r} size {size!r} must be a positive integer or -1 "
                             "(the remaining devices)")
        sizes[name] = int(size)
    if set(sizes) != set(AXES):
        raise ValueError(f"--mesh={spec}: needs both axes {AXES}")
    if list(sizes.values()).count(-1) > 1:
        raise ValueError(f"--mesh={spec}: at most one axis may be -1")
    return sizes


def make_mesh(spec: str = "data:-1,model:1", devices: list[jax.Device] | None = None) -> Mesh:
    """A ("data", "model") mesh over `devices` (default: all devices of all hosts)."""
    devices = jax.devices() if devices is None else devices
    sizes = parse_mesh_spec(spec)
    fixed = math.prod(size for size in sizes.values() if size != -1)
    sizes = {name: len(devices) // fixed if size == -1 else size for name, size in sizes.items()}
    if math.prod(sizes.values()) != len(devices):
        raise ValueError(f"--mesh={spec} gives {sizes}, which does not cover the {len(devices)} devices")
    grid = np.asarray(devices).reshape(sizes["data"], sizes["model"])
    return Mesh(grid, AXES)


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """`--batch_size` splits evenly over the mesh's data axis, which every batch-sharded model input needs."""
    if batch_size % mesh.shape["data"]:
        raise ValueError(f"--batch_size={batch_size} must be a multiple of the mesh's data axis (size "
                         f"{mesh.shape['data']} of this host's {mesh.devices.size} devices)")


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over "data"; the rest replicated."""
    return NamedSharding(mesh, PartitionSpec("data"))


def place_batch(array: Any, dtype: Any, *, mesh: Mesh) -> jax.Array:
    """Batch-shard an array over "data", padding the batch (repeating row 0) to a multiple of the axis size."""
    array = np.asarray(array, dtype)
    shortfall = -array.shape[0] % mesh.shape["data"]
    if shortfall:
        array = np.concatenate([array, np.repeat(array[:1], shortfall, axis=0)])
    return jax.device_put(array, batch_sharding(mesh))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def param_spec(shape: tuple[int, ...], model_size: int) -> PartitionSpec:
    """FSDP rule for one parameter: split its largest dimension divisible by the model-axis size."""
    if model_size == 1 or math.prod(shape) < MIN_SHARDED_SIZE:
        return PartitionSpec()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % model_size == 0:
            return PartitionSpec(*([None] * axis), "model")
    return PartitionSpec()


def param_shardings(params: Any, mesh: Mesh) -> Any:
    """A NamedSharding per parameter (arrays or ShapeDtypeStructs), following `param_spec`."""
    model_size = mesh.shape["model"]
    return jax.tree.map(lambda p: NamedSharding(mesh, param_spec(tuple(p.shape), model_size)), params)


def initialize_distributed(env: Mapping[str, str] | None = None) -> bool:
    """Start multi-host JAX when the environment asks for it; returns whether it did.

    Set `MULTINET_JAX_DISTRIBUTED=1` (on Cloud TPU / SLURM / Kubernetes JAX auto-detects the cluster) or give
    `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID` explicitly. Must run before any JAX op.
    """
    env = os.environ if env is None else env
    if "JAX_COORDINATOR_ADDRESS" in env:
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
        return True
    if env.get("MULTINET_JAX_DISTRIBUTED", "") == "1":
        jax.distributed.initialize()
        return True
    return False


def host_local_batch_to_global(batch: Any, mesh: Mesh) -> Any:
    """This host's slice of a batch (leading axis) -> global arrays sharded over "data" across all hosts."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
    )
