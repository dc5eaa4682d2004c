"""Trees are sized for their search budget: no rollout's sampled, executed and scored work is
dropped for want of node slots, and a max_nodes too small for the budget is refused up front."""

from __future__ import annotations

import dataclasses
import logging
import types

import numpy as np
import pytest

from rstar_jax.config import RoundConfig, SearchConfig
from rstar_jax.data.problems import Problem
from rstar_jax import steps as sf
from rstar_jax.search.beam import run_beam_search
from rstar_jax.search.driver import Proposal, mcts_loop, run_mcts
from rstar_jax.search.tree import NO_NODE, NodeKind, Tree
from rstar_jax.shapes import bucket
from fake_text import FakeCompletion, FakePPM

# Paper budgets (experiments/paper/rounds.gin, eval.gin): rollouts x candidates x depth, and the
# max_nodes these configs had before trees were sized from the budget.
ROUND1 = SearchConfig.data_generation(1, num_rollouts=8, num_candidates=5, max_depth=16)
EVAL = SearchConfig.evaluation(num_rollouts=12, num_candidates=32, max_depth=16)
OLD_MAX_NODES = {"round1": 64, "eval": 512, "virtual_loss": 64}


def never_ending(config: SearchConfig, num_trees: int):
    """propose / score callbacks whose candidates are all distinct, unterminated steps: every
    rollout expands a whole path down to max_depth, the worst case for the node count."""
    k, slots = config.num_candidates, config.leaves_per_tree
    proposed = []

    def propose(leaves):
        shape = (num_trees, slots, k)
        live = np.broadcast_to((leaves != NO_NODE)[..., None], shape)
        proposed.append(int(live.sum()))
        return Proposal(live.copy(), np.full(shape, NodeKind.STEP, np.int8), np.zeros(shape, bool),
                        np.ones(shape, np.float32))

    def score(leaves, ids, kinds):
        ppm = np.where(ids != NO_NODE, np.float32(0.1), np.nan).astype(np.float32)
        return np.full(ids.shape, np.nan, np.float32), ppm

    return propose, score, proposed


@pytest.mark.parametrize("name,config", [("round1", ROUND1), ("eval", EVAL),
                                         ("virtual_loss", dataclasses.replace(ROUND1, num_rollouts=6, leaves_per_tree=4))])
