"""`evolve` itself: what each round fine-tunes, which training problems each round searches
(train_shards), the default gin file, the run's one seed.
"""

import dataclasses
import os

import pytest

from rstar_jax.evolve import models, run
from rstar_jax.evolve import search as evolve_search
from rstar_jax.config import EvolveConfig
from rstar_jax.data.problems import load_problem_sets
from stand_ins import ROUND, StandInSearch


class StandInStages:
    """evolve()'s model stages replaced by stand-ins that record which base each policy fine-tunes."""

    def __init__(self, monkeypatch, workdir):
        self.workdir, self.bases, self.search_methods, self.recited, self.ppm_trains = workdir, [], [], [], []
        search = StandInSearch()
        monkeypatch.setattr(run, "train_tokenizer", lambda out, texts, vocab, split_digits: out)
        monkeypatch.setattr(run, "init_policy", lambda out, tokenizer, config: "init")
        monkeypatch.setattr(run, "train_policy", self.train_policy)
        monkeypatch.setattr(run, "train_reward_model", self.train_reward_model)
        monkeypatch.setattr(run, "search_stage", lambda round_dir, sets, rc, config, policy, ppm, seed:
                            evolve_search.search_round(round_dir, sets, rc, search, seed, config.search_chunk))
        monkeypatch.setattr(run, "evaluate_round", self.evaluate_round)

    def evaluate_round(self, *args, search_methods=None):
        self.search_methods.append(search_methods)
        return {"accuracy": {"greedy": {"level1": 50.0}}, "ppm_heldout_accuracy": None}

    def train_policy(self, run_dir, base, sft_file, config, train, recitals=()):
        self.bases.append(base if base == "init" else os.path.relpath(base, self.workdir))
        self.recited.append(sorted(r.query for r in recitals))
        return run_dir

    def train_reward_model(self, run_dir, policy, pairs_file, config, previous, train):
        self.ppm_trains.append(train)
        return run_dir


@pytest.mark.parametrize("round_base, bases", [
    ("base", ["init", "round0/policy", "round0/policy", "round0/policy"]),
    ("init", ["init", "init", "init", "init"]),
    ("previous", ["init", "round0/policy", "round1/policy", "round2/policy"]),
])
def test_round_base_picks_what_each_round_fine_tunes(tmp_path, monkeypatch, round_base, bases):
    from rstar_jax.config import CurriculumConfig

    stages = StandInStages(monkeypatch, str(tmp_path))
    config = EvolveConfig(rounds=(ROUND,) * 3, round_base=round_base)
    curriculum = CurriculumConfig(levels=(1,), seed_levels=(1,), seed_per_level=2, train_per_level=3,
                                  test_per_level=1)
    run.evolve(str(tmp_path), config=config, curriculum=curriculum)
    assert stages.bases == bases


def test_a_recital_stage_trains_before_the_seed_set_on_the_training_questions(tmp_path, monkeypatch):
    from rstar_jax.config import CurriculumConfig, TrainConfig

    stages = StandInStages(monkeypatch, str(tmp_path))
    recited = []

    def train_recital(run_dir, init, recitals, config):
        recited.append((init, recitals))
        return run_dir

    monkeypatch.setattr(run, "train_recital", train_recital)
    config = EvolveConfig(rounds=(ROUND,), recital_train=TrainConfig(), round_base="init")
    curriculum = CurriculumConfig(levels=(1, 2), seed_levels=(1,), seed_per_level=2, train_per_level=3,
                                  test_per_level=1, numbered=True)
    run.evolve(str(tmp_path), config=config, curriculum=curriculum)
    assert stages.bases == ["round0/recital", "round0/recital"]  # the bootstrap, and "init" rounds
    (init, recitals), = recited
    questions = [p.question for problems in load_problem_sets(str(tmp_path / "problems" / "train")).values()
                 for p in problems]
    assert init == "init" and sorted(r.query for r in recitals) == sorted(questions)
    assert all(line[2:] in r.query for r in recitals for line in r.response.strip().split("\n"))
    assert "round0/recital" in run.Manifest.load(str(tmp_path)).stages


