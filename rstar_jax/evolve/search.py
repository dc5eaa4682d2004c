"""A round's search: MCTS over the training problems, every problem once and then again with new
seeds for those still unsolved, in resumable chunks.

A search pass is a directory of chunks saved by `rstar_jax.search.io` (`<round>/search/pass0` opens
in experiments/notebooks/inspect_tree.ipynb). With several processes each searches its slice of
the problems into its own chunk files; between passes every process reads all of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import jax

from rstar_jax.config import EvolveConfig, RoundConfig
from rstar_jax.data.problems import Problem
from rstar_jax.data.trees import SearchedTree
from rstar_jax.parallel.hosts import barrier, shard
from rstar_jax.search import io as search_io
from rstar_jax.search.io import SearchResult
from rstar_jax.training.metrics import MetricsWriter


@dataclasses.dataclass(frozen=True)
class Searched:
    """One search tree of one training problem, as extraction reads it."""

    set: str
    index: int | str
    tree: SearchedTree


def read_pass(directory: str) -> list[Searched]:
    """Every tree that any process saved into a pass directory (one `search_io.save` directory per
    chunk), one per problem (see `search_io.load_each`)."""
    if not os.path.isdir(directory):
        return []
    return [Searched(p.source, p.index, result.tree(b))
            for result in search_io.load_each(directory) for b, p in enumerate(result.problems)]


SearchFn = Callable[[Sequence[Problem], int], SearchResult]  # (problems, seed) -> searched trees


def search_pass(directory: str, problems: Sequence[tuple[str, Problem]], search_fn: SearchFn, seed: int,
                chunk: int, process: tuple[int, int]) -> None:
    """Searches the problems of this process's slice of `problems` that the pass directory does not
    hold yet, in chunks, each saved as a search directory (`rstar_jax.search.io`, so the notebook
    opens it) written under a temporary name and renamed. A problem's `source` is set to its set's
    name. A chunk is named by its process and its first problem's place in the slice: a run resumed
    after a kill searches the chunks an uninterrupted one would, and one resumed with another chunk
    size or process count searches each missing problem once.

    Every chunk uses the pass's seed: a problem's samples draw from its own random streams."""
    index, count = process
    saved = {(p.source, p.index) for p in search_io.saved_problems(directory)} if os.path.isdir(directory) else set()
    mine = [(at, name, p) for at, (name, p) in enumerate(shard(problems, index, count)) if (name, p.index) not in saved]
    for start in range(0, len(mine), chunk):
        part = mine[start:start + chunk]
        path = os.path.join(directory, f"p{index:03d}-of-{count:03d}.s{part[0][0]:05d}")
        result = search_fn([dataclasses.replace(p, source=name) for _, name, p in part], seed)
        tmp = f"{path}.tmp"  # chunk names are per process, so this one is ours (left over if killed)
        shutil.rmtree(tmp, ignore_errors=True)
        search_io.save(result, tmp)
        os.replace(tmp, path)


def search_round(round_dir: str, train_sets: dict[str, list[Problem]], rc: RoundConfig,
                 search_fn: Callable[[Sequence[Problem], int, int], SearchResult], seed: int,
                 chunk: int) -> dict[str, Any]:
    """All passes of a round's search: every problem once, then each unsolved-problem pass.

    `search_fn(problems, rollouts, seed)`. Pass k uses seed + k; between passes every
    process reads all shards to agree on which problems are still unsolved.
    """
    process = (jax.process_index(), jax.process_count())
    todo = [(name, p) for name, problems in train_sets.items() for p in problems]
    passes = (rc.search.num_rollouts, *rc.unsolved_rollouts)
    searched = 0
    for k, rollouts in enumerate(passes):
        directory = os.path.join(round_dir, "search", f"pass{k}")
        search_pass(directory, todo, lambda ps, s: search_fn(ps, rollouts, s), seed + k, chunk, process)
        searched += len(todo)
        barrier(f"{directory} written")
        solved = {(t.set, t.index) for t in read_pass(directory) if t.tree.is_solved()}
        todo = [(name, p) for name, p in todo if (name, p.index) not in solved]
        if not todo:
            break
    return {"trees": searched, "unsolved": len(todo), "ppm": rc.search.use_ppm}




def search_stage(round_dir: str, train_sets: dict[str, list[Problem]], rc: RoundConfig,
                 config: EvolveConfig, policy_dir: str, ppm_dir: str | None, seed: int) -> dict[str, Any]:
    """A round's MCTS over the training problems with the given policy (and PPM)."""
    from rstar_jax.evolve.models import model_stack  # the model stack, only where a search runs
    from rstar_jax.search.driver import run_mcts

    def search_fn(problems: Sequence[Problem], rollouts: int, pass_seed: int) -> SearchResult:
        search = dataclasses.replace(rc.search, num_rollouts=rollouts, seed=pass_seed)
        stats: dict[str, float] = {}
        # Tokens prefilled and reused from the prefix pools: the sampler's prompts, the scorer's texts.
        counters = {"": stack.policy, **({"score_": stack.ppm} if stack.ppm is not None else {})}
        before = {(prefix, name): count
                  for prefix, counter in counters.items() for name, count in counter.counts.items()}
        # Each chunk starts with empty prefix pools: a chunk searched again after a kill then gives
        # the same trees to the bit (the reused prefixes of earlier chunks would move roundings).
        for model in counters.values():
            model.forget_prefixes()
        result = run_mcts(problems, stack.policy, stack.ppm, search, stack.executor, mesh=stack.mesh, stats=stats)
        stats.update({prefix + name: counters[prefix].counts[name] - count for (prefix, name), count in before.items()})
        metrics.append(chunk_metrics(result, stats))
        return result

    with (model_stack(config, policy_dir, ppm_dir) as stack,
          contextlib.closing(MetricsWriter.appending(os.path.join(round_dir, "search"))) as metrics):
        return search_round(round_dir, train_sets, rc, search_fn, seed, config.search_chunk)


def chunk_metrics(result: SearchResult, stats: dict[str, float]) -> dict[str, float]:
    """What one searched chunk logs (metrics.jsonl and TensorBoard beside the pass directories):
    coverage, tree sizes, generated tokens per second, the seconds of each phase and the tokens
    prefilled (and reused from the prefix pools) by the sampler and the scorer."""
    nodes = [result.num_nodes(b) for b in range(len(result))]
    wall = stats.get("wall_s", 0.0)
    return {"search/problems": len(result),
            "search/coverage": sum(bool(result.pass_at_n(b)) for b in range(len(result))) / max(len(result), 1),
            "search/nodes_mean": sum(nodes) / max(len(nodes), 1), "search/nodes_max": max(nodes, default=0),
            "search/tokens_per_s": stats.get("generated_tokens", 0) / wall if wall else 0.0,
            **{f"search/{name}": float(value) for name, value in stats.items()}}
