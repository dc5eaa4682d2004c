"""A batch of B search trees as one fixed-shape pytree (after mctx's `Tree`, adapted to LLM steps).

Node 0 is the root of every tree; `-1` means "no node" (no parent, no child, no leaf). Slots at
index >= `node_count` are free. Step text, code and outputs live on the host, keyed by
(tree, node); see `search/io.py`. A node's kind is a `steps.NodeKind`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# The kernels' vocabulary, defined below search so that the host view of a tree shares it.
from rstar_jax.data.trees import NO_NODE, ROOT  # noqa: F401 (re-exported)
from rstar_jax.steps import NodeKind  # noqa: F401 (re-exported)

# Terminals that are not answers: they get the negative reward on themselves only (spec §3.5).
INVALID_KINDS = (NodeKind.CODE_ERRORS, NodeKind.TOO_DEEP, NodeKind.UNPARSABLE)


DATA_AXES = ("data", "fsdp")  # the mesh axes a batch of trees is split over


def data_shards(mesh: Mesh | None, axes: tuple[str, ...] = DATA_AXES) -> int:
    """How many ways `Tree.shard` splits a batch of trees over `mesh` (1 without a mesh)."""
    if mesh is None:
        return 1
    return int(np.prod([mesh.shape[a] for a in axes if mesh.shape.get(a, 1) > 1]))


def padded_batch(num_trees: int, mesh: Mesh | None, axes: tuple[str, ...] = DATA_AXES) -> int:
    """`num_trees` rounded up to a multiple of the data shards: the batch `Tree.shard` accepts."""
    shards = data_shards(mesh, axes)
    return -(-num_trees // shards) * shards


@struct.dataclass
class Tree:
    """B trees of at most N nodes with at most K children each.

    `visit_count` N and `value_sum` W give Q = W/N (0 when N = 0); `value` is the first value a
    node was ever updated with (spec §3.1). `terminal` starts as `kind != STEP` and also turns on
    for nodes whose children are all terminal (set by `select`).
    """

    parent: jax.Array  # int32[B, N]
    children: jax.Array  # int32[B, N, K], in generation order, -1 padded
    depth: jax.Array  # int32[B, N], root 0
    visit_count: jax.Array  # int32[B, N]
    value_sum: jax.Array  # float32[B, N]
    value: jax.Array  # float32[B, N]
    ppm_value: jax.Array  # float32[B, N], tanh(raw / scale) of the PPM; NaN when never scored
    prior: jax.Array  # float32[B, N], sampling prior among siblings (used by PUCT)
    kind: jax.Array  # int8[B, N], a NodeKind
    terminal: jax.Array  # bool[B, N]
    code_error: jax.Array  # bool[B, N], this step's code raised (or printed "error")
    consecutive_errors: jax.Array  # int32[B, N]
    node_count: jax.Array  # int32[B]

    @classmethod
    def init(cls, batch: int, max_nodes: int, num_children: int, num_active: int | None = None) -> Tree:
        """B trees holding only their root.

        Trees from `num_active` on (default: none) are inert padding: their root starts terminal,
        so `select` never picks a leaf in them and the host never samples, executes or scores
        anything for them. They fill a batch up to a multiple of the mesh's data shards.
        """
        shape = (batch, max_nodes)
        num_active = batch if num_active is None else num_active
        return cls(
            parent=jnp.full(shape, NO_NODE, jnp.int32),
            children=jnp.full((*shape, num_children), NO_NODE, jnp.int32),
            depth=jnp.zeros(shape, jnp.int32),
            visit_count=jnp.zeros(shape, jnp.int32),
            value_sum=jnp.zeros(shape, jnp.float32),
            value=jnp.zeros(shape, jnp.float32),
            ppm_value=jnp.full(shape, jnp.nan, jnp.float32),
            prior=jnp.ones(shape, jnp.float32),
            kind=jnp.zeros(shape, jnp.int8),
            terminal=jnp.zeros(shape, bool).at[num_active:, ROOT].set(True),
            code_error=jnp.zeros(shape, bool),
            consecutive_errors=jnp.zeros(shape, jnp.int32),
            node_count=jnp.ones((batch,), jnp.int32),
        )

    def shard(self, mesh: Mesh, axes: tuple[str, ...] = DATA_AXES) -> Tree:
        """Spreads the B trees over the mesh's data axes; the kernels keep this layout."""
        names = tuple(a for a in axes if mesh.shape.get(a, 1) > 1)
        size = data_shards(mesh, axes)
        if self.batch_size % size:
            raise ValueError(f"Tree.shard: {self.batch_size} trees do not split over mesh axes {names} "
                             f"(size {size}); pad the batch with `padded_batch` (inert trees)")
        return jax.device_put(self, NamedSharding(mesh, PartitionSpec(names or None)))

    @property
    def batch_size(self) -> int:
        return self.parent.shape[0]

    @property
    def max_nodes(self) -> int:
        return self.parent.shape[1]

    @property
    def num_children(self) -> int:
        return self.children.shape[2]

    @property
    def expanded(self) -> jax.Array:
        """bool[B, N]: the node has at least one child."""
        return self.children[..., 0] != NO_NODE

    @property
    def q_value(self) -> jax.Array:
        """float32[B, N]: W / N, or 0 for unvisited nodes."""
        return jnp.where(self.visit_count > 0, self.value_sum / jnp.maximum(self.visit_count, 1), 0.0)
