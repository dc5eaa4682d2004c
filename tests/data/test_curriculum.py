"""The synthetic curriculum: deterministic, correct worked solutions, disjoint splits."""

import contextlib
import dataclasses
import io
import random
import re

import pytest

from rstar_jax.config import CurriculumConfig
from rstar_jax.data.curriculum import generate_problem, make_curriculum
from rstar_jax.data.records import code_steps
from rstar_jax.search import step_format as sf

SMALL = CurriculumConfig(levels=(1, 2, 3, 4, 5, 6), seed_per_level=40, train_per_level=30, test_per_level=20)


def run_solution(response: str) -> str:
    """Executes the code block of a worked solution and returns what it prints."""
    code = response.split(sf.CODE, 1)[1].split(sf.CODE_END, 1)[0].replace(sf.STEP_END, "")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {})
    return out.getvalue().strip()


def test_same_config_same_problems():
    assert make_curriculum(SMALL) == make_curriculum(SMALL)


def test_split_seeds_are_independent():
    other = make_curriculum(dataclasses.replace(SMALL, train_seed=7))
    base = make_curriculum(SMALL)
    assert other.test == base.test and other.seed == base.seed and other.train != base.train


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5, 6])
def test_worked_solution_computes_the_answer(level):
    rng = random.Random(level)
    for _ in range(50):
        problem = generate_problem(rng, level)
        assert run_solution(problem.response) == str(problem.answer)
        assert problem.answer >= 0
        # opening sentence + one step per operation, then the print step and the answer step
        assert len(problem.solution) == level + 3
        assert code_steps(problem.response) == level + 1  # what the evolve report's step counts assume
        assert problem.solution[-1].endswith(f"\\boxed{{{problem.answer}}}.{sf.ANSWER_END}")
        assert problem.solution[-2].endswith(f"{sf.OUTPUT}{problem.answer}{sf.OUTPUT_END}")


def test_steps_use_a_running_variable_named_after_the_object():
    problem = generate_problem(random.Random(0), 4)
    obj = re.search(r"How many (\w+)|number of (\w+)", problem.question).group(1, 2)
    var = next(o for o in obj if o)
    for step in problem.solution[1:-2]:
        assert f"\n{var} = {var} " in step


def test_splits_and_solution_visibility():
    cur = make_curriculum(SMALL)
    assert {p.level for p in cur.seed} == set(SMALL.seed_levels)
    assert {p.level for p in cur.train} == {p.level for p in cur.test} == set(SMALL.levels)
    assert len(cur.seed) == 40 * 3 and len(cur.train) == 30 * 6 and len(cur.test) == 20 * 6
    assert all(p.solution for p in cur.seed)
    assert not any(p.solution for p in cur.train + cur.test)
    test_questions = {p.question for p in cur.test}
    assert not test_questions & {p.question for p in cur.train + cur.seed}
    assert len({p.question for p in cur.train}) == len(cur.train)


def test_several_phrasings_per_operation_and_numbers_grow():
    rng = random.Random(0)
    shapes: dict[str, set[str]] = {}
    answers = {}
    for level in (1, 6):
        problems = [generate_problem(rng, level) for _ in range(300)]
        answers[level] = sum(p.answer for p in problems) / len(problems)
        for p in problems:
            for step in p.solution[1:-2]:
                comment, code = step.strip().split("\n")[:2]
                op = code.split()[3]
                shape = re.sub(r"\b[A-Z]\w*|\d+", "_", comment)
                shapes.setdefault(op, set()).add(shape)
    assert set(shapes) == {"+", "-", "*", "//"}
    assert all(len(s) >= 3 for s in shapes.values()), shapes
    assert answers[6] > 3 * answers[1]


def test_seed_counts_can_differ_per_level():
    config = dataclasses.replace(SMALL, seed_levels=(1, 2, 3), seed_per_level=(30, 5, 2))
    seed = make_curriculum(config).seed
    assert [sum(p.level == n for p in seed) for n in (1, 2, 3)] == [30, 5, 2]
    with pytest.raises(ValueError, match="one count per level"):
        make_curriculum(dataclasses.replace(config, seed_per_level=(30, 5)))
