"""`rstar-jax evolve`: rStar-Math's rounds of self-evolution as resumable stages (spec §1).

Round 0 makes the bootstrap policy: on the synthetic curriculum (the CPU default) a tokenizer and
a from-scratch model fine-tuned on the seed set's worked solutions; with `base_model` an HF model
that round 1 prompts few-shot. Every round r >= 1 then runs

    search   MCTS over the training problems with the round r-1 policy (and PPM when the round's
             search uses one), then again with new seeds over problems still unsolved
    extract  SFT records and PPM pairs from the trees (spec §4), coverage per problem set
    policy   SFT on this round's records, from the base model, the random init or round r-1's
             policy (`EvolveConfig.round_base`); exported as an HF directory
    ppm      PPM training from this round's policy; exported as an HF directory
    evaluate greedy pass@1 on the test sets; MCTS policy + PPM on the first
             `search_eval_problems` of each, and greedy's score there; the PPM's held-out accuracy

Stages write atomically and are recorded in `<workdir>/manifest.json`; a restarted run skips
finished stages, and a killed search keeps its finished chunks. A search pass is a directory of
chunks saved by `rstar_jax.search.io` (`<workdir>/round1/search/pass0` opens in
experiments/notebooks/inspect_tree.ipynb). With several processes
(`jax.distributed`), each searches its slice of the problems into its own shard files, and
process 0 extracts the records and writes the manifest and the report after a barrier; every
process trains and evaluates (the training and evaluation code shard the work themselves).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

from rstar_jax.config import CurriculumConfig, EvalConfig, EvolveConfig, RoundConfig
from rstar_jax.data import records
from rstar_jax.data.curriculum import make_curriculum
from rstar_jax.data.problems import Problem, load_problem_sets
from rstar_jax.data.records import StepTree, write_json_atomic
from rstar_jax.search import io as search_io
from rstar_jax.search.io import SearchResult

MANIFEST = "manifest.json"
log = logging.getLogger(__name__)


# ---- the manifest: which stages are finished, with their results --------------------------------

@dataclasses.dataclass
class Manifest:
    """`<workdir>/manifest.json`: stage name -> {"result": ..., "seconds": ...}, in run order."""

    path: str
    stages: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, workdir: str) -> Manifest:
        path = os.path.join(workdir, MANIFEST)
        if not os.path.exists(path):
            return cls(path, {})
        try:
            with open(path, encoding="utf-8") as f:
                return cls(path, json.load(f)["stages"])
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{path}: not a manifest written by rstar-jax evolve ({e})") from None

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """Runs a stage unless the manifest has it; every process runs it, process 0 records it."""
        if name in self.stages:
            return self.stages[name]["result"]
        start = time.perf_counter()
        result = fn()
        barrier(f"stage {name}")
        self.stages[name] = {"result": result, "seconds": round(time.perf_counter() - start, 2)}
        if jax.process_index() == 0:
            write_json_atomic(self.path, {"stages": self.stages})
        return result

    def seconds(self, prefix: str) -> dict[str, float]:
        return {name[len(prefix):]: s["seconds"] for name, s in self.stages.items() if name.startswith(prefix)}


def barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"rstar_jax.evolve: {name}")


def shard(items: Sequence[Any], index: int, count: int) -> list[Any]:
    """This process's slice: every `count`-th item from `index` (balanced over levels and sizes)."""
    return list(items[index::count])


# ---- problems ------------------------------------------------------------------------------------

def write_curriculum(directory: str, config: CurriculumConfig) -> dict[str, int]:
    """Seed SFT records and per-level train / test problem files (rStar formats)."""
    cur = make_curriculum(config)
    records.write_records(os.path.join(directory, "seed.json"),
                          [records.SFTRecord(p.question, p.response) for p in cur.seed])
    for split, problems in (("train", cur.train), ("test", cur.test)):
        for level in config.levels:
            rows = [{"index": i, "question": p.question, "answer": str(p.answer)}
                    for i, p in enumerate(q for q in problems if q.level == level)]
            write_json_atomic(os.path.join(directory, split, f"level{level}.json"), rows)
    return {"seed": len(cur.seed), "train": len(cur.train), "test": len(cur.test)}


def tokenizer_texts(seed_file: str, problem_sets: dict[str, list[Problem]]) -> list[str]:
    """What the from-scratch tokenizer learns from: seed solutions and all training questions."""
    from rstar_jax.search import step_format as sf

    seed = records.read_sft(seed_file)
    return ([sf.sft_prompt(r.query) + r.response for r in seed]
            + [p.question for problems in problem_sets.values() for p in problems])