@pytest.mark.parametrize("recite_in_rounds", [False, True])
def test_recite_in_rounds_gives_each_round_policy_the_questions_it_searched(tmp_path, monkeypatch,
                                                                            recite_in_rounds):
    from rstar_jax.config import CurriculumConfig

    stages = StandInStages(monkeypatch, str(tmp_path))
    config = EvolveConfig(rounds=(ROUND,) * 2, train_shards=2, recite_in_rounds=recite_in_rounds)
    curriculum = CurriculumConfig(levels=(1, 2), seed_levels=(1,), seed_per_level=2, train_per_level=4,
                                  test_per_level=1, numbered=True)
    run.evolve(str(tmp_path), config=config, curriculum=curriculum)
    train_sets = load_problem_sets(str(tmp_path / "problems" / "train"))
    searched = [sorted(p.question for problems in run.round_problems(train_sets, 2, r).values() for p in problems)
                for r in (1, 2)]
    assert stages.recited == [[]] + (searched if recite_in_rounds else [[], []])  # round 0 recites nothing


def test_search_methods_are_evaluated_from_search_eval_from_round_on(tmp_path, monkeypatch):
    from rstar_jax.config import CurriculumConfig

    stages = StandInStages(monkeypatch, str(tmp_path))
    config = EvolveConfig(rounds=(ROUND,) * 4, search_eval_from_round=3)
    curriculum = CurriculumConfig(levels=(1,), seed_levels=(1,), seed_per_level=2, train_per_level=3,
                                  test_per_level=1)
    run.evolve(str(tmp_path), config=config, curriculum=curriculum)
    assert stages.search_methods == [None, False, False, True, True]  # round 0 has no PPM to search with


def test_each_round_searches_and_extracts_its_own_shard(tmp_path, monkeypatch):
    """train_shards = 3 over five rounds: rounds 1-3 search disjoint thirds of every set (together
    the whole set), rounds 4-5 start over; extraction (and so coverage) sees the same problems, and
    a set too small for a shard sits that round out."""
    from rstar_jax.config import CurriculumConfig
    from rstar_jax.evolve import extract

    StandInStages(monkeypatch, str(tmp_path))
    searched, extracted = [], []

    def indices(sets):
        return {name: [p.index for p in problems] for name, problems in sets.items()}

    search_stage, extract_round = run.search_stage, extract.extract_round
    monkeypatch.setattr(run, "search_stage", lambda round_dir, sets, *args: (
        searched.append(indices(sets)), search_stage(round_dir, sets, *args))[1])
    monkeypatch.setattr(run, "extract_round", lambda round_dir, sets, *args: (
        extracted.append(indices(sets)), extract_round(round_dir, sets, *args))[1])
    config = EvolveConfig(rounds=(ROUND,) * 5, train_shards=3)
    curriculum = CurriculumConfig(levels=(1, 2), seed_levels=(1,), seed_per_level=2,
                                  train_per_level=(6, 2), test_per_level=1)
    run.evolve(str(tmp_path), config=config, curriculum=curriculum)
    shards = [{"level1": [0, 3], "level2": [0]}, {"level1": [1, 4], "level2": [1]}, {"level1": [2, 5]}]
    assert searched == extracted == shards + shards[:2]


def test_held_out_problems_are_searched_beside_each_rounds_shard(tmp_path, monkeypatch):
    """heldout_per_level: each round searches its shard of the held-out sets beside the training
    shard; extraction keeps them apart, so their trees give held-out pairs only."""
    from rstar_jax.config import CurriculumConfig
    from rstar_jax.data import records
    from rstar_jax.evolve import extract

    StandInStages(monkeypatch, str(tmp_path))
    searched, extracted = [], []
    search_stage, extract_round = run.search_stage, extract.extract_round
    monkeypatch.setattr(run, "search_stage", lambda round_dir, sets, *args: (
        searched.append({name: len(problems) for name, problems in sets.items()}),
        search_stage(round_dir, sets, *args))[1])
    monkeypatch.setattr(run, "extract_round", lambda round_dir, sets, *args: (
        extracted.append((sorted(sets), sorted(args[-1]))), extract_round(round_dir, sets, *args))[1])
    config = EvolveConfig(rounds=(ROUND,) * 2, train_shards=2, ppm_heldout_fraction=0)
    curriculum = CurriculumConfig(levels=(1,), seed_levels=(1,), seed_per_level=2, train_per_level=4,
                                  test_per_level=1, heldout_per_level=6)
    run.evolve(str(tmp_path), config=config, curriculum=curriculum)
    assert searched == [{"level1": 2, "heldout_level1": 3}] * 2
    assert extracted == [(["level1"], ["heldout_level1"])] * 2
    heldout_questions = {p.question for p in run.heldout_sets(str(tmp_path / "problems"))["heldout_level1"]}
    for r in (1, 2):
        held = records.read_pairs(str(tmp_path / f"round{r}" / "ppm_heldout.json"))
        train = records.read_pairs(str(tmp_path / f"round{r}" / "ppm.json"))
        assert held and all(pair.prompt.split("\n")[1] in heldout_questions for pair in held)
        assert not any(pair.prompt.split("\n")[1] in heldout_questions for pair in train)


