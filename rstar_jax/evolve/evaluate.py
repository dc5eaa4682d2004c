"""A round's evaluation on the test sets: greedy pass@1 on every problem, the search methods (MCTS
with policy + PPM) on the first problems of each set beside greedy's score there, and the PPM's
accuracy on held-out pairs, in all and by kind of pair."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from rstar_jax.config import EvalConfig, EvolveConfig
from rstar_jax.data import records
from rstar_jax.data.curriculum import operation_counts
from rstar_jax.data.problems import Problem
from rstar_jax.evaluation.methods import Models
from rstar_jax.evaluation.reporting import summarize
from rstar_jax.evaluation.results import MERGED
from rstar_jax.evaluation.run import evaluate_sets


def ranked_right(scorer, pairs: Sequence[records.PreferencePair]) -> np.ndarray:
    """bool per pair: the PPM scores its chosen continuation above the rejected one. Scored from an
    empty prefix pool, so the figure does not hang on what the scorer ran before (a resumed run's
    evaluation skips the batches it had finished)."""
    if not pairs:
        return np.zeros(0, bool)
    scorer.forget_prefixes()
    raw, _ = scorer.score([p.prompt + p.pos for p in pairs] + [p.prompt + p.neg for p in pairs],
                          [len(p.prompt) for p in pairs] * 2)
    return np.asarray(raw[:len(pairs)] > raw[len(pairs):], bool)


def accuracy_by_kind(pairs: Sequence[records.PreferencePair], right: np.ndarray) -> dict[str, list[float]]:
    """kind (`records.pair_kind`) -> [share ranked right, pairs], for the kinds present."""
    kinds = np.array([records.pair_kind(p) for p in pairs])
    return {kind: [float(right[of_kind].mean()), int(of_kind.sum())]
            for kind in records.PAIR_KINDS if (of_kind := kinds == kind).any()}


SUBSET_GREEDY = "greedy_search_problems"  # greedy on the test problems the other methods ran on
MAJORITY = "best_of_n_majority"  # majority vote over best-of-n's samples


def evaluate_round(eval_dir: str, test_sets: dict[str, list[Problem]], config: EvolveConfig,
                   policy_dir: str, ppm_dir: str | None, heldout_file: str | None, *,
                   search_methods: bool = True) -> dict[str, Any]:
    """Greedy pass@1 per test set, and the other methods (MCTS) when there is a PPM and
    `search_methods`.

    Greedy runs on every test problem (up to `evaluation.max_problems`); the other methods on the
    first `config.search_eval_problems` of each set. When those are fewer, greedy's score on them
    is reported too, as "greedy_search_problems" (the comparison of target (d)).
    """
    from rstar_jax.evolve.models import model_stack  # the model stack, only where models run

    evaluation = config.evaluation
    scored = tuple(m for m in evaluation.methods if m != "greedy") if ppm_dir and search_methods else ()
    head = min((n for n in (evaluation.max_problems, config.search_eval_problems) if n > 0), default=0)
    with model_stack(config, policy_dir, ppm_dir) as stack:
        models = Models(policy=stack.policy, executor=stack.executor, ppm=stack.ppm,
                        tokenizer=stack.tokenizer, search=config.eval_search, mesh=stack.mesh)
        rows = []
        if "greedy" in evaluation.methods:
            rows += evaluate_sets(eval_dir, test_sets, models, dataclasses.replace(evaluation, methods=("greedy",)))
        if scored:
            rows += evaluate_sets(os.path.join(eval_dir, "search_problems"), test_sets, models,
                                  dataclasses.replace(evaluation, max_problems=head, methods=scored))
        heldout = records.read_pairs(heldout_file) if stack.ppm is not None and heldout_file else []
        right = ranked_right(stack.ppm, heldout)
    greedy = ({name: records.read_jsonl(os.path.join(eval_dir, name, "greedy", MERGED)) for name in test_sets}
              if "greedy" in evaluation.methods else {})
    if scored and head != evaluation.max_problems:
        rows += greedy_on_head(greedy, head, evaluation)
    accuracy: dict[str, dict[str, float]] = {}  # method -> set -> %
    problems: dict[str, dict[str, int]] = {}  # method -> set -> problems it was measured on
    for row in rows:
        methods = [(row["method"], row["accuracy"])]
        if row["method"] == "best_of_n":  # the majority vote over the same samples, for the report
            methods.append((MAJORITY, row["metrics"].get(f"maj@{row['k']}")))
        for method, value in methods:
            accuracy.setdefault(method, {})[row["set"]] = value
            problems.setdefault(method, {})[row["set"]] = row["problems"]
    greedy_steps = {name: records.step_counts(("".join(r["candidates"][0]["steps"]), r["candidates"][0]["correct"])
                                              for r in recs) for name, recs in greedy.items()}
    graded = {name: operation_counts((r["question"], "".join(r["candidates"][0]["steps"])) for r in recs)
              for name, recs in greedy.items()}
    return {"accuracy": accuracy, "problems": problems,
            "ppm_heldout_accuracy": float(right.mean()) if heldout else None,
            "ppm_heldout_pairs_scored": len(heldout), "ppm_heldout_by_kind": accuracy_by_kind(heldout, right),
            "greedy_steps": greedy_steps,
            "greedy_operations": {name: counts.right for name, counts in graded.items()},
            "greedy_comments": {name: counts.copied for name, counts in graded.items()}}


def greedy_on_head(greedy: dict[str, list[dict[str, Any]]], head: int, evaluation: EvalConfig) -> list[dict[str, Any]]:
    """Summary rows (method SUBSET_GREEDY) of greedy's records, in problem order, cut to each set's
    first `head` problems: greedy is deterministic, so running it again there gives the same."""
    return [dict(summarize(name, "greedy", recs[:head], evaluation.ks, evaluation.top_n, evaluation.paper_round),
                 method=SUBSET_GREEDY) for name, recs in greedy.items()]
