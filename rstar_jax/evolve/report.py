"""The run's report: one row per finished round (coverage, records, PPM accuracy, test accuracy,
seconds per stage), the targets it meets, as report.json, report.md and accuracy.png."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from rstar_jax.data.records import write_json_atomic
from rstar_jax.evolve.evaluate import SUBSET_GREEDY
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
            "search_steps": extract.get("search_steps"),
            **evaluation["result"],
            "seconds": manifest.seconds(f"round{r}/"),
        })
    return rows


def _mean(values: dict[str, float] | None) -> float | None:
    values = [v for v in (values or {}).values() if v is not None]
    return sum(values) / len(values) if values else None


def _pct(x: float | None, scale: float = 1.0) -> str:
    return "-" if x is None else f"{x * scale:.1f}"


def _count(n: int | None) -> str:
    return "-" if n is None else str(n)


@dataclasses.dataclass(frozen=True)
class Target:
    """One goal of the CPU default checked on the round rows; `met` is None when too few rounds
    (or sets) were run to tell. `detail` gives the numbers, and by how much a missed goal misses."""

    name: str
    met: bool | None
    detail: str

    def markdown(self) -> str:
        verdict = {True: "met", False: "not met", None: "n/a"}[self.met]
        return f"- {self.name}: {verdict} ({self.detail})"


GREEDY_RISE = 15.0  # points of mean greedy pass@1 from round 0 to the last round


def _rounds(values: Sequence[tuple[int, float]], scale: float = 1.0, sign: str = "") -> str:
    return ", ".join(f"round {r} {v * scale:{sign}.1f}" for r, v in values) or "none"


def _not_in(rounds: Sequence[int], what: str) -> str:
    return f"; {what} in round{'s' if len(rounds) > 1 else ''} {', '.join(map(str, rounds))}" if rounds else ""


def _greedy(row: dict[str, Any], level: str | None = None) -> float | None:
    """A row's greedy pass@1: the mean over sets, or on one set."""
    greedy = row["accuracy"].get("greedy") or {}
    return _mean(greedy) if level is None else greedy.get(level)


def _search_baseline(row: dict[str, Any]) -> float | None:
    """Greedy mean on the problems MCTS ran on (rows without that: on all test problems)."""
    subset = _mean(row["accuracy"].get(SUBSET_GREEDY))
    return _greedy(row) if subset is None else subset


def targets(rows: Sequence[dict[str, Any]], seed_levels: Sequence[int] | None = None) -> list[Target]:
    """The issue's goals for the rounds, from `round_rows` (accuracy in %, coverage and PPM accuracy
    as fractions): (a) coverage, (b) greedy mean, (c) greedy beyond the seed set, (d) MCTS + PPM
    over greedy, (e) PPM accuracy. (c) needs the curriculum's seed levels (sets "level<n>"); a
    base-model run has none, and (c) is left out."""
    out = []
    coverage = [(row["round"], row["coverage_all"]) for row in rows if row["coverage_all"] is not None]
    flat = [r for (_, a), (r, b) in zip(coverage, coverage[1:]) if b <= a]
    out.append(Target("(a) training coverage rises every round", None if len(coverage) < 2 else not flat,
                      "coverage %: " + _rounds(coverage, 100) + _not_in(flat, "no rise")))

    first, last = (rows[0], rows[-1]) if len(rows) > 1 else ({"accuracy": {}}, {"accuracy": {}})
    name = f"(b) greedy pass@1 mean rises >= {GREEDY_RISE:g} points from round 0"
    before, after = _greedy(first), _greedy(last)
    if before is None or after is None:
        out.append(Target(name, None, "needs round 0 and a later round"))
    else:
        rise = after - before
        short = f", {GREEDY_RISE - rise:.1f} short" if rise < GREEDY_RISE else ""
        out.append(Target(name, rise >= GREEDY_RISE,
                          f"round 0 {before:.1f} -> round {last['round']} {after:.1f}: {rise:+.1f}{short}"))

    if seed_levels:
        levels = [f"level{max(seed_levels)}", f"level{max(seed_levels) + 1}"]
        rises, parts = [], []
        for level in levels:
            before, after = _greedy(first, level), _greedy(last, level)
            rises.append(None if before is None or after is None else after - before)
            parts.append(f"{level} not evaluated" if rises[-1] is None
                         else f"{level} {before:.1f} -> {after:.1f} ({rises[-1]:+.1f})")
        out.append(Target(f"(c) greedy rises on the hardest seeded level and the one above ({', '.join(levels)})",
                          None if None in rises else all(x > 0 for x in rises), "; ".join(parts)))

    margins = [(row["round"], mcts - greedy) for row in rows
               if (mcts := _mean(row["accuracy"].get("mcts"))) is not None and (greedy := _search_baseline(row)) is not None]
    behind = [r for r, m in margins if m <= 0]
    out.append(Target("(d) MCTS + PPM mean beats greedy mean (on the same problems) in every round with a PPM",
                      not behind if margins else None,
                      "MCTS - greedy points: " + _rounds(margins, sign="+") + _not_in(behind, "not ahead")))

    ppm = [(row["round"], row["ppm_heldout_accuracy"]) for row in rows if row.get("ppm_heldout_accuracy") is not None]
    low = [r for r, v in ppm if v <= 0.5]
    fell = [r for (_, a), (r, b) in zip(ppm, ppm[1:]) if b < a]
    out.append(Target("(e) PPM held-out pairwise accuracy > 50% and does not fall", not (low or fell) if ppm else None,
                      "accuracy %: " + _rounds(ppm, 100) + _not_in(low, "<= 50") + _not_in(fell, "falls")))
    return out


