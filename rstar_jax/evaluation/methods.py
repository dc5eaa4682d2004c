"""Evaluation methods: each turns a batch of problems into candidate solutions per problem.

greedy     one temperature-0 solution (the original's `sft_eval_greedy`), pass@1
sample     `num_samples` sampled solutions: maj@k and pass@k
best_of_n  sampled solutions ranked by the PPM (per-step min, last step or mean)
mcts       `num_runs` evaluation-mode MCTS searches with distinct seeds, one answer per run (the
           answer leaf with the highest PPM value, spec §3.7); the metrics combine the runs by
           top-K vote, PPM-weighted vote and pass@n
beam       `num_runs` step-level beam searches (spec §3.8), one answer per run, combined alike
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from rstar_jax.config import EvalConfig, SearchConfig
from rstar_jax.data.problems import Problem, stream_id
from rstar_jax.evaluation import metrics
from rstar_jax.evaluation.results import Candidate
from rstar_jax.evaluation.solutions import chat_solutions, rstar_solutions
from rstar_jax import steps as sf
from rstar_jax.search.beam import run_beam_search
from rstar_jax.search.driver import StepGenerator, run_mcts


class Policy(StepGenerator, Protocol):
    """The Sampler interface the methods run on, and the prefix pool the evaluation empties per batch."""

    def forget_prefixes(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class Models:
    """What the methods run on: a policy with the Sampler interface, and what some methods add."""

    policy: Policy
    executor: Any  # rstar_jax.verify.executor.Executor
    ppm: Any = None  # rstar_jax.inference.scorer.PPMScorer: best_of_n, mcts, beam
    tokenizer: Any = None  # chat prompts
    search: Any = None  # rstar_jax.config.SearchConfig: mcts, beam
    mesh: Any = None  # jax.sharding.Mesh the search trees are sharded over

    def forget_prefixes(self) -> None:
        """Empties the policy's and the PPM's prefix pools (`Sampler.forget_prefixes`)."""
        self.policy.forget_prefixes()
        if self.ppm is not None:
            self.ppm.forget_prefixes()


def greedy(problems: Sequence[Problem], models: Models, config: EvalConfig) -> list[list[Candidate]]:
    return _solutions(problems, models, config, num_samples=1, greedy=True)


def sample(problems: Sequence[Problem], models: Models, config: EvalConfig) -> list[list[Candidate]]:
    return _solutions(problems, models, config, num_samples=config.num_samples)


def best_of_n(problems: Sequence[Problem], models: Models, config: EvalConfig) -> list[list[Candidate]]:
    """Sampled solutions with PPM scores: each step prefix scored, reduced by `config.step_score`."""
    _require(models.ppm, "best_of_n needs a PPM (ppm_path)")
    solutions = sample(problems, models, config)
    texts, step_starts, owners = [], [], []
    for p, (problem, candidates) in enumerate(zip(problems, solutions, strict=True)):
        for c, candidate in enumerate(candidates):
            if candidate.answer is None:
                continue  # never ranked, no need to score
            steps = split_steps(candidate.steps)
            for i, step in enumerate(steps):
                text, step_start = sf.scored_step(problem.question, "".join(steps[:i]), step)
                texts.append(text)
                step_starts.append(step_start)
            owners += [(p, c)] * len(steps)
    _, values = models.ppm.score(texts, step_starts) if texts else (None, [])
    step_values: dict[tuple[int, int], list[float]] = {}
    for owner, value in zip(owners, values, strict=True):
        step_values.setdefault(owner, []).append(float(value))
    return [
        [dataclasses.replace(cand, step_scores=tuple(step_values[(p, c)]),
                             score=metrics.reduce_step_scores(step_values[(p, c)], config.step_score))
         if (p, c) in step_values else cand for c, cand in enumerate(candidates)]
        for p, candidates in enumerate(solutions)
    ]


def mcts(problems: Sequence[Problem], models: Models, config: EvalConfig) -> list[list[Candidate]]:
    """`config.num_runs` evaluation-mode MCTS runs (seeds search.seed + r), one answer per run."""
    if models.search is not None:
        check_evaluation_search(models.search)
    return _search_runs(run_mcts, problems, models, config)


def check_evaluation_search(search: SearchConfig) -> None:
    """Fails on an MCTS that would reward its answers against the gold answers (data generation's
    `ground_truth_rewards`): its pick would be any right leaf of the tree, pass@n, not the PPM's."""
    if search.ground_truth_rewards:
        raise ValueError("search evaluation: SearchConfig.ground_truth_rewards must be False (the gold "
                         "answers would pick the MCTS's answer); SearchConfig.evaluation() sets it")


