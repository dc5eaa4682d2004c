"""Logical names -> NamedShardings for parameters, optimizer state, batches and activations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import linen, nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rstar_jax.parallel.rules import Rules

LogicalAxes = Sequence[str | None]


def logical_to_spec(axes: LogicalAxes, rules: Rules, mesh: Mesh | jax.sharding.AbstractMesh,
                    shape: Sequence[int] | None = None) -> PartitionSpec:
    """PartitionSpec for an array whose dimensions carry logical names `axes`.

    Mesh axes that are absent from `mesh` or do not divide the dimension (e.g. 2 kv heads over a
    tensor axis of 4) are dropped, so that dimension is replicated instead of failing.
    """
    spec = linen.logical_to_mesh_axes(tuple(axes), rules)
    out = []
    for dim, entry in enumerate(spec):
        names = (entry,) if isinstance(entry, str) else tuple(entry or ())
        names = tuple(n for n in names if n in mesh.shape and mesh.shape[n] > 1)
        if shape is not None:  # keep axes while their product still divides the dimension
            kept, size = [], 1
            for n in names:
                if shape[dim] % (size * mesh.shape[n]) == 0:
                    kept.append(n)
                    size *= mesh.shape[n]
            names = tuple(kept)
        out.append(None if not names else names[0] if len(names) == 1 else names)
    return PartitionSpec(*out)


def logical_sharding(axes: LogicalAxes, rules: Rules, mesh: Mesh, shape: Sequence[int] | None = None) -> NamedSharding:
    """NamedSharding for an array whose dimensions carry logical names `axes`."""
    return NamedSharding(mesh, logical_to_spec(axes, rules, mesh, shape))


def state_shardings(state: nnx.State, mesh: Mesh, rules: Rules) -> nnx.State:
    """NamedShardings for an nnx State, from each Variable's logical `out_sharding` metadata.

    Variables without names (norm scales, biases, RNG state) are replicated.
    """

    def one(variable: nnx.Variable) -> nnx.Variable:
        axes = variable.get_metadata().get("out_sharding") or ()
        shape = np.shape(variable.get_value())
        axes = tuple(axes) if axes else (None,) * len(shape)
        return variable.replace(logical_sharding(axes, rules, mesh, shape))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def put(tree: Any, shardings: Any) -> Any:
    """`jax.device_put`, also onto shardings that span other processes' devices (a multi-host
    mesh): a value this process holds whole, the same on every process (a fresh value head, an
    RNG key, a step count), is cut into this process's shards."""

    def one(x: Any, s: NamedSharding) -> Any:
        if s.is_fully_addressable or (isinstance(x, jax.Array) and not x.is_fully_addressable):
            return jax.device_put(x, s)
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(x), s), impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, s, lambda index: host[index])

    return jax.tree.map(one, tree, shardings)


def split_placed(module: nnx.Module, mesh: Mesh | None, rules: Rules) -> tuple[nnx.GraphDef, nnx.State]:
    """`nnx.split`, with the state placed on `mesh` by `rules` (left where it is without a mesh)."""
    graphdef, state = nnx.split(module)
    if mesh is not None:
        state = jax.device_put(state, state_shardings(state, mesh, rules))
    return graphdef, state


def like_params(tree: Any, params: nnx.State, param_shardings: nnx.State, mesh: Mesh) -> Any:
    """Shardings for a tree whose sub-trees mirror the params (optax state: mu, nu, ...).

    A leaf whose key path ends with a parameter's path (and has its shape) gets that parameter's
    sharding; the rest (step counts, scalars) is replicated.
    """
    by_path = {
        tuple(path): (np.shape(leaf), sharding)
        for (path, leaf), sharding in zip(
            jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(param_shardings), strict=True
        )
    }
    replicated = NamedSharding(mesh, PartitionSpec())

    def one(path: tuple, leaf: Any) -> NamedSharding:
        for start in range(len(path)):
            shape, sharding = by_path.get(tuple(path[start:]), (None, None))
            if sharding is not None and shape == np.shape(leaf):
                return sharding
        return replicated

    return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int, batch_dim: int = 0) -> NamedSharding:
    """Sharding of an array whose dimension `batch_dim` holds rows: split over the rules' batch axes."""
    axes = [None] * ndim
    axes[batch_dim] = "batch"
    return logical_sharding(axes, rules, mesh)


def global_batch(local: Any, mesh: Mesh, rules: Rules, batch_dim: int = 0) -> Any:
    """Turns this host's rows of a batch (a pytree of numpy arrays) into global sharded arrays.

    Every host passes its own contiguous block of rows (`host_rows`), in process order.
    """
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(batch_sharding(mesh, rules, np.ndim(x), batch_dim), x),
        local,
    )


def host_rows(num_rows: int) -> slice:
    """The block of a global batch's rows that this process feeds."""
    if num_rows % jax.process_count():
        raise ValueError(f"a batch of {num_rows} rows does not split over {jax.process_count()} processes")
    per_host = num_rows // jax.process_count()
    return slice(jax.process_index() * per_host, (jax.process_index() + 1) * per_host)


def constrain(x: jax.Array, axes: LogicalAxes, rules: Rules | None = None) -> jax.Array:
    """`with_sharding_constraint` of an activation by logical names, under the active mesh.

    `rules` default to the ones set with `nnx.logical_axis_rules`; without an active mesh
    (`jax.set_mesh`) or rules this is the identity, so model code can call it unconditionally.
    """
    mesh = jax.sharding.get_abstract_mesh()
    rules = rules or linen.get_logical_axis_rules()
    if mesh is None or mesh.empty or not rules:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(axes, rules, mesh, x.shape))
