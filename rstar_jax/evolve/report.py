"""The run's report: one row per finished round (coverage, records, PPM accuracy, test accuracy
with 95% intervals, seconds per stage, the machines it ran on) and the run's targets
(`EvolveConfig.targets`) with whether each is met, as report.json, report.md and accuracy.png."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from scipy.stats import binomtest

from rstar_jax.config import Targets
from rstar_jax.data.records import write_json_atomic
from rstar_jax.evolve.evaluate import MAJORITY, SUBSET_GREEDY
from rstar_jax.evolve.runner import Manifest


def round_rows(manifest: Manifest, num_rounds: int) -> list[dict[str, Any]]:
    """One row per finished round (round 0 = bootstrap policy), in the shape of Tables 2, 3, 6."""
    rows = []
    for r in range(num_rounds + 1):
        evaluation = manifest.stages.get(f"round{r}/evaluate")
        if evaluation is None:
            break
        extract = manifest.stages.get(f"round{r}/extract", {}).get("result", {})
        rows.append({
            "round": r,
            "coverage": extract.get("coverage"), "coverage_all": extract.get("coverage_all"),
            "sft_records": extract.get("sft_records"), "ppm_pairs": extract.get("ppm_pairs"),
            "ppm_train_pairs": extract.get("ppm_train_pairs"),
            "ppm_heldout_pool_pairs": extract.get("ppm_heldout_pool_pairs"),
            "search_steps": extract.get("search_steps"), "sft_operations": extract.get("sft_operations"),
            "sft_comments": extract.get("sft_comments"),
            "not_trained": {stage: result.get("reason") for stage in ("policy", "ppm")
                            if isinstance(result := manifest.stages.get(f"round{r}/{stage}", {}).get("result"), dict)
                            and not result.get("trained", True)},
            **evaluation["result"],
            "seconds": manifest.seconds(f"round{r}/"), "resumed": manifest.resumed(f"round{r}/"),
            "machines": manifest.machines(f"round{r}/"),
        })
    return rows


def _mean(values: dict[str, float] | None) -> float | None:
    values = [v for v in (values or {}).values() if v is not None]
    return sum(values) / len(values) if values else None


def interval(accuracy: float | None, problems: int | None) -> tuple[float, float] | None:
    """The 95% Wilson interval (in %) of an accuracy (in %) measured on `problems` problems."""
    if accuracy is None or not problems:
        return None
    ci = binomtest(round(accuracy * problems / 100), problems).proportion_ci(0.95, method="wilson")
    return 100 * ci.low, 100 * ci.high


def _accuracy(row: dict[str, Any], method: str, problem_set: str | None = None) -> str:
    """A row's accuracy of one method on one set (None: the mean over sets) with its 95% interval;
    the mean's interval pools the sets' problems (exact when the sets are equally large)."""
    accuracy, counts = row["accuracy"].get(method) or {}, (row.get("problems") or {}).get(method) or {}
    if problem_set is None:
        value, n = _mean(accuracy), sum(counts.get(s, 0) for s, v in accuracy.items() if v is not None)
    else:
        value, n = accuracy.get(problem_set), counts.get(problem_set)
    if value is None:
        return "-"
    bounds = interval(value, n)
    return f"{value:.1f}" + (f" ({bounds[0]:.0f}-{bounds[1]:.0f})" if bounds else "")


def _pct(x: float | None, scale: float = 1.0) -> str:
    return "-" if x is None else f"{x * scale:.1f}"


def _count(n: int | None) -> str:
    return "-" if n is None else str(n)


@dataclasses.dataclass(frozen=True)
class Target:
    """One of the run's targets checked on the round rows; `met` is None when too few rounds (or
    sets) were run to tell. `detail` gives the numbers, and by how much a missed target misses."""

    name: str
    met: bool | None
    detail: str

    def markdown(self) -> str:
        verdict = {True: "met", False: "not met", None: "n/a"}[self.met]
        return f"- {self.name}: {verdict} ({self.detail})"


def _rounds(values: Sequence[tuple[int, float]], scale: float = 1.0, sign: str = "") -> str:
    return ", ".join(f"round {r} {v * scale:{sign}.1f}" for r, v in values) or "none"


def _not_in(rounds: Sequence[int], what: str) -> str:
    return f"; {what} in round{'s' if len(rounds) > 1 else ''} {', '.join(map(str, rounds))}" if rounds else ""


def _greedy(row: dict[str, Any], problem_set: str | None = None) -> float | None:
    """A row's greedy pass@1: the mean over sets, or on one set."""
    greedy = row["accuracy"].get("greedy") or {}
    return _mean(greedy) if problem_set is None else greedy.get(problem_set)


