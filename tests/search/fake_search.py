"""Drives `mcts_loop` with the fake step generator of `reference_mcts`, and checks tree invariants."""

from __future__ import annotations

import math

import numpy as np

from rstar_jax.config import SearchConfig
from rstar_jax.search.driver import Proposal, mcts_loop
from rstar_jax.search.tree import NO_NODE, NodeKind, Tree
from reference_mcts import fake_candidates


def run_fake_kernels(num_trees: int, config: SearchConfig, seed: int, capacity: int, mesh=None) -> Tree:
    """The jitted search on B trees whose expansions come from `fake_candidates`."""
    k, num_slots = config.num_candidates, config.leaves_per_tree
    paths: dict[tuple[int, int], tuple[int, ...]] = {(b, 0): () for b in range(num_trees)}
    last: dict[tuple[int, int, int], object] = {}

    def propose(leaves: np.ndarray) -> Proposal:
        shape = (num_trees, num_slots, k)
        exists, error = np.zeros(shape, bool), np.zeros(shape, bool)
        step_kind = np.full(shape, NodeKind.STEP, np.int8)
        prior = np.ones(shape, np.float32)
        last.clear()
        for b, l in zip(*(idx.tolist() for idx in np.nonzero(leaves != NO_NODE))):
            for j, cand in enumerate(fake_candidates(seed, b, paths[b, int(leaves[b, l])], k)):
                if cand is not None:
                    last[b, l, j] = cand
                    exists[b, l, j] = True
                    step_kind[b, l, j] = (NodeKind.ANSWER if cand.is_answer else
                                          NodeKind.UNPARSABLE if cand.unparsable else NodeKind.STEP)
                    error[b, l, j], prior[b, l, j] = cand.code_error, cand.prior
        return Proposal(exists, step_kind, error, prior)

    def score(leaves, ids, kinds):
        rewards = np.full(ids.shape, np.nan, np.float32)
        ppm = np.full(ids.shape, np.nan, np.float32)
        for (b, l, j), cand in last.items():
            if ids[b, l, j] == NO_NODE:
                continue
            paths[b, int(ids[b, l, j])] = paths[b, int(leaves[b, l])] + (j,)
            if kinds[b, l, j] == NodeKind.ANSWER:
                gt = config.positive_reward if cand.correct else config.negative_reward
                rewards[b, l, j] = gt if config.ground_truth_rewards else cand.ppm
                if not config.ground_truth_rewards:
                    ppm[b, l, j] = cand.ppm
            elif kinds[b, l, j] == NodeKind.STEP and config.use_ppm:
                ppm[b, l, j] = cand.ppm
        return rewards, ppm

    tree = Tree.init(num_trees, capacity, k)
    return mcts_loop(tree if mesh is None else tree.shard(mesh), config, propose, score, progress=False)


def check_consistent(tree: Tree, b: int) -> None:
    """Each node's N and W are its own first update plus the answers below it (spec §3.5)."""
    t = {name: np.asarray(getattr(tree, name))[b] for name in
         ("parent", "children", "depth", "visit_count", "value_sum", "value", "ppm_value", "kind")}
    count = int(np.asarray(tree.node_count)[b])
    visits = np.zeros(count)
    wsum = np.zeros(count)
    for i in range(count):
        own = t["kind"][i] != NodeKind.STEP or not math.isnan(t["ppm_value"][i])
        if own:
            visits[i] += 1
            wsum[i] += t["value"][i]
        if t["kind"][i] == NodeKind.ANSWER:
            j = t["parent"][i]
            while j != NO_NODE:
                visits[j] += 1
                wsum[j] += t["value"][i]
                j = t["parent"][j]
        if i:
            p = t["parent"][i]
            assert i in t["children"][p] and t["depth"][i] == t["depth"][p] + 1
    np.testing.assert_array_equal(t["visit_count"][:count], visits)
    np.testing.assert_allclose(t["value_sum"][:count], wsum, atol=1e-5)