def test_a_run_resumed_with_held_out_problems_its_problems_lack_warns(tmp_path, monkeypatch, caplog):
    """A workdir whose problems were written without held-out ones, resumed with heldout_per_level
    set, says that its rounds search none (its problems stage is done and is not rewritten)."""
    from rstar_jax.config import CurriculumConfig

    StandInStages(monkeypatch, str(tmp_path))
    curriculum = CurriculumConfig(levels=(1,), seed_levels=(1,), seed_per_level=2, train_per_level=4,
                                  test_per_level=1)
    run.evolve(str(tmp_path), config=EvolveConfig(rounds=(ROUND,)), curriculum=curriculum)
    assert "held-out" not in caplog.text
    resumed = dataclasses.replace(curriculum, heldout_per_level=6)
    run.evolve(str(tmp_path), config=EvolveConfig(rounds=(ROUND,) * 2), curriculum=resumed)
    assert "holds no held-out problems" in caplog.text
    assert not os.path.exists(tmp_path / "problems" / "heldout")


def test_sft_rounds_pool_the_search_records_of_the_last_rounds(tmp_path, monkeypatch):
    """sft_rounds = 2: round 3's policy trains on rounds 2 and 3's search records (and the replay)."""
    from rstar_jax.config import CurriculumConfig
    from rstar_jax.data import records
    from rstar_jax.evolve import extract

    StandInStages(monkeypatch, str(tmp_path))
    config = EvolveConfig(rounds=(ROUND,) * 3, sft_rounds=2, seed_replay=1, train_shards=3)
    curriculum = CurriculumConfig(levels=(1,), seed_levels=(1,), seed_per_level=2, train_per_level=6,
                                  test_per_level=1)
    run.evolve(str(tmp_path), config=config, curriculum=curriculum)
    own = [records.read_sft(str(tmp_path / f"round{r}" / extract.SFT_OWN)) for r in (1, 2, 3)]
    pooled = records.read_sft(str(tmp_path / "round3" / extract.SFT_TRAIN))
    assert own[1] and own[2] and pooled[1:] == own[1] + own[2]


def test_a_round_trains_its_ppm_with_its_own_train_config_or_the_runs(tmp_path, monkeypatch):
    from rstar_jax.config import CurriculumConfig, TrainConfig

    stages = StandInStages(monkeypatch, str(tmp_path))
    short, run_wide = TrainConfig(num_epochs=1), TrainConfig(num_epochs=8)
    config = EvolveConfig(rounds=(dataclasses.replace(ROUND, ppm_train=short), ROUND), ppm_train=run_wide)
    curriculum = CurriculumConfig(levels=(1,), seed_levels=(1,), seed_per_level=2, train_per_level=3,
                                  test_per_level=1)
    run.evolve(str(tmp_path), config=config, curriculum=curriculum)
    assert stages.ppm_trains == [short, run_wide]


def test_train_shards_must_fit_the_training_sets(tmp_path):
    from rstar_jax.config import CurriculumConfig

    curriculum = CurriculumConfig(levels=(1,), seed_levels=(1,), seed_per_level=2, train_per_level=3,
                                  test_per_level=1)
    with pytest.raises(ValueError, match="train_shards 4 is more than the largest training set's 3"):
        run.evolve(str(tmp_path), config=EvolveConfig(train_shards=4), curriculum=curriculum)


