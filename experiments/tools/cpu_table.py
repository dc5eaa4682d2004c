"""Per-round table of an `rstar-jax evolve` workdir: greedy per level and mean, coverage, MCTS + PPM
against greedy on the same problems, PPM best-of-n against maj@n on the same samples, PPM held-out
accuracy and pairs, seconds per stage.  python experiments/tools/cpu_table.py WORKDIR"""
import json
import os
import sys


def main(workdir: str) -> None:
    stages = json.load(open(os.path.join(workdir, "manifest.json")))["stages"]
    print(f"| round | coverage % | SFT recs | PPM pairs train/heldout-pool | PPM acc % | greedy L1/L2/L3/L4 | greedy mean | MCTS mean / greedy same (n) | best@n / maj@n (n) | stage s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    total = 0.0
    for r in range(0, 10):
        ev = stages.get(f"round{r}/evaluate")
        secs = {k.split("/")[1]: v["seconds"] for k, v in stages.items() if k.startswith(f"round{r}/")}
        total += sum(secs.values())
        if ev is None:
            if secs:
                print(f"| {r} (partial) | | | | | | | | | {secs} |")
            break
        res = ev["result"]
        acc = res["accuracy"]
        g = acc.get("greedy", {})
        levels = sorted(g, key=lambda s: (len(s), s))
        gmean = sum(g.values()) / len(g)
        ex = stages.get(f"round{r}/extract", {}).get("result") or {}
        mc = acc.get("mcts")
        same = acc.get("greedy_search_problems")
        mcts = "-"
        summ_path = os.path.join(workdir, f"round{r}", "eval", "search_problems", "summary.json")
        bon = "-"
        n_mcts = ""
        if os.path.exists(summ_path):
            summ = json.load(open(summ_path))
            rows = summ["rows"] if isinstance(summ, dict) and "rows" in summ else summ
            bo = [x for x in rows if x["method"] == "best_of_n"]
            if bo:
                k = bo[0]["candidates"]
                n = sum(x["problems"] for x in bo)
                best = sum(x["metrics"][f"best@{k}"] * x["problems"] for x in bo) / n
                maj = sum(x["metrics"][f"maj@{k}"] * x["problems"] for x in bo) / n
                bon = f"{best:.1f} / {maj:.1f} ({n}, k={k})"
            n_mcts = sum(x["problems"] for x in rows if x["method"] == "mcts")
        if mc:
            mcts = f"{sum(mc.values()) / len(mc):.1f} / {sum(same.values()) / len(same):.1f} ({n_mcts})"
        cov = ex.get("coverage_all")
        ppm = res.get("ppm_heldout_accuracy")
        print(f"| {r} | {'-' if cov is None else f'{100 * cov:.1f}'} | {ex.get('sft_records', '-')} | "
              f"{ex.get('ppm_train_pairs', '-')}/{ex.get('ppm_heldout_pool_pairs', '-')} | "
              f"{'-' if ppm is None else f'{100 * ppm:.1f}'} | {' / '.join(f'{g[l]:.0f}' for l in levels)} | "
              f"{gmean:.1f} | {mcts} | {bon} | {', '.join(f'{k} {v:.0f}' for k, v in secs.items())} |")
        if ex.get("coverage"):
            print("|  | per level: " + ", ".join(f"{k} {100 * v:.0f}" for k, v in sorted(ex["coverage"].items())) + " |")
    print(f"total stage seconds: {total:.0f} ({total / 60:.1f} min)")


if __name__ == "__main__":
    main(sys.argv[1])