def test_paper_budget_keeps_every_candidate(name, config):
    propose, score, proposed = never_ending(config, 2)
    tree = Tree.init(2, bucket(config.tree_nodes(), minimum=2), config.num_candidates)
    stats = {}
    tree = mcts_loop(tree, config, propose, score, progress=False, stats=stats)
    assert stats["dropped_candidates"] == 0
    # Every proposed candidate became a node (sampled, executed and scored work all kept) ...
    count = np.asarray(tree.node_count)
    np.testing.assert_array_equal(count, 1 + sum(proposed) // 2)
    assert int(np.asarray(tree.depth).max()) == config.max_depth + 1  # the last level is TOO_DEEP
    # ... within the budget, and more than the old max_nodes held.
    assert (count <= config.node_budget()).all() and (count > OLD_MAX_NODES[name]).all()


def test_a_full_tree_counts_and_reports_what_it_drops(caplog):
    propose, score, proposed = never_ending(ROUND1, 1)
    stats = {}
    with caplog.at_level(logging.WARNING, logger="rstar_jax.search.driver"):
        tree = mcts_loop(Tree.init(1, 64, 5), ROUND1, propose, score, progress=False, stats=stats)
    assert int(np.asarray(tree.node_count)[0]) == 64  # the old round-1 max_nodes
    assert stats["dropped_candidates"] == sum(proposed) - 63 > 0
    assert "dropped" in caplog.text and "max_nodes" in caplog.text


class DeepPolicy:
    """Distinct code steps, never an answer: the paper budget's worst case through `run_mcts`."""

    def __init__(self):
        self.prompts = 0

    def sample(self, prompts, num_samples, sampling, *, seed, streams):
        self.prompts += len(prompts)
        return [[FakeCompletion(f"\nx{p.count(sf.STEP_END)}_{j} = {j}\n<end_of_step>", [1], "stop", 0.0,
                                sf.STEP_END) for j in range(num_samples)] for p in prompts]


class NullExecutor:
    def run(self, programs):
        return [types.SimpleNamespace(output="", error=None, timed_out=False) for _ in programs]


def test_run_mcts_with_the_round1_budget_discards_nothing():
    problems = [Problem(0, "What is 3 + 4?", "7", "toy")]
    policy, stats = DeepPolicy(), {}
    config = dataclasses.replace(ROUND1, prompt="sft")
    result = run_mcts(problems, policy, FakePPM(), config, NullExecutor(), progress=False, stats=stats)
    assert stats["dropped_candidates"] == 0
    # Every sampled candidate is a node: the rollouts' sampling was never thrown away.
    assert 64 < result.num_nodes(0) == 1 + policy.prompts * config.num_candidates <= config.node_budget() == 641
    assert result.arrays["parent"].shape[1] == 1024


def test_too_small_trees_are_refused_before_any_work():
    policy = DeepPolicy()
    small = dataclasses.replace(ROUND1, max_nodes=64)
    with pytest.raises(ValueError, match=r"max_nodes = 64 .*num_rollouts \(8\) x max_depth \(16\) x "
                                         r"num_candidates \(5\) = 641"):
        run_mcts([Problem(0, "q", "7", "toy")], policy, None, small, NullExecutor(), progress=False)
    beam = SearchConfig.beam_search(num_candidates=8, beam_width=8, max_depth=16, max_nodes=512)
    with pytest.raises(ValueError, match=r"beam search budget .* = 1033"):
        run_beam_search([Problem(0, "q", "7", "toy")], policy, FakePPM(), beam, NullExecutor(), progress=False)
    assert policy.prompts == 0
    assert dataclasses.replace(ROUND1, max_nodes=641).tree_nodes() == 641
    assert ROUND1.tree_nodes() == 641  # max_nodes = 0: the budget


def test_round_config_checks_every_pass_at_load():
    search = dataclasses.replace(ROUND1, max_nodes=1024)
    RoundConfig(search, unsolved_rollouts=(8,))
    with pytest.raises(ValueError, match="the 16-rollout pass: SearchConfig.max_nodes = 1024"):
        RoundConfig(search, unsolved_rollouts=(16,))
    RoundConfig(dataclasses.replace(search, max_nodes=0), unsolved_rollouts=(16, 128))


@pytest.mark.parametrize("gin_file,module,fn", [
    ("tiny_cpu.gin", "rstar_jax.evolve.run", "evolve"), ("smoke.gin", "rstar_jax.evolve.run", "evolve"),
    ("paper/qwen25_math_7b_v5p64.gin", "rstar_jax.evolve.run", "evolve"),
    ("eval_small.gin", "rstar_jax.evaluation.run", "evaluate"),
    ("paper/qwen25_math_7b_8xh100.gin", "rstar_jax.evaluation.run", "evaluate"),
])
def test_shipped_configs_fit_their_budget(gin_file, module, fn):
    import gin

    from rstar_jax import cli

    gin.clear_config()
    try:
        cli.configure(module, fn, [gin_file], [], [])
        args = gin.get_bindings(getattr(__import__(module, fromlist=[fn]), fn))
    finally:
        gin.clear_config()
    if fn == "evolve":  # RoundConfig checks every pass when it is made; the evaluation search too
        searches = [args["config"].eval_search]
    else:
        searches = [args["search"]]
    for search in searches:
        search.tree_nodes()
        if fn == "evaluate":  # evaluation may also run beam search with it
            search.tree_nodes(beam=True)