# ---- search ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Searched:
    """One search tree of one training problem, as extraction reads it."""

    set: str
    index: int | str
    tree: StepTree


def read_pass(directory: str) -> list[Searched]:
    """Every tree that any process saved into a pass directory (one `search_io.save` directory per
    chunk), one per problem: a run resumed with another process count may have searched one twice."""
    if not os.path.isdir(directory):
        return []
    return [Searched(p.source, p.index, result.step_tree(b))
            for result in search_io.load_each(directory) for b, p in enumerate(result.problems)]


SearchFn = Callable[[Sequence[Problem], int], SearchResult]  # (problems, seed) -> searched trees


def search_pass(directory: str, problems: Sequence[tuple[str, Problem]], search_fn: SearchFn, seed: int,
                chunk: int, process: tuple[int, int]) -> None:
    """Searches this process's slice of `problems` in chunks, each saved as a search directory
    (`rstar_jax.search.io`, so the notebook opens it) written under a temporary name and renamed:
    a chunk directory that exists is done. A problem's `source` is set to its set's name.

    Every chunk uses the pass's seed: chunks hold different problems, so they need no own seed."""
    index, count = process
    mine = shard(problems, index, count)
    for start in range(0, len(mine), chunk):
        path = os.path.join(directory, f"p{index:03d}-of-{count:03d}.c{start // chunk:05d}")
        if os.path.exists(path):
            continue
        batch = [dataclasses.replace(p, source=name) for name, p in mine[start:start + chunk]]
        result = search_fn(batch, seed)
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
        solved = {(t.set, t.index) for t in read_pass(directory) if records.is_solved(t.tree)}
        todo = [(name, p) for name, p in todo if (name, p.index) not in solved]
        if not todo:
            break
    return {"trees": searched, "unsolved": len(todo), "ppm": rc.search.use_ppm}


def round_train_sets(train_sets: dict[str, list[Problem]], round_index: int, shards: int
                     ) -> dict[str, list[Problem]]:
    """Round r's training problems: shard (r - 1) % `shards` of every set (every `shards`-th
    problem), so that with `EvolveConfig.train_shards` > 1 each round searches fresh problems."""
    k = (round_index - 1) % shards
    return {name: problems[k::shards] for name, problems in train_sets.items()}


def is_heldout_problem(question: str, fraction: float) -> bool:
    """Whether a training problem's PPM pairs are held out (from training, to measure the PPM):
    a stable hash of its question, so a problem is on the same side in every round."""
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < fraction


# ---- extraction --------------------------------------------------------------------------------------

PPM_TRAIN, PPM_HELDOUT = "ppm_train.json", "ppm_heldout_pool.json"  # what the round's PPM sees


def extract_round(round_dir: str, train_sets: dict[str, list[Problem]], config: EvolveConfig,
                  seed_file: str | None, earlier_rounds: Sequence[str] = ()) -> dict[str, Any]:
    """SFT records, PPM pairs (train / held-out) and coverage per set from all passes' trees.

    The round's own pairs go to ppm.json / ppm_heldout.json; with the pairs of `earlier_rounds`
    (round directories) they form the PPM's training and held-out pools."""
    by_problem: dict[tuple[str, Any], list[StepTree]] = {}
    search_dir = os.path.join(round_dir, "search")
    for k in sorted(os.listdir(search_dir)):
        for t in read_pass(os.path.join(search_dir, k)):
            by_problem.setdefault((t.set, t.index), []).append(t.tree)
    flt = records.PairFilter(config.min_step_margin, config.min_edit_distance)
    sft = records.read_sft(seed_file) if seed_file and config.seed_replay else []
    if 0 <= config.seed_replay < len(sft):
        sft = random.Random(config.seed).sample(sft, config.seed_replay)
    pairs: list[records.PreferencePair] = []
    heldout: list[records.PreferencePair] = []
    coverage, steps = {}, {}
    for name, problems in train_sets.items():
        solved = 0
        outcomes = []  # (response, correct) of every trajectory: the report's step counts
        for p in problems:
            trees = by_problem.get((name, p.index), [])
            if not trees:
                continue
            solved += any(records.is_solved(t) for t in trees)
            outcomes += [(trace.response, trace.correct) for t in trees for trace in records.traces(t)]
            sft += records.sft_records(trees, config.sft_per_problem)
            own = [pair for t in trees for pair in records.step_pairs(t, flt)] + records.final_answer_pairs(trees)
            (heldout if is_heldout_problem(p.question, config.ppm_heldout_fraction) else pairs).extend(own)
        coverage[name] = solved / max(len(problems), 1)
        steps[name] = records.step_counts(outcomes)
    random.Random(0).shuffle(pairs)
    held = len(heldout)
    records.write_records(os.path.join(round_dir, "sft.json"), sft)
    records.write_records(os.path.join(round_dir, "ppm_heldout.json"), heldout)
    records.write_records(os.path.join(round_dir, "ppm.json"), pairs)
    pools = {}
    for pool, own, name in ((PPM_TRAIN, pairs, "ppm.json"), (PPM_HELDOUT, heldout, "ppm_heldout.json")):
        pools[pool] = [p for d in earlier_rounds for p in records.read_pairs(os.path.join(d, name))] + own
        records.write_records(os.path.join(round_dir, pool), pools[pool])
    total = sum(len(v) for v in train_sets.values())
    covered = sum(coverage[n] * len(v) for n, v in train_sets.items())
    return {"coverage": coverage, "coverage_all": covered / max(total, 1), "sft_records": len(sft),
            "ppm_pairs": len(pairs), "ppm_heldout_pairs": held,
            "ppm_train_pairs": len(pools[PPM_TRAIN]), "ppm_heldout_pool_pairs": len(pools[PPM_HELDOUT]),
            "search_steps": steps}