def _search_baseline(row: dict[str, Any]) -> float | None:
    """Greedy mean on the problems MCTS ran on (rows without that: on all test problems)."""
    subset = _mean(row["accuracy"].get(SUBSET_GREEDY))
    return _greedy(row) if subset is None else subset


def targets(rows: Sequence[dict[str, Any]], goals: Targets) -> list[Target]:
    """The targets that `goals` sets, checked on `round_rows` (accuracy in %, coverage and PPM
    accuracy as fractions), in the order of `Targets`' fields."""
    out = []
    first, last = (rows[0], rows[-1]) if len(rows) > 1 else ({"accuracy": {}}, {"accuracy": {}})
    if goals.coverage_rises:
        coverage = [(row["round"], row["coverage_all"]) for row in rows if row.get("coverage_all") is not None]
        flat = [r for (_, a), (r, b) in zip(coverage, coverage[1:]) if b <= a]
        out.append(Target("training coverage rises every round", None if len(coverage) < 2 else not flat,
                          "coverage %: " + _rounds(coverage, 100) + _not_in(flat, "no rise")))

    if goals.greedy_rise is not None:
        name = f"greedy pass@1 mean rises >= {goals.greedy_rise:g} points from round 0"
        before, after = _greedy(first), _greedy(last)
        if before is None or after is None:
            out.append(Target(name, None, "needs round 0 and a later round"))
        else:
            rise = after - before
            short = f", {goals.greedy_rise - rise:.1f} short" if rise < goals.greedy_rise else ""
            out.append(Target(name, rise >= goals.greedy_rise,
                              f"round 0 {before:.1f} -> round {last['round']} {after:.1f}: {rise:+.1f}{short}"))

    if goals.hardest_rise is not None:
        bootstrap = rows[0]["accuracy"].get("greedy") or {} if rows else {}
        hardest = sorted(bootstrap, key=lambda s: (bootstrap[s], _set_order(s)))[:goals.hardest_sets]
        rises, parts = [], []
        for s in hardest:
            before, after = _greedy(first, s), _greedy(last, s)
            rises.append(None if before is None or after is None else after - before)
            parts.append(f"{s} not evaluated" if rises[-1] is None else f"{s} {before:.1f} -> {after:.1f} ({rises[-1]:+.1f})")
        name = (f"greedy pass@1 rises >= {goals.hardest_rise:g} points on each of the {goals.hardest_sets} "
                "test sets hardest for round 0")
        out.append(Target(name, None if None in rises or not rises else all(x >= goals.hardest_rise for x in rises),
                          "; ".join(parts) or "needs round 0"))

    searched = [row for row in rows if row["round"] >= goals.search_from_round]
    since = f"in round {goals.search_from_round} and later"
    if goals.search_margin is not None:
        margins = [(row["round"], mcts - greedy) for row in searched
                   if (mcts := _mean(row["accuracy"].get("mcts"))) is not None
                   and (greedy := _search_baseline(row)) is not None]
        behind = [r for r, m in margins if m < goals.search_margin]
        out.append(Target(f"MCTS + PPM beats greedy by >= {goals.search_margin:g} points on the same problems {since}",
                          not behind if margins else None,
                          "MCTS - greedy points: " + _rounds(margins, sign="+") + _not_in(behind, "short")))
    if goals.best_of_n_over_majority:
        margins = [(row["round"], best - vote) for row in searched
                   if (best := _mean(row["accuracy"].get("best_of_n"))) is not None
                   and (vote := _mean(row["accuracy"].get(MAJORITY))) is not None]
        behind = [r for r, m in margins if m <= 0]
        out.append(Target(f"PPM-ranked best-of-n beats the majority vote over the same samples {since}",
                          not behind if margins else None,
                          "best-of-n - majority points: " + _rounds(margins, sign="+") + _not_in(behind, "not ahead")))

    if goals.ppm_accuracy is not None:
        name = f"the last round's PPM scores >= {goals.ppm_accuracy:.2f} on >= {goals.ppm_pairs} held-out pairs"
        accuracy, pairs = rows[-1].get("ppm_heldout_accuracy") if rows else None, rows[-1].get("ppm_heldout_pairs_scored") if rows else None
        if accuracy is None:
            out.append(Target(name, None, "no PPM measured in the last round"))
        else:
            out.append(Target(name, accuracy >= goals.ppm_accuracy and (pairs or 0) >= goals.ppm_pairs,
                              f"round {rows[-1]['round']}: {accuracy:.2f} on {_count(pairs)} pairs"))

    if goals.minutes is not None:
        minutes = sum(sum(row["seconds"].values()) for row in rows) / 60
        detail = f"{minutes:.1f} minutes over rounds 0-{rows[-1]['round'] if rows else '-'}"
        # A resumed stage's seconds time its last try only: the run took longer than they add up to.
        resumed = [f"round {row['round']} {stage}" for row in rows for stage in row.get("resumed", ())]
        met = minutes <= goals.minutes if rows else None
        if resumed:
            detail += f" counted; {', '.join(resumed)} resumed after a kill, earlier tries not timed"
            met = False if met is False else None
        out.append(Target(f"all stages take <= {goals.minutes:g} minutes", met, detail))
    return out


