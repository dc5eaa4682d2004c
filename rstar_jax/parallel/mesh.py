"""Device mesh ('data', 'fsdp', 'tensor') from a MeshConfig."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
from jax.experimental import mesh_utils

from rstar_jax.config import MeshConfig

AXES = ("data", "fsdp", "tensor")


def resolve_shape(sizes: Sequence[int], total: int, what: str) -> tuple[int, ...]:
    """Replaces one -1 in `sizes` by what is left of `total`; checks the product equals `total`."""
    sizes = list(sizes)
    if sizes.count(-1) > 1:
        raise ValueError(f"MeshConfig: at most one {what} size may be -1, got {sizes}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if known <= 0 or total % known:
            raise ValueError(f"MeshConfig: {what} sizes {sizes} do not divide {total} devices")
        sizes[sizes.index(-1)] = total // known
    if math.prod(sizes) != total:
        raise ValueError(f"MeshConfig: {what} sizes {sizes} need {math.prod(sizes)} devices, have {total}")
    return tuple(sizes)


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """Builds the ('data', 'fsdp', 'tensor') mesh over `devices` (default: all devices).

    With DCN sizes > 1 (several slices), the mesh is the product of a per-slice (ICI) mesh and a
    cross-slice (DCN) mesh, so collectives on the ICI axes stay within a slice.
    """
    devices = list(devices if devices is not None else jax.devices())
    dcn = (config.dcn_data, config.dcn_fsdp, config.dcn_tensor)
    num_slices = math.prod(dcn)
    if len(devices) % num_slices:
        raise ValueError(f"MeshConfig: {len(devices)} devices do not split into {num_slices} DCN slices")
    ici = resolve_shape((config.data, config.fsdp, config.tensor), len(devices) // num_slices, "ICI")
    axis_types = (jax.sharding.AxisType.Auto,) * len(AXES)
    if num_slices == 1:
        return jax.make_mesh(ici, AXES, axis_types, devices=devices)
    # TPU slices carry `slice_index`; elsewhere (GPU hosts) each process is one DCN granule.
    granule_is_process = not hasattr(devices[0], "slice_index")
    grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices, process_is_granule=granule_is_process)
    return jax.sharding.Mesh(grid, AXES, axis_types=axis_types)
