"""A run's problems: the synthetic curriculum's seed set and per-level problem files (and held-out
ones that only measure the PPM), the texts the from-scratch tokenizer learns from, the recitals its
policy may practise copying on, and the share of the problems each round searches."""

from __future__ import annotations

import os
import random

from rstar_jax import steps as sf
from rstar_jax.config import CurriculumConfig
from rstar_jax.data import records
from rstar_jax.data.curriculum import make_curriculum, recital
from rstar_jax.data.problems import Problem, load_problem_sets
from rstar_jax.data.records import write_json_atomic


HELDOUT_PREFIX = "heldout_"  # a held-out problem set's name: the training set's with this prefix


def write_curriculum(directory: str, config: CurriculumConfig) -> dict[str, int]:
    """Seed SFT records and per-level train / test problem files (rStar formats), and held-out ones
    (`CurriculumConfig.heldout_per_level`) in `heldout/`."""
    cur = make_curriculum(config)
    records.write_records(os.path.join(directory, "seed.json"),
                          [records.SFTRecord(p.question, p.response) for p in cur.seed])
    for split, problems in (("train", cur.train), ("test", cur.test), ("heldout", cur.heldout)):
        if not problems:
            continue
        for level in config.levels:
            rows = [{"index": i, "question": p.question, "answer": str(p.answer)}
                    for i, p in enumerate(q for q in problems if q.level == level)]
            write_json_atomic(os.path.join(directory, split, f"level{level}.json"), rows)
    return {"seed": len(cur.seed), "train": len(cur.train), "test": len(cur.test), "heldout": len(cur.heldout)}


def heldout_sets(directory: str) -> dict[str, list[Problem]]:
    """The held-out problem sets `write_curriculum` wrote under `directory/heldout` (none without),
    named as their training sets with `HELDOUT_PREFIX`."""
    path = os.path.join(directory, "heldout")
    if not os.path.isdir(path):
        return {}
    return {HELDOUT_PREFIX + name: problems for name, problems in load_problem_sets(path).items()}


def tokenizer_texts(seed_file: str, problem_sets: dict[str, list[Problem]]) -> list[str]:
    """What the from-scratch tokenizer learns from: seed solutions and all training questions."""
    seed = records.read_sft(seed_file)
    return ([sf.policy_prompt(r.query) + r.response for r in seed]
            + [p.question for problems in problem_sets.values() for p in problems])


def recital_records(problem_sets: dict[str, list[Problem]], seed: int) -> list[records.SFTRecord]:
    """Plain-text records (question, its sentences recited in a random order) for every training
    question the curriculum tells; the order of each is drawn from `seed`."""
    rng = random.Random(seed)
    recited = ((p.question, recital(p.question, rng)) for problems in problem_sets.values() for p in problems)
    return [records.SFTRecord(question, text) for question, text in recited if text is not None]


def round_problems(train_sets: dict[str, list[Problem]], shards: int, round_index: int
                   ) -> dict[str, list[Problem]]:
    """The training problems round `round_index` (1-based) searches: shard (round - 1) mod `shards`
    of every set, where problem i of a set is in shard i mod `shards`, so each shard keeps the
    sets' mix (a set with fewer problems than `shards` sits out the rounds its shard is empty)."""
    shard = (round_index - 1) % shards
    shares = {name: problems[shard::shards] for name, problems in train_sets.items()}
    return {name: share for name, share in shares.items() if share}
