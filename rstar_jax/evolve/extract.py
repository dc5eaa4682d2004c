"""A round's records: SFT records (top trajectories per problem), PPM step pairs split into train
and held-out pools, and coverage per problem set, from every search pass's trees (spec §4)."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any

from rstar_jax.config import EvolveConfig
from rstar_jax.data import records
from rstar_jax.data.curriculum import operation_counts
from rstar_jax.data.problems import Problem
from rstar_jax.data.trees import SearchedTree
from rstar_jax.evolve.search import read_pass


PPM_TRAIN, PPM_HELDOUT = "ppm_train.json", "ppm_heldout_pool.json"  # what the round's PPM sees
SFT_OWN, SFT_TRAIN = "sft_search.json", "sft.json"  # the round's search records; what its policy sees


def is_held_out(problem_set: str, index: int | str, fraction: float) -> bool:
    """Whether a training problem is held out to measure the PPM: its pairs go to the held-out pool
    and its trajectories to no SFT record, as the PPM starts from the round's policy. A fixed draw
    per problem, the same in every round, so neither model trains on a held-out problem."""
    return random.Random(f"{problem_set}/{index}").random() < fraction


def problem_pairs(trees: Sequence[SearchedTree], flt: records.PairFilter, config: EvolveConfig
                  ) -> list[records.PreferencePair]:
    """A problem's PPM pairs: step pairs of every tree and its final-answer pairs (spec §4.2)."""
    return ([pair for t in trees for pair in records.step_pairs(t, flt)]
            + records.final_answer_pairs(trees, config.final_pairs_per_side))


def extract_round(round_dir: str, train_sets: dict[str, list[Problem]], config: EvolveConfig,
                  seed_file: str | None, earlier_rounds: Sequence[str] = (),
                  sft_rounds: Sequence[str] = (), heldout_sets: dict[str, list[Problem]] | None = None
                  ) -> dict[str, Any]:
    """SFT records, PPM pairs (train / held out by problem) and coverage per set from all passes' trees.
    A held-out problem (`is_held_out`, or any of `heldout_sets`, searched beside the training sets)
    gives held-out pairs and no SFT record; coverage counts the training sets.

    The round's own pairs go to ppm.json / ppm_heldout.json; with the pairs of `earlier_rounds`
    (round directories) they form the PPM's training and held-out pools. The round's own SFT
    records go to sft_search.json; with those of `sft_rounds` and the seed replay they form the
    policy's sft.json. Each file is written under a temporary name and renamed; a killed extract
    leaves no half file, and runs again."""
    for name in os.listdir(round_dir):  # a killed extract's temporary files; every record file is rewritten
        if ".json.tmp." in name:
            os.remove(os.path.join(round_dir, name))
    by_problem: dict[tuple[str, Any], list[SearchedTree]] = {}
    search_dir = os.path.join(round_dir, "search")
    for k in sorted(os.listdir(search_dir)):
        for t in read_pass(os.path.join(search_dir, k)):
            by_problem.setdefault((t.set, t.index), []).append(t.tree)
    flt = records.PairFilter(config.min_step_margin, config.min_edit_distance)
    replay = records.read_sft(seed_file) if seed_file and config.seed_replay else []
    if 0 <= config.seed_replay < len(replay):
        replay = random.Random(config.seed).sample(replay, config.seed_replay)
    sft: list[records.SFTRecord] = []  # this round's search records
    pairs: dict[bool, list[records.PreferencePair]] = {False: [], True: []}  # held out -> pairs
    coverage, steps, operations, comments = {}, {}, {}, {}
    for name, problems in train_sets.items():
        solved = 0
        outcomes = []  # (response, correct) of every trajectory: the report's step counts
        own = []  # the set's SFT records
        for p in problems:
            trees = by_problem.get((name, p.index), [])
            if not trees:
                continue
            solved += any(t.is_solved() for t in trees)
            outcomes += [(a.text, a.is_correct) for t in trees for a in records.attempts(t)]
            held_out = is_held_out(name, p.index, config.ppm_heldout_fraction)
            if not held_out:
                own += records.sft_records(trees, config.sft_per_problem)
            pairs[held_out] += problem_pairs(trees, flt, config)
        coverage[name] = solved / max(len(problems), 1)
        steps[name] = records.step_counts(outcomes)
        operations[name], comments[name] = operation_counts((r.query, r.response) for r in own)
        sft += own
    for name, problems in (heldout_sets or {}).items():
        for p in problems:
            pairs[True] += problem_pairs(by_problem.get((name, p.index), []), flt, config)
    train, heldout = pairs[False], pairs[True]
    random.Random(0).shuffle(train)
    records.write_records(os.path.join(round_dir, SFT_OWN), sft)
    sft = replay + [r for d in sft_rounds for r in records.read_sft(os.path.join(d, SFT_OWN))] + sft
    records.write_records(os.path.join(round_dir, SFT_TRAIN), sft)
    records.write_records(os.path.join(round_dir, "ppm_heldout.json"), heldout)
    records.write_records(os.path.join(round_dir, "ppm.json"), train)
    pools = {}
    for pool, own, name in ((PPM_TRAIN, train, "ppm.json"), (PPM_HELDOUT, heldout, "ppm_heldout.json")):
        pools[pool] = [p for d in earlier_rounds for p in records.read_pairs(os.path.join(d, name))] + own
        records.write_records(os.path.join(round_dir, pool), pools[pool])
    total = sum(len(v) for v in train_sets.values())
    covered = sum(coverage[n] * len(v) for n, v in train_sets.items())
    return {"coverage": coverage, "coverage_all": covered / max(total, 1), "sft_records": len(sft),
            "ppm_pairs": len(train), "ppm_heldout_pairs": len(heldout),
            "ppm_train_pairs": len(pools[PPM_TRAIN]), "ppm_heldout_pool_pairs": len(pools[PPM_HELDOUT]),
            "search_steps": steps, "sft_operations": operations, "sft_comments": comments}


