"""The jitted kernels against a plain-Python MCTS written from the spec, and hand-worked trees."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fake_search import check_consistent, run_fake_kernels
from reference_mcts import run_reference

from rstar_jax.config import SearchConfig
from rstar_jax.search import kernels
from rstar_jax.search.tree import NO_NODE, NodeKind, Tree

CONFIGS = {
    # round 1: no PPM, terminal-guided, two code errors allowed
    "bootstrap": (SearchConfig.data_generation(1, num_rollouts=10, num_candidates=4), 4, 64),
    # rounds 2-4: PPM-initialised Q, terminal-guided answers
    "ppm_augmented": (SearchConfig.data_generation(3, num_rollouts=8, num_candidates=4), 4, 64),
    # evaluation: answers scored by the PPM and backed up
    "evaluation": (SearchConfig.evaluation(num_rollouts=6, num_candidates=4), 4, 64),
    # shallow trees: TOO_MANY_STEPS terminals and the step budget of the first rollout
    "shallow": (SearchConfig.data_generation(2, num_rollouts=12, num_candidates=4, max_depth=3), 4, 64),
    # a tree that fills up: partial expansions, starved leaves retired
    "full": (SearchConfig.data_generation(1, num_rollouts=12, num_candidates=4), 4, 16),
}


@pytest.fixture
def levels_per_check(request, monkeypatch):
    """Every platform's walks test their exit every `request.param` levels, as a GPU's do
    (kernels.LEVELS_PER_CHECK)."""
    for platform in kernels.LEVELS_PER_CHECK:
        monkeypatch.setitem(kernels.LEVELS_PER_CHECK, platform, request.param)
    jax.clear_caches()  # the kernels read LEVELS_PER_CHECK when they are traced
    yield request.param
    jax.clear_caches()


@pytest.mark.parametrize("levels_per_check", [1, 3], ids=["check_every_level", "check_every_3_levels"],
                         indirect=True)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_kernels_match_reference(name, levels_per_check):
    # The trees must not change with the levels a walk takes between its exit tests.
    config, num_trees, capacity = CONFIGS[name]
    tree = run_fake_kernels(num_trees, config, seed=7, capacity=capacity)
    ref = run_reference(num_trees, config, seed=7, capacity=capacity)
    depths = set()
    for b, rt in enumerate(ref):
        count = int(tree.node_count[b])
        assert count == len(rt.nodes), f"tree {b}"
        for name_, get in [
            ("parent", lambda n: n.parent.id if n.parent else NO_NODE),
            ("depth", lambda n: n.depth),
            ("visit_count", lambda n: n.visit_count),
            ("value", lambda n: n.value),
            ("terminal", lambda n: n.terminal),
            ("kind", lambda n: n.kind),
            ("consecutive_errors", lambda n: n.consecutive_errors),
        ]:
            np.testing.assert_array_equal(
                np.asarray(getattr(tree, name_))[b, :count], [get(n) for n in rt.nodes], err_msg=f"{name_}, tree {b}"
            )
        np.testing.assert_allclose(np.asarray(tree.value_sum)[b, :count], [n.value_sum for n in rt.nodes], atol=1e-6)
        np.testing.assert_array_equal(np.asarray(tree.ppm_value)[b, :count], [n.ppm_value for n in rt.nodes])
        for n in rt.nodes:
            kids = np.asarray(tree.children)[b, n.id]
            assert list(kids[kids != NO_NODE]) == [c.id for c in n.children]
        check_consistent(tree, b)
        depths.add(max(n.depth for n in rt.nodes))
    assert len(depths) > 1 or num_trees == 1, "the batch should mix tree depths"
    if name == "full":
        assert any(len(rt.nodes) == capacity for rt in ref)


@pytest.mark.parametrize("levels_per_check", [2, 3, 7], indirect=True)
def test_path_to_root_walks_several_levels_per_exit_test(levels_per_check):
    # A full tree (so that parent[-1] is a real node), vmapped over every start and no start: a level
    # walked past the root must mark nothing.
    parent = np.array([NO_NODE, 0, 0, 1, 3, 4, 2, 6])
    starts = np.arange(-1, parent.shape[0])
    got = np.asarray(jax.vmap(kernels._path_to_root, in_axes=(None, 0))(jnp.asarray(parent), jnp.asarray(starts)))
    for start, mask in zip(starts, got):
        want = np.zeros(parent.shape, bool)
        node = start
        while node != NO_NODE:
            want[node], node = True, parent[node]
        np.testing.assert_array_equal(mask, want, err_msg=f"from node {start}")


def test_virtual_loss_slots_pick_distinct_leaves():
    config = SearchConfig.data_generation(3, num_rollouts=6, num_candidates=3, leaves_per_tree=3)
    tree = run_fake_kernels(1, config, seed=3, capacity=16)  # the shapes of the hand-worked trees
    for b in range(1):
        check_consistent(tree, b)
    # Selection on a fresh two-level tree: three slots from the root reach three different leaves.
    t = Tree.init(1, 16, 3)
    t, ids, _ = kernels.expand(
        t, jnp.array([[0, -1, -1]]), jnp.ones((1, 3, 3), bool), jnp.zeros((1, 3, 3), jnp.int8),
        jnp.zeros((1, 3, 3), bool), jnp.ones((1, 3, 3)), max_depth=4, errors_threshold=1,
    )
    t = kernels.backup(t, jnp.array([[0, -1, -1]]), ids, jnp.full((1, 3, 3), jnp.nan),
                       jnp.array([[[0.5, 0.25, -0.5]] + [[jnp.nan] * 3] * 2]))
    _, leaves = kernels.select(t, jnp.zeros((1, 3), jnp.int32), virtual_loss=1.0)
    assert sorted(np.asarray(leaves)[0].tolist()) == [1, 2, 3]
    assert np.asarray(leaves)[0, 0] == 1  # the best Q first


def _two_level_tree():
    """Root with three children: PPM values 0.5, 0.25, 0.5 (rounds 3-4 initialisation)."""
    t = Tree.init(1, 16, 3)
    leaves = jnp.array([[0]])
    t, ids, _ = kernels.expand(t, leaves, jnp.ones((1, 1, 3), bool), jnp.zeros((1, 1, 3), jnp.int8),
                               jnp.zeros((1, 1, 3), bool), jnp.ones((1, 1, 3)), max_depth=16, errors_threshold=1)
    return kernels.backup(t, leaves, ids, jnp.full((1, 1, 3), jnp.nan), jnp.array([[[0.5, 0.25, 0.5]]]))


def test_ppm_initialisation_and_first_selection():
    t = _two_level_tree()
    np.testing.assert_array_equal(t.visit_count[0, :4], [0, 1, 1, 1])
    np.testing.assert_allclose(t.value_sum[0, :4], [0, 0.5, 0.25, 0.5])
    # Root N = 0: no exploration bonus, Q decides, and the tie between nodes 1 and 3 goes to 1.
    _, leaf = kernels.select(t, jnp.array([[0]]))
    assert int(leaf[0, 0]) == 1


def test_q_after_backups_and_uct_by_hand():
    t = _two_level_tree()
    # Node 1 expands: an answer child (+1, ground truth) and a step with PPM 0.75.
    leaves = jnp.array([[1]])
    t, ids, kinds = kernels.expand(t, leaves, jnp.array([[[True, True, False]]]),
                                   jnp.array([[[0, 1, 0]]], jnp.int8), jnp.zeros((1, 1, 3), bool),
                                   jnp.ones((1, 1, 3)), max_depth=16, errors_threshold=1)
    assert np.asarray(kinds).tolist() == [[[NodeKind.STEP, NodeKind.ANSWER, -1]]]
    t = kernels.backup(t, leaves, ids, jnp.array([[[jnp.nan, 1.0, jnp.nan]]]), jnp.array([[[0.75, jnp.nan, jnp.nan]]]))
    # Node 1: (0.5 + 1) / 2; root: first update sets value = 1, N = 1.
    assert float(t.q_value[0, 1]) == pytest.approx(0.75)
    assert (int(t.visit_count[0, 0]), float(t.value[0, 0]), float(t.value[0, 1])) == (1, 1.0, 0.5)
    # From node 1 (N = 2): the step child (N = 1, Q = 0.75) gets 0.75 + 2*sqrt(ln 2 / 1); the
    # answer is terminal and skipped.
    ln2 = math.log(2)
    scores = kernels._child_scores(jax_tree(t), 1, t.visit_count[0], t.value_sum[0], 2.0, False)
    assert float(scores[0]) == pytest.approx(0.75 + 2 * math.sqrt(ln2))
    _, leaf = kernels.select(t, leaves)
    assert int(leaf[0, 0]) == 4
    # From the root (N = 1): ln 1 = 0, so only Q counts: node 1 (0.75) beats node 3 (0.5).
    _, leaf = kernels.select(t, jnp.array([[0]]))
    assert int(leaf[0, 0]) == 4


def jax_tree(t: Tree) -> Tree:
    """The first tree of a batch, as the per-tree view the kernels see under vmap."""
    import jax
    return jax.tree.map(lambda x: x[0], t)


def test_code_error_threshold_and_depth_limit():
    t = Tree.init(1, 16, 3)
    kw = dict(max_depth=2, errors_threshold=2)
    two = jnp.array([[[True, True, False]]])
    no = jnp.zeros((1, 1, 3), bool)
    steps = jnp.zeros((1, 1, 3), jnp.int8)
    err = jnp.array([[[True, False, False]]])
    prior = jnp.ones((1, 1, 3))
    t, ids, kinds = kernels.expand(t, jnp.array([[0]]), two, steps, err, prior, **kw)
    assert np.asarray(kinds).tolist() == [[[NodeKind.STEP, NodeKind.STEP, -1]]]  # 1 error < threshold 2
    t, ids, kinds = kernels.expand(t, jnp.array([[1]]), two, steps, err, prior, **kw)
    assert np.asarray(kinds).tolist() == [[[NodeKind.CODE_ERRORS, NodeKind.STEP, -1]]]
    assert np.asarray(t.consecutive_errors[0, 3:5]).tolist() == [2, 0]
    t, ids, kinds = kernels.expand(t, jnp.array([[4]]), two, err.astype(jnp.int8), no, prior, **kw)
    assert np.asarray(kinds).tolist() == [[[NodeKind.ANSWER, NodeKind.TOO_DEEP, -1]]]  # depth 3 > 2
    t = kernels.backup(t, jnp.array([[4]]), ids, jnp.array([[[-1.0, jnp.nan, jnp.nan]]]), jnp.full((1, 1, 3), jnp.nan))
    # The wrong answer goes up to the root; the TOO_DEEP node gets -1 on itself only.
    assert np.asarray(t.visit_count[0, :7]).tolist() == [1, 1, 0, 0, 1, 1, 1]
    # Node 4 now has only terminal children: selecting from it retires it and returns no leaf.
    t, leaf = kernels.select(t, jnp.array([[4]]))
    assert int(leaf[0, 0]) == NO_NODE and bool(t.terminal[0, 4])


def test_full_tree_is_not_corrupted():
    t = Tree.init(2, 4, 3)
    t, ids, _ = kernels.expand(t, jnp.array([[0], [0]]), jnp.ones((2, 1, 3), bool), jnp.zeros((2, 1, 3), jnp.int8),
                               jnp.zeros((2, 1, 3), bool), jnp.ones((2, 1, 3)), max_depth=16, errors_threshold=1)
    t, ids, _ = kernels.expand(t, jnp.array([[1], [-1]]), jnp.ones((2, 1, 3), bool), jnp.zeros((2, 1, 3), jnp.int8),
                               jnp.zeros((2, 1, 3), bool), jnp.ones((2, 1, 3)), max_depth=16, errors_threshold=1)
    assert np.asarray(ids).tolist() == [[[-1, -1, -1]], [[-1, -1, -1]]]
    assert np.asarray(t.node_count).tolist() == [4, 4]
    assert bool(t.terminal[0, 1]) and not bool(t.terminal[1, 1])  # starved leaf retired
    assert np.asarray(t.children[0, 1]).tolist() == [-1, -1, -1]


def test_puct_uses_priors():
    t = _two_level_tree()  # children N = 1, Q = 0.5, 0.25, 0.5; root N = 0
    t = t.replace(prior=t.prior.at[0, 1:4].set(jnp.array([0.1, 0.6, 0.3])), visit_count=t.visit_count.at[0, 0].set(4))
    # Q + c * P * sqrt(N_parent) / (1 + N): 0.5 + 2*0.1*2/2, 0.25 + 2*0.6*2/2, 0.5 + 2*0.3*2/2
    scores = kernels._child_scores(jax_tree(t), 0, t.visit_count[0], t.value_sum[0], 2.0, True)
    np.testing.assert_allclose(scores, [0.7, 1.45, 1.1], rtol=1e-6)
    _, leaf = kernels.select(t, jnp.array([[0]]), puct=True)
    assert int(leaf[0, 0]) == 2
