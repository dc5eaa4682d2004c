"""Several processes (hosts) running one program: start-up, each host's share of a list, barriers,
and what a host is."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import TypeVar

import cpuinfo
import jax

T = TypeVar("T")


def initialize_distributed() -> None:
    """Starts jax.distributed when the environment describes several processes; else does nothing.

    SLURM/Kubernetes jobs are recognised by their variables; a Cloud TPU VM sets none, so
    launch/tpu.sh sets RSTAR_JAX_DISTRIBUTED=1 and JAX then finds the slice from the VM metadata.
    An explicit coordinator can be given with JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
    JAX_PROCESS_ID. Must run before anything touches the devices; calling it again is harmless.
    """
    explicit = "JAX_COORDINATOR_ADDRESS" in os.environ
    cluster = any(k in os.environ for k in (
        "RSTAR_JAX_DISTRIBUTED", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))
    if jax.distributed.is_initialized() or not (explicit or cluster):
        return
    if explicit:
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    else:
        jax.distributed.initialize()


def shard(items: Sequence[T], index: int | None = None, count: int | None = None) -> list[T]:
    """This process's slice: every `count`-th item from `index` (balanced over levels and sizes).

    `index` and `count` default to this process's place among all of them."""
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    return list(items[index::count])


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier called `name`; nothing with one process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"rstar_jax: {name}")


@functools.cache
def machine() -> str:
    """This host as reports name it: CPU and cores, JAX devices, jax's version (e.g. "AMD EPYC,
    2 cores; 2 x cpu; jax 0.10.2"). The same config and seed train to other figures on another CPU
    or accelerator, so a figure needs it. Touches the devices: call it after `initialize_distributed`."""
    cpu = cpuinfo.get_cpu_info()
    devices = jax.devices()
    processes = f" over {jax.process_count()} processes" if jax.process_count() > 1 else ""
    return (f"{cpu.get('brand_raw') or cpu.get('arch_string_raw', 'unknown CPU')}, {cpu.get('count', '?')} cores; "
            f"{len(devices)} x {devices[0].device_kind}{processes}; jax {jax.__version__}")