def _set_order(name: str) -> tuple[int, str]:
    return len(name), name  # level2 before level10


def _format_counts(by_set: dict[str, dict[str, list[int]]]) -> str:
    return "; ".join(f"{name} " + ", ".join(f"{n}: {c}/{a}" for n, (c, a) in counts.items())
                     for name, counts in sorted(by_set.items(), key=lambda kv: _set_order(kv[0])) if counts)


def _counts_section(rows: Sequence[dict[str, Any]], title: str, sources: tuple[tuple[str, str], ...]) -> list[str]:
    """A report section of [correct, all] counts per set: one line per round and (label, row key)
    in `sources` that counted anything; no section when none did."""
    found = [f"- round {row['round']} {label}: {_format_counts(row[key])}" for row in rows
             for label, key in sources if any((row.get(key) or {}).values())]
    return ["", title, ""] + found if found else []


def _machines_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Where the rounds ran (`hosts.machine`): one line for one machine, else a line per round
    and machine with the stages it ran."""
    machines = list(dict.fromkeys(m for row in rows for m in (row.get("machines") or {}).values()))
    if len(machines) < 2:
        return ["", f"Ran on {machines[0]}."] if machines else []
    lines = ["", "Ran on several machines (round, stages: machine):", ""]
    for row in rows:
        stages: dict[str, list[str]] = {}
        for stage, machine in (row.get("machines") or {}).items():
            stages.setdefault(machine, []).append(stage)
        lines += [f"- round {row['round']} {', '.join(names)}: {machine}" for machine, names in stages.items()]
    return lines


def report_markdown(rows: Sequence[dict[str, Any]], goals: Targets = Targets()) -> str:
    """Coverage, records, PPM accuracy and test accuracy (with 95% intervals) per round, the
    machines, the targets, coverage per set, the PPM's accuracy by kind of pair, code steps per
    solution, steps by operation (curriculum stories), then time per stage."""
    sets = sorted({s for row in rows for m in row["accuracy"].values() for s in m}, key=_set_order)
    searched = [m for m in ("mcts", "best_of_n", MAJORITY) if any(row["accuracy"].get(m) for row in rows)]
    names = {"mcts": "MCTS", "best_of_n": "best-of-n", MAJORITY: "majority"}
    head = ["round", "coverage % (all)", "SFT records", "PPM pairs (new / trained on)", "PPM held-out acc % (pairs)"]
    head += [f"greedy {s}" for s in sets] + ["greedy mean"]
    head += [f"{names[m]} mean" for m in searched] + (["greedy mean on their problems"] if searched else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row["round"]), _pct(row["coverage_all"], 100), _count(row["sft_records"]),
                 f"{_count(row['ppm_pairs'])} / {_count(row.get('ppm_train_pairs'))}",
                 f"{_pct(row['ppm_heldout_accuracy'], 100)} ({_count(row.get('ppm_heldout_pairs_scored'))})"]
        cells += [_accuracy(row, "greedy", s) for s in sets] + [_accuracy(row, "greedy")]
        cells += [_accuracy(row, m) for m in searched]
        if searched:
            ran = any(row["accuracy"].get(m) for m in searched)
            cells.append(_accuracy(row, SUBSET_GREEDY) if row["accuracy"].get(SUBSET_GREEDY) else
                         _accuracy(row, "greedy") if ran else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Accuracy in %, with the 95% Wilson interval in brackets; the search methods run on the "
              "first problems of each test set."]
    lines += _machines_section(rows)
    skipped = [f"- round {row['round']}: no {stage} trained, the previous one carried forward ({reason})"
               for row in rows for stage, reason in (row.get("not_trained") or {}).items()]
    if skipped:
        lines += ["", "Rounds that trained nothing:", ""] + skipped
    checked = targets(rows, goals)
    if checked:
        lines += ["", "Targets:", ""] + [t.markdown() for t in checked]
    lines += ["", "Coverage of the training problems each round searched, per set (%):", ""]
    for row in rows:
        if row["coverage"]:
            lines.append(f"- round {row['round']}: " + ", ".join(
                f"{s} {100 * v:.1f}" for s, v in sorted(row["coverage"].items(), key=lambda kv: _set_order(kv[0]))))
    by_kind = [(row["round"], row["ppm_heldout_by_kind"]) for row in rows if row.get("ppm_heldout_by_kind")]
    if by_kind:
        lines += ["", "The PPM's held-out accuracy by kind of pair, % (pairs): step, two continuations of the same "
                  "steps; answer, a right final answer against a wrong one; no_answer, a right answer against "
                  "a trajectory that ended in code errors:", ""]
        lines += [f"- round {r}: " + ", ".join(f"{kind} {100 * share:.1f} ({n})" for kind, (share, n) in kinds.items())
                  for r, kinds in by_kind]
    lines += _counts_section(rows, "Solutions by code steps, as steps: correct/all:",
                             (("search trajectories", "search_steps"), ("greedy on the test split", "greedy_steps")))
    lines += _counts_section(
        rows, "Steps of curriculum stories by the operation their sentence tells, as operation: right/all "
        "(a program's k-th assignment against the code of the story's k-th sentence):",
        (("SFT records of the search", "sft_operations"), ("greedy on the test split", "greedy_operations")))
    lines += _counts_section(
        rows, "The same steps, as operation: copied/all (the comment above the k-th assignment is the "
        "story's k-th sentence):",
        (("SFT records of the search", "sft_comments"), ("greedy on the test split", "greedy_comments")))
    lines += ["", "Seconds per stage:", ""]
    for row in rows:
        lines.append(f"- round {row['round']}: " + ", ".join(f"{k} {v:.0f}" for k, v in row["seconds"].items()))
    return "\n".join(lines) + "\n"


def plot_rounds(path: str, rows: Sequence[dict[str, Any]]) -> None:
    """Test accuracy (greedy and MCTS, mean over sets) and coverage per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    rounds = [row["round"] for row in rows]
    for label, values in (
        ("greedy pass@1", [_mean(row["accuracy"].get("greedy")) for row in rows]),
        ("MCTS policy + PPM", [_mean(row["accuracy"].get("mcts")) for row in rows]),
        ("train coverage", [None if row["coverage_all"] is None else 100 * row["coverage_all"] for row in rows]),
    ):
        points = [(r, v) for r, v in zip(rounds, values) if v is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("%")
    ax.set_xticks(rounds)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def write_report(workdir: str, rows: Sequence[dict[str, Any]], goals: Targets = Targets()) -> str:
    """report.json (`{"rounds": rows, "targets": [...]}`), report.md and accuracy.png in the
    workdir; returns the markdown."""
    markdown = report_markdown(rows, goals)
    write_json_atomic(os.path.join(workdir, "report.json"), {
        "rounds": list(rows), "targets": [dataclasses.asdict(t) for t in targets(rows, goals)]})
    tmp = os.path.join(workdir, "report.md.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("# Self-evolution report\n\n" + markdown)
    os.replace(tmp, os.path.join(workdir, "report.md"))
    plot_rounds(os.path.join(workdir, "accuracy.png"), rows)
    return markdown
