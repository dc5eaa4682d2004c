"""`rstar-jax evolve`: rStar-Math's rounds of self-evolution as resumable stages (spec §1).

Round 0 makes the bootstrap policy: on the synthetic curriculum (the CPU default) a tokenizer and
a from-scratch model fine-tuned on the seed set's worked solutions (after practising to recite the
training questions' sentences, with `EvolveConfig.recital_train`); with `base_model` an HF model
that round 1 prompts few-shot. Every round r >= 1 then runs

    search   MCTS over the training problems (and the curriculum's held-out ones, which only
             measure the PPM) with the round r-1 policy (and PPM when the round's search uses
             one), then again with new seeds over problems still unsolved
    extract  SFT records and PPM pairs from the trees (spec §4), coverage per problem set
    policy   SFT on this round's records (and with `EvolveConfig.recite_in_rounds`, recitals of
             the questions it searched), from the base model, the random init or round r-1's
             policy (`EvolveConfig.round_base`); exported as an HF directory
    ppm      PPM training from this round's policy (`RoundConfig.ppm_train`, else
             `EvolveConfig.ppm_train`); exported as an HF directory
    evaluate greedy pass@1 on the test sets; MCTS policy + PPM on the first
             `search_eval_problems` of each (from round `search_eval_from_round` on), and greedy's
             score there; the PPM's held-out accuracy

A round whose search solved nothing (no SFT records, or no PPM pairs) trains nothing: its policy
(or PPM) stage carries the previous one forward with a warning and records "trained": false.

Stages write atomically and are recorded in `<workdir>/manifest.json` (evolve/runner.py); a
restarted run skips finished stages, and a killed search keeps its finished chunks. With several
processes (`jax.distributed`), each searches its slice of the problems into its own shard files,
and process 0 extracts the records and writes the manifest and the report after a barrier; every
process trains and evaluates (the training and evaluation code shard the work themselves).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

import jax

from rstar_jax.config import CurriculumConfig, EvolveConfig
from rstar_jax.data import records
from rstar_jax.data.problems import load_problem_sets
from rstar_jax.evaluation.methods import check_evaluation_search
from rstar_jax.evolve.evaluate import evaluate_round
from rstar_jax.evolve.extract import PPM_HELDOUT, PPM_TRAIN, SFT_TRAIN, extract_round
from rstar_jax.evolve.models import init_policy, train_policy, train_recital, train_reward_model, train_tokenizer
from rstar_jax.evolve.problems import (heldout_sets, recital_records, round_problems, tokenizer_texts,
                                        write_curriculum)
from rstar_jax.evolve.report import round_rows, write_report
from rstar_jax.evolve.runner import Manifest
from rstar_jax.evolve.search import search_stage
from rstar_jax.parallel.hosts import initialize_distributed

log = logging.getLogger(__name__)


ROUND_BASES = ("base", "init", "previous")  # what each round's policy fine-tunes (EvolveConfig)
PPM_BASES = ("policy", "previous")  # what each round's PPM starts from (EvolveConfig)


def with_seed(config: EvolveConfig, curriculum: CurriculumConfig, seed: int) -> tuple[EvolveConfig, CurriculumConfig]:
    """One seed for a whole run: the model initialisation, search and sampling (`EvolveConfig.seed`)
    and the curriculum's three splits (seed 3s, train 3s + 1, test 3s + 2, so seed 0 keeps the
    defaults 0, 1, 2)."""
    return (dataclasses.replace(config, seed=seed),
            dataclasses.replace(curriculum, seed_seed=3 * seed, train_seed=3 * seed + 1, test_seed=3 * seed + 2))


def evolve(workdir: str = "runs/evolve", *, config: EvolveConfig = EvolveConfig(),
           curriculum: CurriculumConfig = CurriculumConfig(), base_model: str = "",
           train_problems: str = "", test_problems: str = "", seed_sft: str = "",
           seed: int | None = None) -> list[dict[str, Any]]:
    """Runs, or resumes, bootstrap + every round of `config`; prints and returns the report rows
    (process 0; the other processes return none).

    Without `base_model` the problems come from the synthetic `curriculum` and round 0 trains a
    tokenizer and a from-scratch policy on its seed set. With `base_model` (an HF directory) the
    problems are rStar problem files or directories (`train_problems`, `test_problems`), round 1
    searches with the base model (use `SearchConfig.data_generation(1)` there for the few-shot
    prompt), and `seed_sft` optionally adds worked solutions to every round's SFT data.
    `seed`, when given, is the run's one seed (`with_seed`): `rstar-jax evolve --seed 1`.
    """
    if seed is not None:
        config, curriculum = with_seed(config, curriculum, seed)
    if config.round_base not in ROUND_BASES:
        raise ValueError(f"evolve: round_base {config.round_base!r} is not one of {ROUND_BASES}")
    if config.ppm_base not in PPM_BASES:
        raise ValueError(f"evolve: ppm_base {config.ppm_base!r} is not one of {PPM_BASES}")
    for name in ("train_shards", "sft_rounds", "ppm_pair_rounds"):
        if getattr(config, name) < 1:
            raise ValueError(f"evolve: {name} must be at least 1, got {getattr(config, name)}")
    if "mcts" in config.evaluation.methods:
        check_evaluation_search(config.eval_search)  # now, not in round 3's evaluation
    initialize_distributed()
    is_main = jax.process_index() == 0
    manifest = Manifest.load(workdir)
    round0 = os.path.join(workdir, "round0")
    if base_model:
        if not (train_problems and test_problems):
            raise ValueError("evolve: with base_model, also give train_problems and test_problems")
        from rstar_jax.models.hf import check_hf_dir  # fail now, not in the first stage that loads it

        check_hf_dir(base_model)
        train_dir, test_dir, seed_file = train_problems, test_problems, seed_sft or None
    else:
        problems_dir = os.path.join(workdir, "problems")
        manifest.run("round0/problems", lambda: write_curriculum(problems_dir, curriculum) if is_main else None)
        train_dir, test_dir = os.path.join(problems_dir, "train"), os.path.join(problems_dir, "test")
        seed_file = os.path.join(problems_dir, "seed.json")
    train_sets, test_sets = load_problem_sets(train_dir), load_problem_sets(test_dir)
    heldout = {} if base_model else heldout_sets(problems_dir)  # searched only to measure the PPM
    if not base_model and curriculum.heldout_per_level and not heldout:
        log.warning("%s holds no held-out problems (written before CurriculumConfig.heldout_per_level "
                    "was set): the rounds search none, and only ppm_heldout_fraction measures the PPM",
                    problems_dir)
    largest = max(len(problems) for problems in train_sets.values())
    if config.train_shards > largest:
        raise ValueError(f"evolve: train_shards {config.train_shards} is more than the largest training "
                         f"set's {largest} problems (some rounds would search none)")

    if base_model:
        base = policy = base_model
    else:
        tokenizer_dir = manifest.run("round0/tokenizer", lambda: train_tokenizer(
            os.path.join(round0, "tokenizer"), tokenizer_texts(seed_file, train_sets), config.tokenizer_vocab,
            config.tokenizer_split_digits))
        base = manifest.run("round0/init", lambda: init_policy(os.path.join(round0, "init"), tokenizer_dir, config))
        if config.recital_train is not None:
            base = manifest.run("round0/recital", lambda: train_recital(
                os.path.join(round0, "recital"), base, recital_records(train_sets, config.seed), config))
        policy = manifest.run("round0/policy", lambda: train_policy(
            os.path.join(round0, "policy"), base, seed_file, config, config.seed_train))
        if config.round_base != "init":
            base = policy
    manifest.run("round0/evaluate", lambda: evaluate_round(
        os.path.join(round0, "eval"), test_sets, config, policy, None, None))
    markdown = write_report(workdir, round_rows(manifest, 0), config.targets) if is_main else ""

    ppm = None
    for r, rc in enumerate(config.rounds, start=1):
        if rc.search.use_ppm and ppm is None:
            log.warning("round %d: no PPM from an earlier round; searching terminal-guided", r)
            rc = dataclasses.replace(rc, search=dataclasses.replace(rc.search, use_ppm=False))
        round_dir = os.path.join(workdir, f"round{r}")
        round_sets = round_problems(train_sets, config.train_shards, r)
        round_heldout = round_problems(heldout, config.train_shards, r)
        manifest.run(f"round{r}/search", lambda: search_stage(
            round_dir, {**round_sets, **round_heldout}, rc, config, policy, ppm if rc.search.use_ppm else None,
            config.seed + 10 * r))
        manifest.run(f"round{r}/extract", lambda: extract_round(
            round_dir, round_sets, config, seed_file, earlier_rounds(workdir, r, config.ppm_pair_rounds),
            earlier_rounds(workdir, r, config.sft_rounds), round_heldout) if is_main else None)
        sft_file, pairs_file = os.path.join(round_dir, SFT_TRAIN), os.path.join(round_dir, PPM_TRAIN)
        recitals = recital_records(round_sets, config.seed + r) if config.recite_in_rounds else []
        policy = model_of(manifest.run(f"round{r}/policy", lambda: fine_tune(
            f"round {r} policy", sft_file, len(records.read_sft(sft_file)), policy, lambda: train_policy(
                os.path.join(round_dir, "policy"), base, sft_file, config, config.policy_train, recitals))))
        if config.round_base == "previous":
            base = policy
        ppm = model_of(manifest.run(f"round{r}/ppm", lambda: fine_tune(
            f"round {r} PPM", pairs_file, len(records.read_pairs(pairs_file)), ppm, lambda: train_reward_model(
                os.path.join(round_dir, "ppm"), policy, pairs_file, config, ppm, config.round_ppm_train(rc)))))
        manifest.run(f"round{r}/evaluate", lambda: evaluate_round(
            os.path.join(round_dir, "eval"), test_sets, config, policy, ppm,
            os.path.join(round_dir, PPM_HELDOUT), search_methods=r >= config.search_eval_from_round))
        markdown = write_report(workdir, round_rows(manifest, r), config.targets) if is_main else ""
    if is_main:
        print(markdown)
    # Only process 0 extracts: the other processes' manifests hold no extraction results to report.
    return round_rows(manifest, len(config.rounds)) if is_main else []


def earlier_rounds(workdir: str, r: int, n: int) -> list[str]:
    """The directories of the n - 1 rounds before round r (those that exist: round 1 and up)."""
    return [os.path.join(workdir, f"round{k}") for k in range(max(1, r - n + 1), r)]


def fine_tune(what: str, records_file: str, count: int, previous: str | None,
              train: Callable[[], str | None]) -> dict[str, Any]:
    """A round's policy or PPM stage result: {"model", "trained", "records"}. A round whose search
    gave no records (or no pairs) trains nothing: it carries `previous` forward, with a warning,
    and says why under "reason" (the report's coverage for that round is 0)."""
    if not count:
        # the file as the workdir names it (roundN/...), so a moved or resumed workdir reports the same
        name = os.path.join(os.path.basename(os.path.dirname(records_file)), os.path.basename(records_file))
        reason = f"{name} holds no records (the search solved no problem, or none gave a pair)"
        log.warning("%s: not trained, keeping %s: %s", what, previous, reason)
        return {"model": previous, "trained": False, "records": 0, "reason": reason}
    return {"model": train(), "trained": True, "records": count}


def model_of(result: str | dict[str, Any] | None) -> str | None:
    """The model directory of a `fine_tune` stage result (manifests of older runs hold the path)."""
    return result["model"] if isinstance(result, dict) else result
