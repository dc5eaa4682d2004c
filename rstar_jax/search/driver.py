"""Host driver of the batched MCTS (spec §3.4): device kernels meet text, code and grading here.

`mcts_loop` advances all B trees in lockstep through the select -> propose -> expand -> score ->
backup phases; what a "proposal" is (model samples, executed code, graded answers) is up to the
two callbacks, so the same loop runs on a fake step generator in tests and on the real policy in
`run_mcts`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from rstar_jax.config import SearchConfig
from rstar_jax.search import kernels
from rstar_jax.search.tree import NO_NODE, ROOT, Tree


@dataclasses.dataclass
class Proposal:
    """The kept candidates of every leaf, as [B, L, K] arrays in generation order."""

    exists: np.ndarray  # bool: a kept candidate sits in this slot
    step_kind: np.ndarray  # int8 NodeKind: STEP, ANSWER or UNPARSABLE
    code_error: np.ndarray  # bool: its code failed (spec §2.6)
    prior: np.ndarray  # float32: sampling prior among siblings (PUCT only)


# propose(leaves[B, L]) -> Proposal; the host keeps whatever text it needs for the new children.
ProposeFn = Callable[[np.ndarray], Proposal]
# score(leaves[B, L], child_ids[B, L, K], kinds[B, L, K]) -> (rewards, ppm_values), both float32
# [B, L, K]: the reward of answer children (+-1 or their PPM value) and the PPM value of children
# that were scored (NaN elsewhere).
ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def mcts_loop(
    tree: Tree,
    config: SearchConfig,
    propose: ProposeFn,
    score: ScoreFn,
    *,
    progress: bool = True,
) -> Tree:
    """Runs `config.num_rollouts` rollouts on every tree of the batch (spec §3.4).

    A rollout descends from the root to an unexpanded node, expands it, and keeps going from the
    best new child until it selects nothing (all children terminal). Descending through already
    expanded levels happens inside one `select` call; the original spends one solver step per
    level, which only matters for its step budget, reproduced below.
    """
    num_slots = config.leaves_per_tree
    roots = jnp.full((tree.batch_size, num_slots), ROOT, jnp.int32)
    select_kw = dict(c=config.c_puct, puct=config.selection == "puct", virtual_loss=config.virtual_loss)
    expand_kw = dict(max_depth=config.max_depth, errors_threshold=config.errors_threshold)
    num_outer = -(-config.num_rollouts // num_slots)
    bar = tqdm(total=num_outer * num_slots, desc="mcts rollouts", unit="rollout", disable=not progress)
    start_time, phases = time.perf_counter(), 0
    for _ in range(num_outer):
        # The original's rollout has max_depth steps and starts at depth 1 (depth 0 if the root is
        # still unexpanded), one level per step; so a rollout that began at an unexpanded root
        # cannot expand a node at depth max_depth.
        first_depth = np.asarray(tree.expanded[:, ROOT], np.int32)[:, None]
        tree, leaves = kernels.select(tree, roots, **select_kw)
        leaves = _within_budget(tree, np.asarray(leaves), first_depth, config.max_depth)
        while (leaves != NO_NODE).any():
            proposal = propose(leaves)
            tree, ids, kinds = kernels.expand(
                tree, jnp.asarray(leaves), jnp.asarray(proposal.exists), jnp.asarray(proposal.step_kind, jnp.int8),
                jnp.asarray(proposal.code_error), jnp.asarray(proposal.prior, jnp.float32), **expand_kw,
            )
            ids, kinds = np.asarray(ids), np.asarray(kinds)
            rewards, ppm_values = score(leaves, ids, kinds)
            tree = kernels.backup(
                tree, jnp.asarray(leaves), jnp.asarray(ids), jnp.asarray(rewards, jnp.float32),
                jnp.asarray(ppm_values, jnp.float32), negative_reward=config.negative_reward,
            )
            tree, leaves = kernels.select(tree, jnp.asarray(leaves), **select_kw)
            leaves = _within_budget(tree, np.asarray(leaves), first_depth, config.max_depth)
            phases += 1
        done = int(np.asarray(tree.terminal[:, ROOT]).sum())
        nodes = int(np.asarray(tree.node_count).sum())
        rate = nodes / max(time.perf_counter() - start_time, 1e-9)
        bar.set_postfix(trees_done=f"{done}/{tree.batch_size}", phases=phases, nodes_per_s=f"{rate:.1f}")
        bar.update(num_slots)
        if done == tree.batch_size:  # every root is terminal: later rollouts do nothing
            break
    bar.close()
    return tree


def _within_budget(tree: Tree, leaves: np.ndarray, first_depth: np.ndarray, max_depth: int) -> np.ndarray:
    """Drops leaves the original's per-rollout step budget would not reach (see `mcts_loop`)."""
    depth = np.take_along_axis(np.asarray(tree.depth), np.maximum(leaves, 0), axis=1)
    return np.where(depth - first_depth < max_depth, leaves, NO_NODE).astype(np.int32)
