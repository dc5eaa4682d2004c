"""Step-level beam search (spec §3.8, the original's `mode: "bs"`), on the same trees as MCTS.

The beam of each problem holds up to `beam_width` nodes; each generates `num_candidates` steps,
every child is scored by the PPM, and the top `width` children by value become the next beam.
`width` starts at `beam_width` and drops by one for each valid answer among *all* the candidates
of the step, each of which is collected as a final answer, as the original's `select_next_step`
does (`for current_node in self.current_nodes[:]: if is_valid_final_answer_node(...):
final_answer_nodes.append(...); current_top_num -= 1` over every sorted candidate, then
`candidate_nodes[:current_top_num]`); the answers and invalid terminals among the top `width`
take their slots without being expanded, as there. Any code error ends a branch.
Deliberate differences: children stay tied to the beam node that generated them (the original
zipped all beam nodes with the outputs of the non-terminal ones only, which could hang children
under the wrong parent); invalid terminals are not PPM-scored and rank below every scored
candidate (the original scored them too, so one could take a slot); and a width driven below 0
gives an empty beam (the original's negative slice `[:current_top_num]` kept all but the last).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from rstar_jax.config import SearchConfig
from rstar_jax.data.problems import Problem
from rstar_jax.search import kernels
from rstar_jax.search.driver import CodeRunner, StepExpander, StepGenerator, ValueModel
from rstar_jax.search.io import SearchResult, concat
from rstar_jax.search.tree import NO_NODE, ROOT, NodeKind, Tree, padded_batch
from rstar_jax.shapes import bucket


def run_beam_search(
    problems: Sequence[Problem],
    policy: StepGenerator,
    ppm: ValueModel,
    config: SearchConfig,
    executor: CodeRunner,
    *,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = True,
) -> SearchResult:
    """Beam search on every problem, `config.batch_size` at a time.

    Chosen nodes get N = 1, W = their PPM value, so `result.answer(b)` is the chosen answer with
    the highest PPM value (the original's `states["solutions"][0]`); candidates that were not
    chosen keep only `ppm_value`.
    """
    if ppm is None:
        raise ValueError("run_beam_search needs a PPM to rank candidates (ppm=None given)")
    beam_config = dataclasses.replace(config, errors_threshold=1, use_ppm=True, ground_truth_rewards=False)
    num_nodes = bucket(beam_config.tree_nodes(beam=True), minimum=2)  # refuses a max_nodes below the budget
    results = []
    for start in range(0, len(problems), config.batch_size):
        batch = list(problems[start:start + config.batch_size])
        # On a mesh the batch is padded to a multiple of the data shards with inert trees: their
        # beams start empty, so nothing is sampled, executed or scored for them.
        padded = batch + batch[-1:] * (padded_batch(len(batch), mesh) - len(batch))
        result = _beam_batch(padded, policy, ppm, beam_config, executor, mesh, progress, num_nodes, len(batch))
        results.append(result.take(range(len(batch))))
    return concat(results)


def _beam_batch(problems, policy, ppm, config, executor, mesh, progress, num_nodes, num_active) -> SearchResult:
    width_max, num = config.beam_width, len(problems)
    steps = StepExpander(problems, policy, ppm, executor, config, width_max)
    tree = Tree.init(num, num_nodes, config.num_candidates, num_active=num_active)
    if mesh is not None:
        tree = tree.shard(mesh)
    beams = np.full((num, width_max), NO_NODE, np.int32)
    beams[:num_active, 0] = ROOT
    width = np.full(num, width_max)
    values: dict[tuple[int, int], float] = {}  # PPM value of every scored candidate
    chosen: set[tuple[int, int]] = set()
    bar = tqdm(desc="beam search steps", unit="step", disable=not progress)
    while (beams != NO_NODE).any():
        proposal = steps.propose(beams)
        tree, ids, kinds = kernels.expand(
            tree, jnp.asarray(beams), jnp.asarray(proposal.exists), jnp.asarray(proposal.step_kind, jnp.int8),
            jnp.asarray(proposal.code_error), jnp.asarray(proposal.prior, jnp.float32),
            max_depth=config.max_depth, errors_threshold=1,
        )
        ids, kinds = np.asarray(ids), np.asarray(kinds)
        created = steps.commit(beams, ids, kinds)
        scored = [(b, node) for b, l, j, node in created if kinds[b, l, j] in (NodeKind.STEP, NodeKind.ANSWER)]
        values.update(zip(scored, steps.ppm_values(scored).tolist()))
        beams = np.full_like(beams, NO_NODE)
        by_tree: dict[int, list[tuple[int, NodeKind]]] = collections.defaultdict(list)
        for b, l, j, node in created:
            by_tree[b].append((node, NodeKind(int(kinds[b, l, j]))))
        for b, children in by_tree.items():
            # Invalid terminals (value -1) rank below every PPM value; the stable sort keeps
            # generation order among equals.
            ranked = sorted(children, key=lambda nk: -values.get((b, nk[0]), config.negative_reward))
            answers = [node for node, kind in ranked if kind == NodeKind.ANSWER]
            chosen.update((b, node) for node in answers)  # every valid answer is collected
            width[b] -= len(answers)
            top = ranked[: max(width[b], 0)]
            chosen.update((b, node) for node, _ in top)
            nxt = [node for node, kind in top if kind == NodeKind.STEP]
            beams[b, : len(nxt)] = nxt
        bar.set_postfix(open_beams=int((beams != NO_NODE).any(axis=1).sum()), nodes=int(np.asarray(tree.node_count).sum()))
        bar.update(1)
    bar.close()
    result = SearchResult.from_tree(problems, tree, steps.nodes)
    for (b, node), value in values.items():
        result.arrays["ppm_value"][b, node] = value
    for b, node in chosen:
        value = values.get((b, node), config.negative_reward)
        result.arrays["visit_count"][b, node] = 1
        result.arrays["value_sum"][b, node] = result.arrays["value"][b, node] = value
    return result