def _set_order(name: str) -> tuple[int, str]:
    return len(name), name  # level2 before level10


def _format_step_counts(by_set: dict[str, dict[str, list[int]]]) -> str:
    return "; ".join(f"{name} " + ", ".join(f"{n}: {c}/{a}" for n, (c, a) in counts.items())
                     for name, counts in sorted(by_set.items(), key=lambda kv: _set_order(kv[0])))


def report_markdown(rows: Sequence[dict[str, Any]], seed_levels: Sequence[int] | None = None) -> str:
    """Coverage, records, PPM accuracy and test accuracy per round, the targets, coverage per set,
    code steps per solution (what limits a level), then time per stage."""
    sets = sorted({s for row in rows for m in row["accuracy"].values() for s in m}, key=_set_order)
    head = ["round", "coverage % (all)", "SFT records", "PPM pairs (new / trained on)", "PPM held-out acc % (pairs)"]
    head += [f"greedy {s}" for s in sets] + ["greedy mean"] + [f"MCTS {s}" for s in sets] + ["MCTS mean"]
    head += ["greedy mean on MCTS problems"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        greedy, mcts = row["accuracy"].get("greedy", {}), row["accuracy"].get("mcts")
        cells = [str(row["round"]), _pct(row["coverage_all"], 100), _count(row["sft_records"]),
                 f"{_count(row['ppm_pairs'])} / {_count(row.get('ppm_train_pairs'))}",
                 f"{_pct(row['ppm_heldout_accuracy'], 100)} ({_count(row.get('ppm_heldout_pool_pairs'))})"]
        cells += [_pct(greedy.get(s)) for s in sets] + [_pct(_mean(greedy))]
        cells += [_pct((mcts or {}).get(s)) for s in sets] + [_pct(_mean(mcts))]
        cells += [_pct(_search_baseline(row) if mcts else None)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Targets:", ""] + [t.markdown() for t in targets(rows, seed_levels)]
    lines += ["", "Coverage of the training problems per set (%):", ""]
    for row in rows:
        if row["coverage"]:
            lines.append(f"- round {row['round']}: " + ", ".join(
                f"{s} {100 * v:.1f}" for s, v in sorted(row["coverage"].items(), key=lambda kv: _set_order(kv[0]))))
    steps = [f"- round {row['round']} {what}: {_format_step_counts(row[key])}" for row in rows
             for what, key in (("search trajectories", "search_steps"), ("greedy on the test split", "greedy_steps"))
             if row.get(key)]
    if steps:
        lines += ["", "Solutions by code steps, as steps: correct/all"
                  + (" (a level-n problem's solution has n + 1 steps before its print step; a correct "
                     "answer from fewer steps is right by luck)" if seed_levels else "") + ":", ""] + steps
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


def write_report(workdir: str, rows: Sequence[dict[str, Any]], seed_levels: Sequence[int] | None = None) -> str:
    """report.json (`{"rounds": rows, "targets": [...]}`), report.md and accuracy.png in the
    workdir; returns the markdown."""
    markdown = report_markdown(rows, seed_levels)
    write_json_atomic(os.path.join(workdir, "report.json"), {
        "rounds": list(rows), "targets": [dataclasses.asdict(t) for t in targets(rows, seed_levels)]})
    tmp = os.path.join(workdir, "report.md.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("# Self-evolution report\n\n" + markdown)
    os.replace(tmp, os.path.join(workdir, "report.md"))
    plot_rounds(os.path.join(workdir, "accuracy.png"), rows)
    return markdown
