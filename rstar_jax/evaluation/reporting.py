"""Summaries of graded results: metric means per benchmark x method, the paper's number beside
ours (spec §1.3 tables), markdown + JSON tables and the accuracy-vs-samples plot (paper Fig. 6).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from rstar_jax.evaluation import metrics
from rstar_jax.evaluation.results import write_text

# Paper columns (spec §1.3), keyed by a pattern on our set names. The paper's MATH column is the
# MATH500 subset, so the 5000-problem MATH_test has no paper number.
BENCHMARKS = {
    "MATH": r"^math500", "AIME": r"^aime", "AMC": r"^amc", "Olympiad": r"^olympiad", "College": r"^college",
    "GSM8K": r"^gsm8k", "Gaokao": r"^gaokao", "Omni": r"^omni",
}
_COLUMNS = ("MATH", "AIME", "AMC", "Olympiad", "College", "GSM8K", "Gaokao")
# Table 3: policy SLM alone, greedy pass@1.
TABLE3_GREEDY = {
    f"SLM-r{r}": dict(zip(_COLUMNS, row)) for r, row in enumerate((
        (69.6, 3.3, 30.0, 34.7, 44.5, 88.4, 57.4), (73.6, 10.0, 35.0, 39.0, 45.7, 89.1, 59.7),
        (75.8, 16.7, 45.0, 44.1, 49.6, 89.3, 62.8), (78.4, 26.7, 47.5, 47.1, 52.5, 89.7, 65.7)), start=1)
}
# Table 6: SLM-rk + PPM-rk with MCTS (one search, 8 trajectories; 16 for AIME / AMC).
TABLE6_MCTS = {
    f"Round {r}": dict(zip(_COLUMNS, row)) for r, row in enumerate((
        (75.2, 10.0, 57.5, 35.7, 45.4, 90.9, 60.3), (86.6, 43.3, 75.0, 59.4, 55.6, 94.0, 76.4),
        (87.0, 46.7, 80.0, 61.6, 56.5, 94.2, 77.1), (89.4, 50.0, 87.5, 65.3, 59.0, 95.0, 80.5)), start=1)
}
# Table 1: final system (round 4, Qwen2.5-Math-7B), vote over 64 trajectories.
TABLE1_64 = {"MATH": 90.0, "AIME": 53.3, "Olympiad": 65.6, "College": 60.5, "Omni": 50.5}

# The metric each method is judged by ("<search>_runs": several search runs; k: the candidates per problem).
HEADLINE = {"greedy": "pass@1", "sample": "maj@{k}", "best_of_n": "best@{k}", "mcts": "best@1", "beam": "best@1",
            "mcts_runs": "top{top_n}_maj@{k}", "beam_runs": "top{top_n}_maj@{k}"}


# Methods whose candidates carry a PPM score (None for a candidate without a valid answer).
SCORED_METHODS = ("best_of_n", "mcts", "beam")


def benchmark_of(set_name: str) -> str | None:
    """The paper's column for one of our set names, e.g. "math500_test" -> "MATH"."""
    return next((b for b, pattern in BENCHMARKS.items() if re.match(pattern, set_name, re.IGNORECASE)), None)


def paper_reference(method: str, set_name: str, paper_round: int) -> tuple[float | None, str]:
    """(the paper's accuracy in %, where it comes from) for a method on a set, or (None, "")."""
    benchmark = benchmark_of(set_name)
    if method == "greedy":
        row = f"SLM-r{paper_round}"
        number, source = TABLE3_GREEDY.get(row, {}).get(benchmark), f"Table 3 {row} (greedy)"
    elif method == "mcts":
        row = f"Round {paper_round}"
        number, source = TABLE6_MCTS.get(row, {}).get(benchmark), f"Table 6 {row} (MCTS, 8/16 trajectories)"
    elif method == "mcts_runs" and paper_round == 4:
        number, source = TABLE1_64.get(benchmark), "Table 1 rStar-Math Qwen-7B (64 trajectories)"
    else:
        number = None
    return (number, source) if number is not None else (None, "")


def headline_metric(method: str, num_candidates: int, top_n: int) -> str:
    return HEADLINE[method].format(k=num_candidates, top_n=top_n)


def summarize(
    set_name: str, method: str, records: Sequence[dict[str, Any]], ks: Sequence[int], top_n: int,
    paper_round: int,
) -> dict[str, Any]:
    """Mean of every metric over the problems of one set, the headline number and the paper's.

    Besides `ks`, every metric is also taken at k = the candidates per problem, so that the
    headline judges all of them (e.g. four MCTS runs under ks = (1, 8)).
    """
    num_candidates = min((len(r["candidates"]) for r in records), default=0)
    ks = sorted({*ks, num_candidates} - {0})
    per_problem = []
    for record in records:
        cands = record["candidates"]
        scores = [c["score"] for c in cands] if method in SCORED_METHODS else None
        leaf_correct = [c["leaf_correct"] for c in cands] if all("leaf_correct" in c for c in cands) else None
        per_problem.append(metrics.problem_metrics(
            [c["correct"] for c in cands], [c["cluster"] for c in cands], scores, ks, top_n, leaf_correct))
    names = sorted(set.intersection(*(set(m) for m in per_problem))) if per_problem else []
    means = {name: 100.0 * sum(m[name] for m in per_problem) / len(per_problem) for name in names}
    kind = f"{method}_runs" if method in ("mcts", "beam") and num_candidates > 1 else method
    k = max(num_candidates, 1)  # the headline's k
    headline = headline_metric(kind, k, top_n)
    paper, paper_source = paper_reference(kind, set_name, paper_round)
    return {
        "set": set_name, "method": method, "problems": len(records), "candidates": num_candidates,
        "k": k, "headline": headline, "accuracy": means.get(headline), "paper": paper, "paper_source": paper_source,
        "metrics": means,
    }


def write_summary(workdir: str, rows: Sequence[dict[str, Any]]) -> None:
    """`summary.json` and `summary.md` in the workdir (atomic writes)."""
    write_text(os.path.join(workdir, "summary.json"), json.dumps(list(rows), indent=1) + "\n")
    lines = ["| set | method | problems | metric | ours (%) | paper (%) | paper source |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ours = "-" if r["accuracy"] is None else f"{r['accuracy']:.1f}"
        paper = "-" if r["paper"] is None else f"{r['paper']:.1f}"
        lines.append(f"| {r['set']} | {r['method']} | {r['problems']} | {r['headline']} | {ours} | {paper} "
                     f"| {r['paper_source'] or '-'} |")
    write_text(os.path.join(workdir, "summary.md"), "\n".join(lines) + "\n")


def plot_accuracy_vs_k(path: str, summary: dict[str, Any]) -> bool:
    """Accuracy vs number of sampled solutions for each metric family; False when there is one k."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for name, value in summary["metrics"].items():
        family, k = name.rsplit("@", 1)
        curves.setdefault(family, []).append((int(k), value))
    if not any(len(points) > 1 for points in curves.values()):
        return False
    fig = Figure(figsize=(6, 4))  # no pyplot: no global backend state
    ax = fig.subplots()
    for family, points in sorted(curves.items()):
        ks, values = zip(*sorted(points))
        ax.plot(ks, values, marker="o", label=family)
    ax.set_xscale("log", base=2)
    all_ks = sorted({k for points in curves.values() for k, _ in points})
    ax.set_xticks(all_ks, [str(k) for k in all_ks])
    ax.set_xlabel("number of sampled solutions")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{summary['set']} / {summary['method']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    return True
