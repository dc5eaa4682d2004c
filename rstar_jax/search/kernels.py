"""Jitted tree kernels: `select`, `expand`, `backup` over a batch of trees (spec §3.2-§3.6).

Each kernel is written for one tree and `jax.vmap`-ed over the B trees, so trees sharded over the
mesh's data axes stay where they are. Every kernel handles L leaves per tree (L = 1 is the
original's one rollout per tree; L > 1 runs L rollouts per tree at once under virtual loss).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from rstar_jax.search.tree import INVALID_KINDS, NO_NODE, NodeKind, Tree

# Levels a walk down or up the trees takes between two tests of its exit condition, by platform
# (read when a kernel is traced). On a GPU each test is a copy to the host and a wait that cost
# more than the level's own kernels; 8 levels per test beat 4 and 16 over the benchmark's grid on
# an H200 (docs/performance.md, "Tree kernels on the H200"; ROCm, unmeasured, follows CUDA).
# Elsewhere the test is cheap (a CPU) or stays on the device (a TPU), and levels walked past the
# end are not.
LEVELS_PER_CHECK = {"cuda": 8, "rocm": 8, "default": 1}


def _walk(cond, body, init):
    """`lax.while_loop(cond, body, init)` that tests `cond` every LEVELS_PER_CHECK[platform] levels.

    `body` must leave a state where `cond` fails as it is: the levels between two tests run
    unguarded, so a guard per level (a select over the whole state, [B, N] for a path mask) is
    not paid on every level, only by vmap's one select per test.
    """

    def walk(levels_per_check: int, state):
        def levels(state):
            for _ in range(levels_per_check):
                state = body(state)
            return state

        return lax.while_loop(cond, levels, state)

    branches = {platform: functools.partial(walk, n) for platform, n in LEVELS_PER_CHECK.items()}
    return lax.platform_dependent(init, **branches)


def _child_scores(tree: Tree, node, visit, wsum, c: float, puct: bool) -> jax.Array:
    """Selection score of each child slot of `node` (spec §3.2), before masking.

    UCT: Q + c*sqrt(ln N_parent / N_child), with no bonus when either count is 0 (so an unvisited
    child scores 0 and a parent with one visit gives no bonus). PUCT: Q + c*P*sqrt(N_parent)/(1+N).
    """
    kids = jnp.maximum(tree.children[node], 0)
    n = visit[kids]
    n_parent = visit[node]
    q = jnp.where(n > 0, wsum[kids] / jnp.maximum(n, 1), 0.0)
    if puct:
        bonus = c * tree.prior[kids] * jnp.sqrt(n_parent.astype(jnp.float32)) / (1.0 + n)
    else:
        ratio = jnp.log(jnp.maximum(n_parent, 1).astype(jnp.float32)) / jnp.maximum(n, 1)
        bonus = jnp.where((n > 0) & (n_parent > 0), c * jnp.sqrt(ratio), 0.0)
    return q + bonus


def _path_to_root(parent: jax.Array, node: jax.Array) -> jax.Array:
    """bool[N]: `node` and its ancestors (none for NO_NODE)."""
    num_nodes = parent.shape[-1]

    def body(state):  # past the root (NO_NODE) a level changes nothing, as `_walk` needs
        n, on_path = state
        past = n == NO_NODE
        return jnp.where(past, NO_NODE, parent[n]), on_path.at[jnp.where(past, num_nodes, n)].set(True, mode="drop")

    return _walk(lambda state: state[0] != NO_NODE, body, (node, jnp.zeros(parent.shape, bool)))[1]


def _add_along_path(parent, visit, wsum, value, node, count, total, first):
    """Adds `count` visits and `total` value to `node` and all its ancestors up to the root.

    A node seen for the first time (N = 0) takes `first` as its `value` (spec §3.1 `update`).
    The walk up only marks the path; the updates are then one elementwise pass (fewer scatters
    per level, which is what a level costs on an accelerator).
    """

    on_path = _path_to_root(parent, node)
    fresh = on_path & (visit == 0) & (count > 0)
    return visit + on_path * count, wsum + jnp.where(on_path, total, 0.0), jnp.where(fresh, first, value)


def _select_one(tree: Tree, start_l, c: float, puct: bool, virtual_loss: float):
    """Descends from each of the L start nodes to an unexpanded leaf, one after another.

    Returns (terminal, leaves[L]); a leaf is -1 when the rollout has nowhere to go. Leaves already
    taken by an earlier slot are skipped, and each taken path carries a virtual loss
    (N += 1, W -= virtual_loss) for the later slots only; the tree's statistics are untouched.
    """

    several = start_l.shape[0] > 1  # one slot takes no leaf before it and adds no virtual loss

    def untaken(taken, ids):
        return ~taken[ids] if several else True

    def descend(carry, start):
        visit, wsum, taken, terminal = carry

        def body(state):
            node, _, _, _ = state
            kids = tree.children[node]
            safe = jnp.maximum(kids, 0)
            has = kids != NO_NODE
            open_ = has & ~terminal[safe]
            avail = open_ & untaken(taken, safe)
            scores = jnp.where(avail, _child_scores(tree, node, visit, wsum, c, puct), -jnp.inf)
            expanded = has[0]
            done = ~expanded | terminal[node] | ~avail.any()
            leaf = jnp.where(~expanded & ~terminal[node] & untaken(taken, node), node, NO_NODE)
            # A node whose children are all terminal becomes terminal (spec §3.2).
            exhausted = expanded & ~terminal[node] & ~open_.any()
            # Once done, the walk stays at its node and every level returns the same state.
            nxt = jnp.where(done, node, kids[jnp.argmax(scores)])  # argmax: first index on ties
            return nxt, leaf, exhausted, done

        init = (jnp.maximum(start, 0), jnp.int32(NO_NODE), False, start == NO_NODE)
        node, leaf, exhausted, _ = _walk(lambda s: ~s[3], body, init)
        terminal = terminal.at[node].set(terminal[node] | exhausted)
        if several:
            visit, wsum, _ = _add_along_path(
                tree.parent, visit, wsum, tree.value, leaf, (leaf != NO_NODE).astype(jnp.int32),
                jnp.where(leaf != NO_NODE, -virtual_loss, 0.0), 0.0,
            )
            taken = taken.at[jnp.maximum(leaf, 0)].set(taken[jnp.maximum(leaf, 0)] | (leaf != NO_NODE))
        return (visit, wsum, taken, terminal), leaf

    init = (tree.visit_count, tree.value_sum, jnp.zeros_like(tree.terminal), tree.terminal)
    (_, _, _, terminal), leaves = lax.scan(descend, init, start_l)
    return terminal, leaves


@functools.partial(jax.jit, static_argnames=("puct",))
def select(
    tree: Tree, start_bl: jax.Array, *, c: float = 2.0, puct: bool = False, virtual_loss: float = 1.0
) -> tuple[Tree, jax.Array]:
    """Picks the next leaf to expand for every (tree, rollout slot).

    `start_bl` int32[B, L] is the root at the start of a rollout and the node just expanded in the
    middle of one (the original descends one level per step from there, spec §3.4). Terminal
    children are skipped and exhausted nodes are marked terminal. Returns (tree, leaves int32[B, L]).
    """
    terminal, leaves = jax.vmap(_select_one, in_axes=(0, 0, None, None, None))(
        tree, start_bl, c, puct, virtual_loss
    )
    return tree.replace(terminal=terminal), leaves


def _expand_one(tree: Tree, leaf_l, exists_lk, step_kind_lk, error_lk, prior_lk, max_depth, threshold):
    """Writes the candidates of each leaf into free slots, in order, as far as they fit."""
    num_nodes = tree.parent.shape[-1]
    ok_lk = exists_lk & (leaf_l != NO_NODE)[:, None]
    ids_lk = tree.node_count + jnp.cumsum(ok_lk.reshape(-1)).reshape(ok_lk.shape) - 1
    fits_lk = ok_lk & (ids_lk < num_nodes)
    ids_lk = jnp.where(fits_lk, ids_lk, NO_NODE)
    slot_lk = jnp.where(fits_lk, ids_lk, num_nodes)  # out of bounds: dropped by the scatters

    leaf_lk = jnp.broadcast_to(leaf_l[:, None], ok_lk.shape)
    parent = jnp.maximum(leaf_lk, 0)
    depth = tree.depth[parent] + 1
    consecutive = jnp.where(error_lk, tree.consecutive_errors[parent] + 1, 0)
    kind = jnp.select(
        [step_kind_lk != NodeKind.STEP, error_lk & (consecutive >= threshold), depth > max_depth],
        [step_kind_lk, NodeKind.CODE_ERRORS, NodeKind.TOO_DEEP],
        NodeKind.STEP,
    ).astype(jnp.int8)

    def put(arr, val):
        return arr.at[slot_lk].set(val, mode="drop")

    rank_lk = jnp.cumsum(fits_lk, axis=1) - 1
    children = tree.children.at[jnp.where(fits_lk, leaf_lk, num_nodes), rank_lk].set(
        ids_lk, mode="drop"
    )
    # A leaf that got no child (tree full) can never be expanded: retire it.
    starved = (leaf_l != NO_NODE) & ~fits_lk.any(axis=1)
    terminal = put(tree.terminal, kind != NodeKind.STEP)
    terminal = terminal.at[jnp.where(starved, leaf_l, num_nodes)].set(True, mode="drop")
    tree = tree.replace(
        parent=put(tree.parent, leaf_lk),
        children=children,
        depth=put(tree.depth, depth),
        prior=put(tree.prior, prior_lk),
        kind=put(tree.kind, kind),
        terminal=terminal,
        code_error=put(tree.code_error, error_lk),
        consecutive_errors=put(tree.consecutive_errors, consecutive),
        node_count=tree.node_count + fits_lk.sum(dtype=jnp.int32),
    )
    return tree, ids_lk


@jax.jit
def expand(
    tree: Tree,
    leaves_bl: jax.Array,
    exists_blk: jax.Array,
    step_kind_blk: jax.Array,
    code_error_blk: jax.Array,
    prior_blk: jax.Array,
    *,
    max_depth: int,
    errors_threshold: int,
) -> tuple[Tree, jax.Array, jax.Array]:
    """Adds the kept candidates of each leaf as its children, with their flags (spec §2.6, §3.3).

    `step_kind_blk` says what the parser made of each sample: STEP, ANSWER or UNPARSABLE. A STEP
    child becomes CODE_ERRORS if its code failed and the consecutive-error count reaches
    `errors_threshold`, else TOO_DEEP if its depth exceeds `max_depth`. Candidates that do not fit get id -1. Returns (tree, child ids int32[B, L, K],
    child kinds int8[B, L, K]).
    """
    tree, ids = jax.vmap(_expand_one, in_axes=(0, 0, 0, 0, 0, 0, None, None))(
        tree, leaves_bl, exists_blk, step_kind_blk, code_error_blk, prior_blk, max_depth,
        errors_threshold,
    )
    kinds = jnp.take_along_axis(tree.kind, jnp.maximum(ids, 0).reshape(ids.shape[0], -1), axis=1)
    return tree, ids, jnp.where(ids != NO_NODE, kinds.reshape(ids.shape), -1).astype(jnp.int8)


def _backup_one(tree: Tree, leaf_l, child_lk, reward_lk, ppm_lk, negative_reward):
    """Applies the first updates of the new children and backs answers up to the root."""
    num_nodes = tree.parent.shape[-1]
    has = child_lk != NO_NODE
    kind = tree.kind[jnp.maximum(child_lk, 0)]
    answer = has & (kind == NodeKind.ANSWER)
    invalid = has & jnp.isin(kind, jnp.array(INVALID_KINDS, jnp.int8))
    scored_step = has & (kind == NodeKind.STEP) & ~jnp.isnan(ppm_lk)
    own = jnp.where(answer, reward_lk, jnp.where(invalid, negative_reward, ppm_lk))
    updated = answer | invalid | scored_step
    slot = jnp.where(updated, child_lk, num_nodes)
    visit = tree.visit_count.at[slot].add(1, mode="drop")
    wsum = tree.value_sum.at[slot].add(own, mode="drop")
    value = tree.value.at[slot].set(own, mode="drop")
    ppm_value = tree.ppm_value.at[jnp.where(has & ~jnp.isnan(ppm_lk), child_lk, num_nodes)].set(
        ppm_lk, mode="drop"
    )

    # Every answer child's reward goes to all ancestors (spec §3.5), in generation order.
    def per_leaf(carry, xs):
        visit, wsum, value = carry
        leaf, answer_k, reward_k = xs
        count = answer_k.sum(dtype=jnp.int32)
        total = jnp.where(answer_k, reward_k, 0.0).sum()
        first = reward_k[jnp.argmax(answer_k)]
        return _add_along_path(tree.parent, visit, wsum, value, leaf, count, total, first), None

    (visit, wsum, value), _ = lax.scan(per_leaf, (visit, wsum, value), (leaf_l, answer, reward_lk))
    return tree.replace(visit_count=visit, value_sum=wsum, value=value, ppm_value=ppm_value)


@jax.jit
def backup(
    tree: Tree,
    leaves_bl: jax.Array,
    child_ids_blk: jax.Array,
    rewards_blk: jax.Array,
    ppm_values_blk: jax.Array,
    *,
    negative_reward: float = -1.0,
) -> Tree:
    """Gives every new child its first update and backs answer rewards up (spec §3.5).

    ANSWER children: `update_recursive(reward)` to the root (reward = +-1 from the ground truth
    when generating data, the PPM value when evaluating). Invalid terminals (INVALID_KINDS):
    `update(negative_reward)` on the node only. STEP children with a PPM value (not NaN):
    `update(ppm_value)` on the node only, so they start at N = 1, W = v.
    """
    return jax.vmap(_backup_one, in_axes=(0, 0, 0, 0, 0, None))(
        tree, leaves_bl, child_ids_blk, rewards_blk, ppm_values_blk, negative_reward
    )