def beam(problems: Sequence[Problem], models: Models, config: EvalConfig) -> list[list[Candidate]]:
    """`config.num_runs` step beam searches, one answer (the best-valued) per run."""
    return _search_runs(run_beam_search, problems, models, config)


def _search_runs(search_fn, problems, models: Models, config: EvalConfig) -> list[list[Candidate]]:
    _require(models.ppm, "search evaluation needs a PPM (ppm_path): it scores the answers")
    _require(models.search, "search evaluation needs a SearchConfig")
    candidates: list[list[Candidate]] = [[] for _ in problems]
    for run in range(config.num_runs):
        search_config = dataclasses.replace(models.search, seed=models.search.seed + run)
        result = search_fn(problems, models.policy, models.ppm, search_config, models.executor, mesh=models.mesh,
                           progress=False)
        for b in range(len(problems)):
            candidates[b].append(_run_answer(result, b, run))
    return candidates


def _run_answer(result, b: int, run: int) -> Candidate:
    """The run's answer: the answer leaf with the highest Q (its PPM score, spec §3.7)."""
    best = result.best_answer_node(b)
    others = tuple(dict.fromkeys(
        result.nodes[b][i].answer for i in result.answer_nodes(b) if i != best and result.nodes[b][i].answer))
    if best < 0:
        return Candidate(answer=None, steps=(), finish="no_answer", run=run, leaf_answers=others)
    trajectory = result.tree(b).trajectory(best)
    return Candidate(
        answer=trajectory.answer, steps=trajectory.steps, finish="answer", score=trajectory.q_values[-1],
        step_scores=trajectory.values, run=run, leaf_answers=others,
    )


def split_steps(steps: Sequence[str]) -> list[str]:
    """Reasoning steps of a solution: generated chunks cut after each `<end_of_step>` (spec §2.2)."""
    pieces = re.compile(f"(?<={re.escape(sf.STEP_END)})")
    return [piece for step in steps for piece in pieces.split(step) if piece]


def _solutions(problems, models: Models, config: EvalConfig, *, num_samples: int, greedy: bool = False):
    """Whole solutions sampled as `config.sampling` says; greedy at temperature 0."""
    questions = [p.question for p in problems]
    streams = [stream_id(p.source, p.index) for p in problems]  # a problem's samples, whatever its batch
    sampling = dataclasses.replace(config.sampling, temperature=0.0) if greedy else config.sampling
    if config.prompt_format == "chat":  # one free-form call: no stop strings
        _require(models.tokenizer, "chat prompts need the policy's tokenizer")
        return chat_solutions(questions, models.policy, models.tokenizer, dataclasses.replace(sampling, stop=()),
                              num_samples=num_samples, seed=config.seed, streams=streams)
    return rstar_solutions(questions, models.policy, models.executor, sampling, num_samples=num_samples,
                           max_depth=config.max_depth, seed=config.seed, streams=streams)


def _require(value: Any, message: str) -> None:
    if value is None:
        raise ValueError(message)


METHOD_FNS: dict[str, Callable[[Sequence[Problem], Models, EvalConfig], list[list[Candidate]]]] = {
    "greedy": greedy, "sample": sample, "best_of_n": best_of_n, "mcts": mcts, "beam": beam,
}