@pytest.mark.parametrize("name", ["train_shards", "sft_rounds", "ppm_pair_rounds"])
def test_round_counts_below_one_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match=f"{name} must be at least 1, got 0"):
        run.evolve(str(tmp_path), config=EvolveConfig(**{name: 0}))


def test_unknown_round_base_is_refused(tmp_path):
    with pytest.raises(ValueError, match="round_base 'latest' is not one of"):
        run.evolve(str(tmp_path), config=EvolveConfig(round_base="latest"))


def test_unknown_ppm_base_is_refused(tmp_path):
    with pytest.raises(ValueError, match="ppm_base 'base' is not one of"):
        run.evolve(str(tmp_path), config=EvolveConfig(ppm_base="base"))


def test_an_evaluation_mcts_rewarded_by_the_gold_answers_is_refused_before_any_stage(tmp_path):
    from rstar_jax.config import SearchConfig

    with pytest.raises(ValueError, match="ground_truth_rewards must be False"):
        run.evolve(str(tmp_path), config=EvolveConfig(eval_search=SearchConfig()))
    assert not os.path.exists(tmp_path / "manifest.json")


def test_evolve_without_a_gin_file_runs_the_tiny_cpu_default():
    """The library's defaults are neutral; `rstar-jax evolve` alone runs experiments/tiny_cpu.gin."""
    import gin

    from rstar_jax import cli

    assert cli.gin_files_for("evolve", []) == ["tiny_cpu"]
    assert cli.gin_files_for("evolve", ["smoke"]) == ["smoke"]
    assert cli.gin_files_for("eval", []) == []
    gin.clear_config()
    try:
        cli.configure("rstar_jax.evolve.run", "evolve", cli.gin_files_for("evolve", []), [], [])
        config = gin.get_bindings(run.evolve)["config"]
    finally:
        gin.clear_config()
    assert config != EvolveConfig() and config.model.num_hidden_layers != EvolveConfig().model.num_hidden_layers


def test_the_seed_argument_changes_the_curriculum_and_the_initialisation(tmp_path):
    """`rstar-jax evolve --seed s`: another seed draws other problems and another random init."""
    import numpy as np

    from rstar_jax.config import CurriculumConfig, ModelConfig
    from rstar_jax.data.curriculum import make_curriculum
    from rstar_jax.evolve.problems import write_curriculum
    from rstar_jax.models.hf import load_hf

    small = CurriculumConfig(levels=(1, 2), seed_levels=(1,), seed_per_level=20, train_per_level=4, test_per_level=4,
                             heldout_per_level=2)
    config = EvolveConfig(model=ModelConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1), tokenizer_vocab=400)
    assert run.with_seed(config, small, 0) == (config, small)  # seed 0 is the defaults
    runs = {}
    for seed in (0, 1):
        seeded, curriculum = run.with_seed(config, small, seed)
        directory = tmp_path / f"seed{seed}"
        write_curriculum(str(directory / "problems"), curriculum)
        sets = load_problem_sets(str(directory / "problems" / "train"))
        tokenizer = models.train_tokenizer(str(tmp_path / "tokenizer"), problems_texts(directory), 400) \
            if seed == 0 else str(tmp_path / "tokenizer")
        policy = models.init_policy(str(directory / "init"), tokenizer, seeded)
        weights = load_hf(policy)[0].embed_tokens.embedding.value
        runs[seed] = (make_curriculum(curriculum), sets, np.asarray(weights))
    (cur0, sets0, w0), (cur1, sets1, w1) = runs[0], runs[1]
    for split in ("seed", "train", "test", "heldout"):
        assert {p.question for p in getattr(cur0, split)}.isdisjoint({p.question for p in getattr(cur1, split)})
    assert sets0 != sets1
    assert w0.shape == w1.shape and not np.allclose(w0, w1)


def problems_texts(directory):
    from rstar_jax.evolve.problems import tokenizer_texts

    return tokenizer_texts(str(directory / "problems" / "seed.json"),
                           load_problem_sets(str(directory / "problems" / "train")))
