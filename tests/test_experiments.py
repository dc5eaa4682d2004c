"""Shipped gin configs: every file parses with the real gin parser; paper configs hold the paper's numbers."""

from __future__ import annotations

from pathlib import Path

import gin
import pytest

from rstar_jax import cli, steps
from rstar_jax.config import BOOTSTRAP_STOP, GREEDY_STOP, SEARCH_STOP, SamplingConfig

EXPERIMENTS = Path(cli.EXPERIMENTS_DIR)
GIN_FILES = sorted(EXPERIMENTS.rglob("*.gin"))
PAPER_7B = ["paper/qwen25_math_7b_v5p64.gin", "paper/qwen25_math_7b_8xh100.gin"]
PAPER_1P5B = ["paper/qwen25_math_1p5b_v5p64.gin", "paper/qwen25_math_1p5b_8xh100.gin"]


@pytest.fixture(autouse=True)
def fresh_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def resolved(command_module: str, fn_name: str, gin_file: str) -> dict:
    """The arguments gin would pass to `fn_name`, with every macro and reference evaluated."""
    cli.configure(command_module, fn_name, [gin_file], [], [])
    module = __import__(command_module, fromlist=[fn_name])
    return gin.get_bindings(getattr(module, fn_name))


@pytest.mark.parametrize("path", GIN_FILES, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_every_shipped_gin_file_parses(path):
    """Includes and imports resolve, and every binding names an existing parameter."""
    gin.parse_config_file(str(path))


@pytest.mark.parametrize("gin_file", PAPER_7B)
def test_paper_rounds(gin_file):
    config = resolved("rstar_jax.evolve.run", "evolve", gin_file)["config"]
    searches = [r.search for r in config.rounds]
    assert [(s.num_rollouts, s.num_candidates) for s in searches] == [(8, 5), (16, 8), (16, 8), (16, 16)]
    assert [s.use_ppm for s in searches] == [False, False, True, True]  # terminal-guided, then PPM-augmented
    assert all(s.ground_truth_rewards for s in searches)
    assert [r.unsolved_rollouts for r in config.rounds] == [(16,), (16,), (16,), (16, 64, 128)]
    assert searches[0].prompt == "few_shot" and searches[0].errors_threshold == 2
    assert [s.sampling for s in searches] == [
        SamplingConfig(temperature=0.7, max_new_tokens=2048, stop=BOOTSTRAP_STOP)] + [
        SamplingConfig(temperature=1.0, max_new_tokens=2048, stop=SEARCH_STOP)] * 3
    assert config.eval_search.sampling == SamplingConfig(temperature=1.0, max_new_tokens=2048, stop=SEARCH_STOP)
    sft, ppm = config.policy_train, config.ppm_train
    assert (sft.batch_size, sft.learning_rate, sft.num_epochs, sft.max_length, sft.schedule, sft.weight_decay) == (
        128, 7e-6, 2, 4096, "linear", 0.1)
    assert (ppm.batch_size, ppm.learning_rate, ppm.max_length, ppm.weight_decay) == (512, 7e-6, 2048, 0.0)
    assert sft.remat and ppm.remat
    assert (config.sft_per_problem, config.min_step_margin, config.min_edit_distance) == (2, 0.5, 20)
    assert config.round_base == "base"  # each round's policy starts again from the base model
    assert config.eval_search.num_candidates == 32 and not config.eval_search.ground_truth_rewards
    assert config.search_eval_problems == 0  # MCTS on every test problem


@pytest.mark.parametrize("gin_file", PAPER_7B + PAPER_1P5B)
def test_paper_evaluation(gin_file):
    args = resolved("rstar_jax.evaluation.run", "evaluate", gin_file)
    assert (args["search"].num_rollouts, args["search"].num_candidates) == (12, 32)
    assert args["search"].sampling == SamplingConfig(temperature=1.0, max_new_tokens=2048, stop=SEARCH_STOP)
    assert (args["config"].num_runs, args["config"].top_n) == (64, 4)


@pytest.mark.parametrize("gin_file", PAPER_1P5B)
def test_small_policy_is_fine_tuned_like_the_7b(gin_file):
    config = resolved("rstar_jax.training.sft", "train_sft", gin_file)["config"]
    assert (config.batch_size, config.learning_rate, config.max_length) == (128, 7e-6, 4096)


@pytest.mark.parametrize("gin_file", PAPER_7B)
def test_ppm_training(gin_file):
    config = resolved("rstar_jax.training.ppm", "train_ppm", gin_file)["config"]
    assert (config.batch_size, config.learning_rate, config.max_length, config.eval_fraction) == (512, 7e-6, 2048, 0.05)


def test_tiny_cpu_sampling():
    """Each round's search samples 48-token steps at 0.8, the evaluation's MCTS at 0.2; greedy eval 320 tokens,
    best-of-8 at 0.7 (greedy always decodes at 0)."""
    config = resolved("rstar_jax.evolve.run", "evolve", "tiny_cpu.gin")["config"]
    assert [r.search.sampling for r in config.rounds] == [
        SamplingConfig(temperature=0.8, max_new_tokens=48, stop=SEARCH_STOP)] * 4
    assert config.eval_search.sampling == SamplingConfig(temperature=0.2, max_new_tokens=48, stop=SEARCH_STOP)
    assert config.evaluation.sampling == SamplingConfig(temperature=0.7, max_new_tokens=320, stop=GREEDY_STOP)
    assert config.evaluation.methods == ("greedy", "mcts", "best_of_n") and config.evaluation.num_samples == 8


def test_tiny_cpu_trains_round_4s_ppm_longest():
    """Rounds 1-3 train their PPMs 1, 2 and 2 epochs, round 4 (no round config) the run's 8; every one
    inherits the rest of the `ppm/` scope (gin's nested scopes)."""
    config = resolved("rstar_jax.evolve.run", "evolve", "tiny_cpu.gin")["config"]
    trains = [config.round_ppm_train(r) for r in config.rounds]
    assert [t.num_epochs for t in trains] == [1, 2, 2, 8]
    assert {(t.learning_rate, t.batch_size) for t in trains} == {(1e-4, 16)}


def test_tiny_cpu_ppm_reads_a_step_over_its_tokens():
    assert resolved("rstar_jax.evolve.run", "evolve", "tiny_cpu.gin")["config"].ppm.readout == "step_mean"


def test_smoke_and_eval_small_sampling():
    config = resolved("rstar_jax.evolve.run", "evolve", "smoke.gin")["config"]
    step = SamplingConfig(max_new_tokens=24, stop=SEARCH_STOP)
    assert [r.search.sampling for r in config.rounds] == [step, step] and config.eval_search.sampling == step
    assert config.evaluation.sampling == SamplingConfig(max_new_tokens=48, stop=GREEDY_STOP)
    gin.clear_config()
    args = resolved("rstar_jax.evaluation.run", "evaluate", "eval_small.gin")
    assert args["search"].sampling == SamplingConfig(max_new_tokens=128, stop=SEARCH_STOP)
    assert args["config"].sampling == SamplingConfig(max_new_tokens=256, stop=GREEDY_STOP)


def test_config_stop_strings_are_the_step_formats():
    """config.py sits below steps.py, so it spells the stop tuples out; they must stay the same."""
    assert (SEARCH_STOP, BOOTSTRAP_STOP, GREEDY_STOP) == (steps.SEARCH_STOP, steps.BOOTSTRAP_STOP, steps.GREEDY_STOP)
