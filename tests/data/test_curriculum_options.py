"""The curriculum's story options: numbered sentences, wider operands (operand_scale), a chosen set
of operations, the seed's operation weights, per-level seed and training counts; the defaults draw
exactly the problems they drew before the options existed."""

import dataclasses
import hashlib
import random
import re

import pytest

from rstar_jax.config import CurriculumConfig
from rstar_jax.data.curriculum import generate_problem, make_curriculum

from test_curriculum import run_solution

SMALL = CurriculumConfig(levels=(1, 2, 3, 4, 5), seed_per_level=20, train_per_level=10, test_per_level=10)


@pytest.mark.parametrize("level", [1, 3, 5])
def test_numbered_labels_sentences_and_step_comments(level):
    rng = random.Random(level)
    for _ in range(20):
        problem = generate_problem(rng, level, numbered=True)
        labels = re.findall(r"\((\d+)\) ", problem.question)
        assert labels == [str(k) for k in range(1, level + 2)]
        comments = [re.search(r"# \((\d+)\) (.*)\n", step) for step in problem.solution[:-2]]
        assert [m.group(1) for m in comments] == labels
        for m in comments:  # each step's comment is its labelled sentence, as the question has it
            assert f"({m.group(1)}) {m.group(2)}" in problem.question
        assert run_solution(problem.response) == str(problem.answer)


def test_numbering_does_not_change_the_numbers_drawn():
    plain = generate_problem(random.Random(3), 4)
    numbered = generate_problem(random.Random(3), 4, numbered=True)
    assert numbered.answer == plain.answer
    assert re.sub(r"\(\d+\) ", "", numbered.question) == plain.question


def test_operand_scale_widens_the_ranges():
    def biggest(scale):
        rng = random.Random(0)
        return max(int(n) for _ in range(200)
                   for n in re.findall(r"\d+", generate_problem(rng, 2, operand_scale=scale).question))
    assert biggest(1) <= 20 < biggest(3)


def test_operations_limit_what_stories_do():
    """Without the halving and dividing operations no story has them; every solution still runs."""
    ops = ("add", "subtract", "multiply", "twice", "fewer", "more")
    rng = random.Random(0)
    for _ in range(100):
        problem = generate_problem(rng, 4, operations=ops)
        assert "//" not in problem.response
        assert run_solution(problem.response) == str(problem.answer)
    only_add = generate_problem(random.Random(1), 3, operations=("add",))
    assert only_add.response.count(" + ") == 3


@pytest.mark.parametrize("operations", [(), ("add", "square")])
def test_unknown_or_no_operations_are_refused(operations):
    with pytest.raises(ValueError, match="curriculum operations"):
        make_curriculum(dataclasses.replace(SMALL, operations=operations))


def test_seed_operation_weights_shape_only_the_seed():
    """Weights (1, 0): the seed's stories only add; training and test problems still subtract too."""
    cur = make_curriculum(dataclasses.replace(SMALL, operations=("add", "subtract"),
                                              seed_operation_weights=(1.0, 0.0)))
    assert all(" - " not in p.response for p in cur.seed)
    drawn = [make_curriculum(dataclasses.replace(SMALL, operations=("add", "subtract"))).train,
             cur.train, cur.test]
    subtracting = re.compile(r"loses \d+|uses \d+ of|gives \d+ \w+ to")
    assert drawn[0] == drawn[1] and any(subtracting.search(p.question) for p in cur.train + cur.test)


@pytest.mark.parametrize("weights", [(1.0,), (1.0, -1.0), (0.0, 0.0)])
def test_bad_seed_operation_weights_are_refused(weights):
    with pytest.raises(ValueError, match="seed_operation_weights"):
        make_curriculum(dataclasses.replace(SMALL, operations=("add", "subtract"),
                                            seed_operation_weights=weights))


def test_impossible_weights_fail_with_one_clear_error():
    """Weights that leave only subtracting cannot continue a story at count 2: the error says so."""
    config = dataclasses.replace(SMALL, levels=(6,), seed_levels=(6,), operations=("add", "subtract"),
                                 seed_operation_weights=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"weights \(0.0, 1.0\)\): none could continue a story"):
        make_curriculum(config)


def test_defaults_draw_what_they_drew_before_the_options():
    """A digest of every split's problems, taken with the curriculum before the story options
    (commit e40fee7): the defaults must keep drawing exactly these."""
    digest, cur = hashlib.sha256(), make_curriculum(SMALL)
    for split in (cur.seed, cur.train, cur.test):
        for p in split:
            digest.update(repr((p.question, p.answer, p.level, p.solution)).encode())
    assert digest.hexdigest()[:16] == "7e0546fdeae52f89"


def test_per_level_seed_and_training_counts():
    cur = make_curriculum(dataclasses.replace(SMALL, seed_levels=(1, 2, 3), seed_per_level=(5, 3, 1),
                                              train_per_level=(1, 2, 3, 4, 5)))
    assert [sum(p.level == lv for p in cur.seed) for lv in (1, 2, 3)] == [5, 3, 1]
    assert [sum(p.level == lv for p in cur.train) for lv in (1, 2, 3, 4, 5)] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        make_curriculum(dataclasses.replace(SMALL, seed_levels=(1, 2), seed_per_level=(5, 3, 1)))


def test_held_out_problems_are_drawn_beside_the_same_training_problems():
    """heldout_per_level draws its own problems per level, none of them a training or test question,
    and leaves the other splits as they were; another train seed draws other ones."""
    plain = make_curriculum(SMALL)
    cur = make_curriculum(dataclasses.replace(SMALL, heldout_per_level=6))
    assert plain.heldout == [] and (cur.seed, cur.train, cur.test) == (plain.seed, plain.train, plain.test)
    assert [sum(p.level == lv for p in cur.heldout) for lv in SMALL.levels] == [6] * 5
    questions = {p.question for p in cur.heldout}
    assert len(questions) == 30 and questions.isdisjoint({p.question for p in cur.train + cur.test})
    assert all(not p.solution for p in cur.heldout)
    other = make_curriculum(dataclasses.replace(SMALL, heldout_per_level=6, train_seed=7))
    assert questions.isdisjoint({p.question for p in other.heldout})
