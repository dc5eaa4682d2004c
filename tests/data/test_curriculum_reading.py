"""Reading a story back: every sentence's operation and code, and a program's steps graded
against them (the report's steps by operation)."""

import random
import re

import pytest

from rstar_jax import steps as sf
from rstar_jax.data.curriculum import (OPERATIONS, StepGrade, generate_problem, grade_steps, operation_counts,
                                      read_story, recital)


def assignments(response: str) -> list[str]:
    return [line for line in sf.extract_program(response).splitlines() if " = " in line]


@pytest.mark.parametrize("numbered", [True, False])
def test_every_sentence_reads_back_as_the_code_its_worked_solution_writes(numbered):
    rng = random.Random(0)
    seen = set()
    for level in range(1, 7):
        for _ in range(60):
            problem = generate_problem(rng, level, numbered=numbered, operand_scale=rng.choice((1, 3)))
            story = read_story(problem.question)
            assert [step.code for step in story] == assignments(problem.response)
            assert story[0].operation == "start" and len(story) == level + 1
            seen.update(step.operation for step in story[1:])
    assert seen == set(OPERATIONS)  # every phrasing of every operation was read


def rights(question, response):
    return [grade.right for grade in grade_steps(question, response)]


def test_a_program_is_graded_step_by_step():
    rng = random.Random(3)
    problem = generate_problem(rng, 4, numbered=True, operations=("add", "subtract", "fewer"))
    story = read_story(problem.question)
    assert all(step.sentence in problem.question and step.sentence.startswith(f"({k}) ")
               for k, step in enumerate(story, start=1))
    assert grade_steps(problem.question, problem.response) == [StepGrade(step.operation, True, True) for step in story]
    codes = assignments(problem.response)
    flipped = problem.response.replace(codes[2], codes[2].replace("+", "#").replace("-", "+").replace("#", "-"))
    assert rights(problem.question, flipped) == [True, True, False, True, True]
    skipped = problem.response.replace(codes[1] + "\n", "")  # the steps after a skipped one are off by one
    assert rights(problem.question, skipped) == [True, False, False, False, False]
    spaced = problem.response.replace(" = ", "=").replace(" + ", "+").replace(" - ", "-")
    assert all(rights(problem.question, spaced))
    assert rights(problem.question, "no program") == [False] * 5


def test_a_comment_is_copied_when_it_is_the_sentence():
    rng = random.Random(4)
    problem = generate_problem(rng, 3, numbered=True)
    story = read_story(problem.question)
    miscopied = problem.response.replace(story[2].sentence, story[2].sentence.replace("(3) ", "(3)  "))
    assert [g.copied for g in grade_steps(problem.question, miscopied)] == [True, True, False, True]
    assert all(rights(problem.question, miscopied))  # the code under it is still the sentence's
    unlabelled = generate_problem(random.Random(4), 3)
    assert all(g.copied and g.right for g in grade_steps(unlabelled.question, unlabelled.response))


def test_other_questions_are_not_read_and_counts_follow_the_operations_order():
    assert read_story("Natalia sold clips to 48 of her friends in April. How many clips did she sell?") is None
    assert read_story("What is 2 + 3?") is None
    rng = random.Random(1)
    problems = [generate_problem(rng, 2, operations=("more", "add")) for _ in range(5)]
    counts, copied = operation_counts([(p.question, p.response) for p in problems]
                                      + [("What is 2 + 3?", "<code>\nx = 5\n<end_of_code>")])
    assert list(counts) == [name for name in ("start", "add", "more") if name in counts]
    assert counts["start"] == [5, 5] and sum(all_ for _, all_ in counts.values()) == 15
    assert all(right == all_ for right, all_ in counts.values())
    assert copied == counts  # worked solutions copy every sentence
    miscopied = [(p.question, p.response.replace("# ", "#  ", 1)) for p in problems]  # the opening's comment
    graded = operation_counts(miscopied)
    assert graded.copied["start"] == [0, 5] and graded.right == counts
    assert re.fullmatch(r"\w+ = \w+ \+ \d+", read_story(problems[0].question)[1].code)


def test_a_recital_is_every_sentence_once_as_a_solution_comments_it_in_a_drawn_order():
    rng = random.Random(2)
    orders = set()
    for _ in range(20):
        problem = generate_problem(rng, 4, numbered=True)
        text = recital(problem.question, rng)
        comments = [line for line in problem.response.splitlines() if line.startswith("# (")]
        assert text.startswith("\n") and sorted(text[1:].split("\n")) == sorted(comments)
        assert all(line in problem.question for line in (c[2:] for c in comments))
        orders.add(tuple(line[3] for line in text[1:].split("\n")))  # the labels' order
    assert len(orders) > 10  # a drawn order, not the story's
    assert recital("What is 2 + 3?", rng) is None
