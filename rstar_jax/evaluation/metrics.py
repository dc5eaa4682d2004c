"""Pure accuracy metrics over one problem's candidate answers (no model, no I/O).

A problem's candidates are given in generation order (sample i, or run i for MCTS). Votes work on
answer clusters (answers that grade as equivalent share a cluster id); candidates without a valid
answer have cluster None and never win a vote. Ties in every vote and ranking go to the candidate
generated first, so results are deterministic (the original breaks vote ties at random, spec §3.7).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

STEP_REDUCTIONS = ("min", "last", "mean")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def cluster_answers(
    answers: Sequence[str | None], equivalent: Callable[[str, str], bool]
) -> list[int | None]:
    """Cluster ids (first-appearance order) grouping answers that `equivalent` says are the same.

    An answer joins the first cluster whose first member it is equivalent to; equal strings never
    call `equivalent`. None (no answer) stays unclustered.
    """
    representatives: list[str] = []
    clusters: list[int | None] = []
    for answer in answers:
        if answer is None:
            clusters.append(None)
            continue
        match = next(
            (c for c, rep in enumerate(representatives) if rep == answer or equivalent(answer, rep)), None
        )
        if match is None:
            representatives.append(answer)
            match = len(representatives) - 1
        clusters.append(match)
    return clusters


def majority_vote(clusters: Sequence[int | None]) -> int | None:
    """Index of the first candidate of the most frequent cluster (ties: the earliest cluster)."""
    return weighted_vote(clusters, [1.0] * len(clusters))


def weighted_vote(clusters: Sequence[int | None], weights: Sequence[float]) -> int | None:
    """Index of the first candidate of the cluster with the largest weight sum (ties: earliest)."""
    totals: dict[int, float] = {}
    first: dict[int, int] = {}
    for i, (cluster, weight) in enumerate(zip(clusters, weights, strict=True)):
        if cluster is not None:
            totals[cluster] = totals.get(cluster, 0.0) + weight
            first.setdefault(cluster, i)
    if not totals:
        return None
    best = max(totals, key=lambda c: (totals[c], -first[c]))
    return first[best]


def top_k_by_score(scores: Sequence[float | None], k: int) -> list[int]:
    """Indices of the k highest-scored candidates, best first (ties: earliest; None never ranks)."""
    ranked = sorted((i for i, s in enumerate(scores) if s is not None), key=lambda i: (-scores[i], i))
    return ranked[:k]


def reduce_step_scores(step_scores: Sequence[float], how: str) -> float:
    """One trajectory score from its per-step PPM values: their min, the last one, or the mean."""
    if not step_scores:
        raise ValueError("a trajectory needs at least one step score")
    if how == "min":
        return min(step_scores)
    if how == "last":
        return step_scores[-1]
    if how == "mean":
        return sum(step_scores) / len(step_scores)
    raise ValueError(f"step score reduction must be one of {STEP_REDUCTIONS}, got {how!r}")


def problem_metrics(
    correct: Sequence[bool],
    clusters: Sequence[int | None],
    scores: Sequence[float | None] | None,
    ks: Sequence[int],
    top_n: int,
    leaf_correct: Sequence[bool] | None = None,
) -> dict[str, float]:
    """Every metric of one problem, for each k in ks (k <= number of candidates).

    pass@k is the unbiased estimate over all n candidates; maj@k votes over the first k. With
    scores: best@k takes the highest-scored of the first k; weighted@k is the score-weighted vote;
    top{top_n}_maj@k / top{top_n}_weighted@k vote over the top_n highest-scored of the first k
    (the paper's "majority vote on the top-K highest-reward trajectories", spec §3.7).
    With `leaf_correct` (search runs: any answer in the run's tree is right), leaf_pass@k says
    whether any of the first k runs found a right answer at all.
    """
    n = len(correct)
    metrics: dict[str, float] = {}
    for k in (k for k in ks if k <= n):
        metrics[f"pass@{k}"] = pass_at_k(n, sum(correct), k)
        metrics[f"maj@{k}"] = _is_correct(correct, majority_vote(clusters[:k]))
        if leaf_correct is not None:
            metrics[f"leaf_pass@{k}"] = float(any(leaf_correct[:k]))
        if scores is None:
            continue
        # Only candidates with a valid answer compete on score.
        first_k = [s if c is not None else None for s, c in zip(scores[:k], clusters[:k], strict=True)]
        best = top_k_by_score(first_k, 1)
        metrics[f"best@{k}"] = float(bool(best) and correct[best[0]])
        metrics[f"weighted@{k}"] = _is_correct(correct, weighted_vote(clusters[:k], _weights(first_k)))
        top = top_k_by_score(first_k, top_n)
        top_clusters = [clusters[i] for i in top]
        metrics[f"top{top_n}_maj@{k}"] = _is_correct(correct, _pick(top, majority_vote(top_clusters)))
        metrics[f"top{top_n}_weighted@{k}"] = _is_correct(
            correct, _pick(top, weighted_vote(top_clusters, _weights([first_k[i] for i in top])))
        )
    return metrics


def _weights(scores: Sequence[float | None]) -> list[float]:
    return [0.0 if s is None else s for s in scores]


def _pick(indices: Sequence[int], position: int | None) -> int | None:
    return None if position is None else indices[position]


def _is_correct(correct: Sequence[bool], index: int | None) -> float:
    return float(index is not None and correct[index])