# ---- model stages (the model stack is imported here, so manifests and records need none of it) ---

def train_tokenizer(out_dir: str, texts: list[str], vocab_size: int) -> str:
    from rstar_jax.models.tokenizer import train_sentencepiece

    train_sentencepiece(texts, vocab_size, out_dir)
    return out_dir


def init_policy(out_dir: str, tokenizer_dir: str, config: EvolveConfig) -> str:
    """A randomly initialised decoder sized to the tokenizer, saved as the round-0 base model."""
    from flax import nnx

    from rstar_jax.models.decoder import Decoder
    from rstar_jax.models.hf import save_hf
    from rstar_jax.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    model_config = dataclasses.replace(
        config.model, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    save_hf(Decoder(model_config, rngs=nnx.Rngs(config.seed)), tokenizer, out_dir)
    return out_dir


def train_policy(run_dir: str, base_model: str, sft_file: str, config: EvolveConfig, train) -> str:
    from rstar_jax.training.sft import train_sft

    return train_sft(run_dir, base_model=base_model, train_file=sft_file, config=train, mesh=config.mesh)


def train_reward_model(run_dir: str, policy: str, pairs_file: str, config: EvolveConfig,
                       previous: str | None) -> str | None:
    """The round's PPM, or the previous round's when no problem gave a preference pair."""
    from rstar_jax.training.ppm import train_ppm

    if not records.read_pairs(pairs_file):
        log.warning("%s: no PPM pairs (no problem had both correct and wrong trajectories); "
                    "keeping the previous PPM (%s)", pairs_file, previous)
        return previous
    return train_ppm(run_dir, policy_model=policy, train_file=pairs_file, config=config.ppm_train,
                     mesh=config.mesh)


class ModelStack:
    """Policy sampler, PPM scorer and code executor of one stage, loaded from HF directories."""

    def __init__(self, config: EvolveConfig, policy_dir: str, ppm_dir: str | None):
        from rstar_jax.inference.sampler import Sampler
        from rstar_jax.inference.scorer import PPMScorer
        from rstar_jax.models.hf import load_hf, load_ppm_hf
        from rstar_jax.verify.executor import Executor

        model, self.tokenizer = load_hf(policy_dir)
        self.policy = Sampler(model, self.tokenizer, config.sampler)
        self.ppm = None
        if ppm_dir:
            ppm_model, _ = load_ppm_hf(ppm_dir)
            self.ppm = PPMScorer(ppm_model, self.tokenizer, config.scorer)
        self.executor = Executor(num_workers=config.exec_workers, timeout_s=config.exec_timeout_s)

    def __enter__(self) -> ModelStack:
        self.executor.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.executor.__exit__(*exc)


def search_stage(round_dir: str, train_sets: dict[str, list[Problem]], rc: RoundConfig,
                 config: EvolveConfig, policy_dir: str, ppm_dir: str | None, seed: int) -> dict[str, Any]:
    """A round's MCTS over the training problems with the given policy (and PPM)."""
    from rstar_jax.search.driver import run_mcts

    def search_fn(problems: Sequence[Problem], rollouts: int, pass_seed: int) -> SearchResult:
        search = dataclasses.replace(rc.search, num_rollouts=rollouts, seed=pass_seed)
        return run_mcts(problems, stack.policy, stack.ppm, search, stack.executor)

    with ModelStack(config, policy_dir, ppm_dir) as stack:
        return search_round(round_dir, train_sets, rc, search_fn, seed, config.search_chunk)


def pairwise_accuracy(scorer, pairs: Sequence[records.PreferencePair]) -> float | None:
    """Share of held-out pairs whose chosen step the PPM scores above the rejected one."""
    if not pairs:
        return None
    raw, _ = scorer.score([p.prompt + p.pos for p in pairs] + [p.prompt + p.neg for p in pairs])
    return float((raw[:len(pairs)] > raw[len(pairs):]).mean())


SUBSET_GREEDY = "greedy_search_problems"  # greedy on the test problems the other methods ran on


def evaluate_round(eval_dir: str, test_sets: dict[str, list[Problem]], config: EvolveConfig,
                   policy_dir: str, ppm_dir: str | None, heldout_file: str | None) -> dict[str, Any]:
    """Greedy pass@1 per test set, and the other methods (MCTS) when there is a PPM.

    Greedy runs on every test problem (up to `evaluation.max_problems`); the other methods on the
    first `config.search_eval_problems` of each set. When those are fewer, greedy's score on them
    is reported too, as "greedy_search_problems" (the comparison of target (d)).
    """
    from rstar_jax.evaluate import evaluate_sets
    from rstar_jax.evaluation.methods import Models
    from rstar_jax.evaluation.results import MERGED, read_records

    evaluation = config.evaluation
    scored = tuple(m for m in evaluation.methods if m != "greedy") if ppm_dir else ()
    head = min((n for n in (evaluation.max_problems, config.search_eval_problems) if n > 0), default=0)
    with ModelStack(config, policy_dir, ppm_dir) as stack:
        models = Models(policy=stack.policy, executor=stack.executor, ppm=stack.ppm,
                        tokenizer=stack.tokenizer, search=config.eval_search)
        rows = []
        if "greedy" in evaluation.methods:
            rows += evaluate_sets(eval_dir, test_sets, models, dataclasses.replace(evaluation, methods=("greedy",)))
        if scored:
            rows += evaluate_sets(os.path.join(eval_dir, "search_problems"), test_sets, models,
                                  dataclasses.replace(evaluation, max_problems=head, methods=scored))
        ppm_accuracy = (pairwise_accuracy(stack.ppm, records.read_pairs(heldout_file))
                        if stack.ppm is not None and heldout_file else None)
    greedy = ({name: read_records(os.path.join(eval_dir, name, "greedy", MERGED)) for name in test_sets}
              if "greedy" in evaluation.methods else {})
    if scored and head != evaluation.max_problems:
        rows += greedy_on_head(greedy, head, evaluation)
    accuracy: dict[str, dict[str, float]] = {}
    for row in rows:
        accuracy.setdefault(row["method"], {})[row["set"]] = row["accuracy"]
    greedy_steps = {name: records.step_counts(("".join(r["candidates"][0]["steps"]), r["candidates"][0]["correct"])
                                              for r in recs) for name, recs in greedy.items()}
    return {"accuracy": accuracy, "ppm_heldout_accuracy": ppm_accuracy, "greedy_steps": greedy_steps}


def greedy_on_head(greedy: dict[str, list[dict[str, Any]]], head: int, evaluation: EvalConfig) -> list[dict[str, Any]]:
    """Summary rows (method SUBSET_GREEDY) of greedy's records, in problem order, cut to each set's
    first `head` problems: greedy is deterministic, so running it again there gives the same."""
    from rstar_jax.evaluation.reporting import summarize

    return [dict(summarize(name, "greedy", recs[:head], evaluation.ks, evaluation.top_n, evaluation.paper_round),
                 method=SUBSET_GREEDY) for name, recs in greedy.items()]


# ---- the report ----------------------------------------------------------------------------------------

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


# ---- the rounds ------------------------------------------------------------------------------------------

ROUND_BASES = ("base", "init", "previous")  # what each round's policy fine-tunes (EvolveConfig)


def evolve(workdir: str = "runs/evolve", *, config: EvolveConfig = EvolveConfig(),
           curriculum: CurriculumConfig = CurriculumConfig(), base_model: str = "",
           train_problems: str = "", test_problems: str = "", seed_sft: str = "") -> list[dict[str, Any]]:
    """Runs, or resumes, bootstrap + every round of `config`; prints and returns the report rows.

    Without `base_model` the problems come from the synthetic `curriculum` and round 0 trains a
    tokenizer and a from-scratch policy on its seed set. With `base_model` (an HF directory) the
    problems are rStar problem files or directories (`train_problems`, `test_problems`), round 1
    searches with the base model (use `SearchConfig.data_generation(1)` there for the few-shot
    prompt), and `seed_sft` optionally adds worked solutions to every round's SFT data.
    """
    from rstar_jax.parallel.mesh import initialize_distributed

    if config.round_base not in ROUND_BASES:
        raise ValueError(f"evolve: round_base {config.round_base!r} is not one of {ROUND_BASES}")
    initialize_distributed()
    is_main = jax.process_index() == 0
    manifest = Manifest.load(workdir)
    round0 = os.path.join(workdir, "round0")
    if base_model:
        if not (train_problems and test_problems):
            raise ValueError("evolve: with base_model, also give train_problems and test_problems")
        train_dir, test_dir, seed_file = train_problems, test_problems, seed_sft or None
    else:
        problems_dir = os.path.join(workdir, "problems")
        manifest.run("round0/problems", lambda: write_curriculum(problems_dir, curriculum) if is_main else None)
        train_dir, test_dir = os.path.join(problems_dir, "train"), os.path.join(problems_dir, "test")
        seed_file = os.path.join(problems_dir, "seed.json")
    train_sets, test_sets = load_problem_sets(train_dir), load_problem_sets(test_dir)

    if base_model:
        base = policy = base_model
    else:
        tokenizer_dir = manifest.run("round0/tokenizer", lambda: train_tokenizer(
            os.path.join(round0, "tokenizer"), tokenizer_texts(seed_file, train_sets), config.tokenizer_vocab))
        base = manifest.run("round0/init", lambda: init_policy(os.path.join(round0, "init"), tokenizer_dir, config))
        policy = manifest.run("round0/policy", lambda: train_policy(
            os.path.join(round0, "policy"), base, seed_file, config, config.seed_train))
        if config.round_base != "init":
            base = policy
    manifest.run("round0/evaluate", lambda: evaluate_round(
        os.path.join(round0, "eval"), test_sets, config, policy, None, None))
    seed_levels = None if base_model else curriculum.seed_levels
    markdown = write_report(workdir, round_rows(manifest, 0), seed_levels) if is_main else ""

    ppm = None
    for r, rc in enumerate(config.rounds, start=1):
        if rc.search.use_ppm and ppm is None:
            log.warning("round %d: no PPM from an earlier round; searching terminal-guided", r)
            rc = dataclasses.replace(rc, search=dataclasses.replace(rc.search, use_ppm=False))
        round_dir = os.path.join(workdir, f"round{r}")
        round_sets = round_train_sets(train_sets, r, config.train_shards)
        manifest.run(f"round{r}/search", lambda: search_stage(
            round_dir, round_sets, rc, config, policy, ppm if rc.search.use_ppm else None,
            config.seed + 10 * r))
        earlier = [os.path.join(workdir, f"round{k}") for k in range(max(1, r - config.ppm_pair_rounds + 1), r)]
        manifest.run(f"round{r}/extract", lambda: extract_round(
            round_dir, round_sets, config, seed_file, earlier) if is_main else None)
        policy = manifest.run(f"round{r}/policy", lambda: train_policy(
            os.path.join(round_dir, "policy"), base, os.path.join(round_dir, "sft.json"), config, config.policy_train))
        if config.round_base == "previous":
            base = policy
        ppm = manifest.run(f"round{r}/ppm", lambda: train_reward_model(
            os.path.join(round_dir, "ppm"), policy, os.path.join(round_dir, PPM_TRAIN), config, ppm))
        manifest.run(f"round{r}/evaluate", lambda: evaluate_round(
            os.path.join(round_dir, "eval"), test_sets, config, policy, ppm,
            os.path.join(round_dir, PPM_HELDOUT)))
        markdown = write_report(workdir, round_rows(manifest, r), seed_levels) if is_main else ""
    if is_main:
        print(markdown)
    return round_rows(manifest, len(config.rounds))
