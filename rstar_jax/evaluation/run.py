"""`rstar-jax eval`: benchmark a policy (and PPM) on rStar problem sets, every set x method.

Writes to the workdir, per set and method, `<set>/<method>/predictions.jsonl` (question, gold,
every candidate with its answer, score, steps and correctness), then `summary.md` / `summary.json`
(our number beside the paper's) and `<set>/<method>/accuracy_vs_k.png` when several k were run.
Resumable (finished problems are skipped on restart) and sharded over hosts: each process
evaluates its slice of every set on its own devices (the workdir must be shared by the hosts),
process 0 merges the shards and writes the summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import jax
from tqdm import tqdm

from rstar_jax.config import EvalConfig, MeshConfig, ParallelConfig, SamplerConfig, ScorerConfig, SearchConfig
from rstar_jax.data.problems import Problem, load_problem_sets
from rstar_jax.evaluation import reporting
from rstar_jax.evaluation.methods import METHOD_FNS, Models
from rstar_jax.evaluation.metrics import STEP_REDUCTIONS
from rstar_jax.evaluation.results import ShardWriter, grade, merge_shards
from rstar_jax.parallel.hosts import barrier, initialize_distributed, shard
from rstar_jax.training.metrics import MetricsWriter
from rstar_jax.verify.grader import is_equivalent


def evaluate(
    workdir: str,
    problems: str,
    policy_path: str,
    ppm_path: str | None = None,
    config: EvalConfig = EvalConfig(),
    search: SearchConfig = SearchConfig.evaluation(),
    sampler: SamplerConfig = SamplerConfig(),
    scorer: ScorerConfig = ScorerConfig(),
    parallel: ParallelConfig = ParallelConfig(),
    mesh: MeshConfig | None = None,
) -> list[dict[str, Any]]:
    """Loads the policy (and PPM) from HF directories and evaluates every set of `problems`.

    `problems` is a problem file or a directory of them. The models are built by the one model
    stack (inference/stack.py) from `parallel` (mesh, dtypes, rules); `mesh`, when given, replaces
    its mesh (the paper configs bind the experiment's MESH there). Returns the summary rows.
    """
    from rstar_jax.inference.stack import ModelStack  # here, so metrics and reports need no model stack

    check_config(config)
    initialize_distributed()
    sets = load_problem_sets(problems)
    if mesh is not None:
        parallel = dataclasses.replace(parallel, mesh=mesh)
    with ModelStack(policy_path, ppm_path, sampler=sampler, scorer=scorer, exec_workers=config.exec_workers,
                    exec_timeout_s=config.exec_timeout_s, parallel=parallel) as stack:
        models = Models(policy=stack.policy, executor=stack.executor, ppm=stack.ppm, tokenizer=stack.tokenizer,
                        search=search, mesh=stack.mesh)
        return evaluate_sets(workdir, sets, models, config)


def evaluate_sets(
    workdir: str,
    sets: Mapping[str, Sequence[Problem]],
    models: Models,
    config: EvalConfig,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
) -> list[dict[str, Any]]:
    """Evaluates this process's slice of every set with every method; process 0 reports.

    Returns the summary rows on process 0 (empty elsewhere).
    """
    check_config(config)
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    with _grading_pool(config.grade_workers) as pool:
        for method in config.methods:
            for name, problems in sets.items():
                _evaluate_slice(workdir, name, method, _head(problems, config), models, config, pool, index, count)
    if count > 1:
        barrier("evaluation: all shards written")
    if index != 0:
        return []
    rows = []
    for method in config.methods:
        for name, problems in sets.items():
            directory = os.path.join(workdir, name, method)
            records = merge_shards(directory, len(_head(problems, config)), count)
            if records is None:
                raise RuntimeError(f"{directory}: some shard is incomplete; rerun the evaluation to finish it")
            row = reporting.summarize(name, method, records, config.ks, config.top_n, config.paper_round)
            reporting.plot_accuracy_vs_k(os.path.join(directory, "accuracy_vs_k.png"), row)
            rows.append(row)
    reporting.write_summary(workdir, rows)
    return rows


def check_config(config: EvalConfig) -> None:
    """Fails early, before any model work, on names that would only fail later."""
    unknown = sorted(set(config.methods) - set(METHOD_FNS))
    if unknown:
        raise ValueError(f"EvalConfig.methods: unknown {unknown}; known: {sorted(METHOD_FNS)}")
    if config.prompt_format not in ("rstar", "chat"):
        raise ValueError(f"EvalConfig.prompt_format must be 'rstar' or 'chat', got {config.prompt_format!r}")
    if config.step_score not in STEP_REDUCTIONS:
        raise ValueError(f"EvalConfig.step_score must be one of {STEP_REDUCTIONS}, got {config.step_score!r}")


def _head(problems: Sequence[Problem], config: EvalConfig) -> Sequence[Problem]:
    return problems[: config.max_problems] if config.max_problems > 0 else problems


def _grading_pool(workers: int) -> contextlib.AbstractContextManager[ProcessPoolExecutor | None]:
    """Processes that grade answers (sympy can take a while); spawned, as jax dislikes fork."""
    if workers <= 0:
        return contextlib.nullcontext()
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def _evaluate_slice(workdir: str, name: str, method: str, problems: Sequence[Problem], models: Models,
                    config: EvalConfig, pool: ProcessPoolExecutor | None, index: int, count: int) -> None:
    """This process's problems (every count-th one), in resumable batches.

    The batches are fixed slices of the process's problems, so a resumed evaluation runs the same
    batches as an uninterrupted one (a batch's shapes move its rows' float roundings). A batch cut
    short by a kill mid-write runs again whole, and only its missing records are written.
    """
    directory = os.path.join(workdir, name, method)
    writer = ShardWriter(directory, index, count)
    mine = shard(range(len(problems)), index, count)
    fn = METHOD_FNS[method]
    with (tqdm(total=len(mine), initial=len(writer.done & set(mine)), desc=f"{name}/{method}", unit="problem") as bar,
          contextlib.closing(MetricsWriter.appending(directory)) as metrics):
        for start in range(0, len(mine), config.batch_size):
            positions = mine[start : start + config.batch_size]
            missing = set(positions) - writer.done
            if not missing:
                continue
            batch = [problems[p] for p in positions]
            began = time.perf_counter()
            # Each batch starts with empty prefix pools: a batch run again after a kill then gives
            # the same records to the bit (prefixes reused from earlier batches move roundings).
            models.forget_prefixes()
            candidates = fn(batch, models, config)
            args = (batch, positions, [method] * len(batch), candidates, [is_equivalent] * len(batch))
            records = list(pool.map(grade, *args, chunksize=4) if pool else map(grade, *args))
            writer.append([r for r in records if r["position"] in missing])
            bar.update(len(missing))
            seconds = time.perf_counter() - began
            metrics.append({  # first candidates: the method's pick for most methods
                f"eval/{name}/{method}/first_candidate_accuracy":
                    sum(r["candidates"][0]["correct"] for r in records if r["candidates"]) / len(records),
                f"eval/{name}/{method}/problems_per_s": len(records) / seconds,
                f"eval/{name}/{method}/done": len(writer.done)})
