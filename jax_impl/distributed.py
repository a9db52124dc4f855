"""Data parallel in JAX: a 1-D `Mesh` over devices, the batch sharded along it, parameters and
Adam's state replicated; the step computes each device's gradients under `jax.shard_map` and
adds them with one `psum` (jax_impl.train.loss_and_grads).

    python -m jax_impl.train --devices 2 ...     # 2 local devices (GPUs; on CPU, host devices)

On CPU, `--devices N` asks XLA for N host devices (`jax_num_cpu_devices`, the same as
XLA_FLAGS=--xla_force_host_platform_device_count=N). Several processes (one per machine, or
several on one machine) join through `jax.distributed.initialize`: set in each process

    JAX_COORDINATOR_ADDRESS=HOST:PORT JAX_NUM_PROCESSES=P JAX_PROCESS_ID=i

and every process runs the same command; the mesh then spans P x N devices, process 0 writes.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from common.errors import UserError

AXIS = "data"


def start(devices: int) -> None:
    """Before JAX's backends start: ask for `devices` CPU devices, join the processes (if set)."""
    if devices > 1:
        try:
            jax.config.update("jax_num_cpu_devices", devices)  # CPU only; GPUs are what they are
        except RuntimeError:  # backends already running (an importing program): use what exists
            pass
    if os.environ.get("JAX_COORDINATOR_ADDRESS") and not jax.distributed.is_initialized():
        try:
            count, index = int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"])
        except (KeyError, ValueError):
            raise UserError("JAX_COORDINATOR_ADDRESS is set: also set JAX_NUM_PROCESSES and JAX_PROCESS_ID "
                            "(integers) in every process") from None
        jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], num_processes=count, process_id=index)


def make_mesh(platform: str, per_process: int) -> Mesh:
    """The first `per_process` devices of `platform` in every process, in process order."""
    local = jax.local_devices(backend=platform)
    if per_process > len(local):
        hint = " (CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts)" \
            if platform == "cpu" else ""
        raise UserError(f"--devices {per_process}, but JAX sees {len(local)} {platform} device(s) here{hint}")
    chosen = [device for process in range(jax.process_count())
              for device in [d for d in jax.devices(platform) if d.process_index == process][:per_process]]
    return Mesh(np.array(chosen), (AXIS,))


def shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    """(replicated, split along the batch axis)."""
    return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(AXIS))


def put(array, sharding: NamedSharding) -> jax.Array:
    """A global array from the same host value in every process (each fills its own devices)."""
    array = np.asarray(array)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def to_host(array: jax.Array) -> np.ndarray:
    """A replicated array's value (this process's copy)."""
    return np.array(array.addressable_data(0))


def max_over_processes(value: int) -> int:
    if jax.process_count() == 1:
        return value
    return int(np.max(multihost_utils.process_allgather(np.int32(value))))
