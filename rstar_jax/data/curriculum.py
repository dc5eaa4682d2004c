"""Synthetic arithmetic word problems: the CPU default's curriculum.

A problem tells a short story about one quantity (a person's apples, marbles, ...) changed by
`level` operations, then asks for the final count. The generator knows every intermediate value,
so it can render a worked solution in rStar's step format: one code step per sentence, the
sentence as a comment, and a running variable named after the object (`apples = apples + 3`),
which generalises to longer stories than a seed set shows better than one variable per step.
Only the seed split exposes solutions; train and test are question + answer, like real data.

Story options (CurriculumConfig): sentences labelled "(1) ", "(2) ", ... (numbered), wider
operand ranges (operand_scale), the operations stories draw from (operations), and how often the
seed's stories use each of them (seed_operation_weights: train and test always draw evenly).

A question also reads back (`read_story`) into each sentence's operation and the code it asks for,
so any program written for it can be graded step by step (`grade_steps`, `operation_counts`: the
evolve report's steps by operation), and recited sentence by sentence (`recital`: what a
from-scratch policy can practise copying on before it sees a worked solution).
"""

from __future__ import annotations

import collections
import dataclasses
import random
import re
import string
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from rstar_jax.config import CurriculumConfig
from rstar_jax import steps as sf

NAMES = (
    "Mia", "Tom", "Ava", "Leo", "Zoe", "Sam", "Ivy", "Max", "Eli", "Amy", "Ben", "Lily", "Omar",
    "Nina", "Ravi", "Kate", "Jack", "Emma", "Noah", "Sara",
)
OBJECTS = (
    "apples", "pencils", "marbles", "cookies", "stickers", "books", "coins", "cards", "shells",
    "flowers", "eggs", "toys", "stamps", "candies", "balloons", "beads",
)
QUESTIONS = (
    "How many {obj} does {who} have now?",
    "How many {obj} does {who} have in the end?",
    "What is the number of {obj} that {who} has now?",
)
MAX_VALUE = 999  # keeps every intermediate count small enough for a tiny tokenizer's digits


@dataclasses.dataclass(frozen=True)
class Problem:
    """One generated problem; `solution` is the list of rStar step texts (empty when hidden)."""

    question: str
    answer: int
    level: int
    solution: tuple[str, ...] = ()

    @property
    def response(self) -> str:
        return "".join(self.solution)


@dataclasses.dataclass(frozen=True)
class Curriculum:
    seed: list[Problem]  # worked solutions (the seed levels only)
    train: list[Problem]  # question + answer only
    test: list[Problem]  # question + answer only, disjoint from seed and train
    heldout: list[Problem] = dataclasses.field(default_factory=list)  # as train, disjoint from train and test


_Drawn = tuple[int, int] | None  # (amount n, new count), or None when the operation does not apply


@dataclasses.dataclass(frozen=True)
class Operation:
    """One way a story changes its count: how it draws its amount `n` and the new count from the
    current count (`draw` gives None when it does not apply, e.g. an odd count cannot be halved),
    its sentences and code as templates over {who}, {other}, {obj}, {n} and {var}, and whether the
    story's subject moves to {other} (True always, False never, None when the chosen sentence
    starts with "{other} has")."""

    draw: Callable[[random.Random, int, int, int], _Drawn]
    sentences: tuple[str, ...]
    code: str
    moves: bool | None


def _span(level: int, scale: int) -> int:
    return scale * (5 + 5 * level)


def _operand(rng: random.Random, level: int, scale: int) -> int:
    return rng.randint(2, _span(level, scale))


def _draw_add(rng: random.Random, v: int, level: int, scale: int) -> _Drawn:
    n = _operand(rng, level, scale)
    return n, v + n


def _draw_subtract(rng: random.Random, v: int, level: int, scale: int) -> _Drawn:
    if v < 3:
        return None
    n = rng.randint(2, min(v - 1, _span(level, scale)))
    return n, v - n


def _draw_multiply(rng: random.Random, v: int, level: int, scale: int) -> _Drawn:
    n = rng.randint(3, 3 + level // 2)
    return n, v * n


def _draw_divide(rng: random.Random, v: int, level: int, scale: int) -> _Drawn:
    divisors = [n for n in range(3, 7) if v % n == 0 and v // n >= 1]
    if not divisors:
        return None
    n = rng.choice(divisors)
    return n, v // n


def _draw_twice(rng: random.Random, v: int, level: int, scale: int) -> _Drawn:
    return 2, v * 2


def _draw_half(rng: random.Random, v: int, level: int, scale: int) -> _Drawn:
    return None if v % 2 else (2, v // 2)


OPERATIONS: dict[str, Operation] = {
    "add": Operation(_draw_add, ("{who} buys {n} more {obj}.", "{who} finds {n} more {obj}.",
                                 "{other} gives {who} {n} more {obj}."), "{var} + {n}", False),
    "subtract": Operation(_draw_subtract, ("{who} gives {n} {obj} to {other}.", "{who} loses {n} {obj}.",
                                           "{who} uses {n} of the {obj}."), "{var} - {n}", False),
    "multiply": Operation(_draw_multiply, ("{who} ends up with {n} times as many {obj} as before.",
                                           "{who} multiplies the {obj} by {n}."), "{var} * {n}", False),
    "divide": Operation(_draw_divide, ("{who} splits the {obj} into {n} equal piles and keeps one pile.",
                                       "{who} puts the {obj} into {n} equal boxes and keeps one box."),
                        "{var} // {n}", False),
    "twice": Operation(_draw_twice, ("{who} doubles the {obj}.", "{other} has twice as many {obj} as {who}."),
                       "{var} * 2", None),
    "half": Operation(_draw_half, ("{who} gives away half of the {obj}.",
                                   "{other} has half as many {obj} as {who}."), "{var} // 2", None),
    "fewer": Operation(_draw_subtract, ("{other} has {n} fewer {obj} than {who}.",), "{var} - {n}", True),
    "more": Operation(_draw_add, ("{other} has {n} more {obj} than {who}.",), "{var} + {n}", True),
}
OPENING, OPENING_CODE = "{who} has {n} {obj}.", "{n}"  # a story's first sentence, and its code


_DRAWS = 1000  # an operation draw gives up after this many infeasible proposals in a row


@dataclasses.dataclass(frozen=True)
class _Told:
    sentence: str  # the story sentence
    code: str  # the assignment a worked solution writes for it
    value: int  # the count after the operation
    subject: str  # whose count it is afterwards


def _tell(rng: random.Random, value: int, level: int, subject: str, obj: str, scale: int,
          operations: tuple[str, ...], weights: tuple[float, ...]) -> _Told:
    """Draws a feasible operation among `operations` (uniformly, or by `weights`) and fills one of
    its sentences."""
    for _ in range(_DRAWS):
        name = rng.choices(operations, weights)[0] if weights else rng.choice(operations)
        operation = OPERATIONS[name]
        drawn = operation.draw(rng, value, level, scale)
        if drawn is None or drawn[1] > MAX_VALUE:
            continue
        n, new_value = drawn
        template = rng.choice(operation.sentences)
        other = rng.choice([person for person in NAMES if person != subject])
        moves = template.startswith("{other} has") if operation.moves is None else operation.moves
        sentence = template.format(who=subject, other=other, obj=obj, n=n)
        var = _variable(obj)
        return _Told(sentence, f"{var} = {operation.code.format(var=var, n=n)}", new_value,
                     other if moves else subject)
    raise ValueError(f"operations {operations} (weights {weights or 'even'}): none could continue a story "
                     f"at count {value} in {_DRAWS} draws")


def _variable(obj: str) -> str:
    return obj  # plural nouns are valid Python identifiers


def comment_line(sentence: str) -> str:
    """The comment line a worked solution writes above a sentence's code (what recitals recite and
    grading compares)."""
    return f"# {sentence}"


def render_solution(steps: Iterable[tuple[str, str]], var: str, answer: int) -> tuple[str, ...]:
    """rStar step texts for (comment, code) pairs, the print step with its output, and the answer."""
    texts = [sf.render_code_step(f"{comment_line(comment)}\n{code}", first=i == 0)
             for i, (comment, code) in enumerate(steps)]
    texts.append(sf.render_last_code_step(f"# Now print the final answer\nprint({var})", str(answer)))
    texts.append(sf.render_answer_step(f"From the result, the answer is \\boxed{{{answer}}}."))
    return tuple(texts)


def generate_problem(rng: random.Random, level: int, *, numbered: bool = False,
                     operand_scale: int = 1, operations: tuple[str, ...] = tuple(OPERATIONS),
                     weights: tuple[float, ...] = ()) -> Problem:
    """A problem with `level` operations after the opening sentence; the solution is attached.

    `numbered` labels the story's sentences "(1) ", "(2) ", ... and each step's comment with its
    sentence's label; `operand_scale` widens the opening count's and the amounts' ranges;
    `operations` names the operations a story may use (keys of OPERATIONS), drawn uniformly or
    with one weight per operation.
    """
    who, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    var = _variable(obj)
    value = rng.randint(2, operand_scale * 10 * level)
    sentences = [OPENING.format(who=who, n=value, obj=obj)]
    steps = [(sentences[0], f"{var} = {OPENING_CODE.format(n=value)}")]
    for _ in range(level):
        told = _tell(rng, value, level, who, obj, operand_scale, operations, weights)
        sentences.append(told.sentence)
        steps.append((told.sentence, told.code))
        value, who = told.value, told.subject
    if numbered:
        sentences = [f"({k}) {s}" for k, s in enumerate(sentences, start=1)]
        steps = [(s, code) for s, (_, code) in zip(sentences, steps)]
    question = " ".join(sentences) + " " + rng.choice(QUESTIONS).format(obj=obj, who=who)
    return Problem(question, value, level, render_solution(steps, var, value))


def generate_split(seed: int | str, levels: Iterable[int], per_level: int | tuple[int, ...],
                   exclude: frozenset[str] = frozenset(), with_solution: bool = False,
                   **story: Any) -> list[Problem]:
    """`per_level` distinct problems per level (or one count per level) from one seed, skipping
    questions in `exclude`; `story` (the story options) goes to generate_problem."""
    rng = random.Random(seed)
    problems, seen = [], set(exclude)
    levels = tuple(levels)
    counts = (per_level,) * len(levels) if isinstance(per_level, int) else tuple(per_level)
    if len(counts) != len(levels):
        raise ValueError(f"generate_split: {len(counts)} counts for {len(levels)} levels")
    for level, wanted in zip(levels, counts):
        count = attempts = 0
        while count < wanted:
            attempts += 1
            if attempts > 100 * wanted:
                raise ValueError(f"level {level}: cannot draw {wanted} distinct problems")
            problem = generate_problem(rng, level, **story)
            if problem.question in seen:
                continue
            seen.add(problem.question)
            problems.append(problem if with_solution else dataclasses.replace(problem, solution=()))
            count += 1
    return problems


def make_curriculum(config: CurriculumConfig) -> Curriculum:
    """Seed, train, test and held-out splits from separate seeds; test questions never appear in
    the others, nor training questions in the held-out split."""
    unknown = set(config.operations) - set(OPERATIONS)
    if unknown or not config.operations:
        raise ValueError(f"curriculum operations {config.operations}: give some of {tuple(OPERATIONS)}")
    weights = tuple(config.seed_operation_weights)
    if weights and (len(weights) != len(config.operations) or min(weights) < 0 or not sum(weights)):
        raise ValueError(f"curriculum seed_operation_weights {weights}: give one weight >= 0 per "
                         f"operation of {config.operations}, not all 0")
    story = {"numbered": config.numbered, "operand_scale": config.operand_scale,
             "operations": tuple(config.operations)}
    test = generate_split(config.test_seed, config.levels, config.test_per_level, **story)
    test_questions = frozenset(p.question for p in test)
    seed = generate_split(config.seed_seed, config.seed_levels, config.seed_per_level,
                          exclude=test_questions, with_solution=True, weights=weights, **story)
    train = generate_split(config.train_seed, config.levels, config.train_per_level,
                           exclude=test_questions, **story)
    heldout = generate_split(f"heldout/{config.train_seed}", config.levels, config.heldout_per_level,
                             exclude=test_questions | {p.question for p in train}, **story)
    return Curriculum(seed=seed, train=train, test=test, heldout=heldout)


# --------------------------------------------------------------------------------------------
# Reading a story back: which operation each sentence tells, and whether a program's steps do it.
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StoryStep:
    """A sentence of a story read back: the sentence as the question tells it (label included), its
    operation ("start" for the opening count, else a key of OPERATIONS) and the assignment a worked
    solution writes for it (under the comment `# <sentence>`)."""

    sentence: str
    operation: str
    code: str


_FIELDS = {"who": r"[A-Z][a-z]+", "other": r"[A-Z][a-z]+", "obj": r"(?P<obj>[a-z]+)", "n": r"(?P<n>\d+)"}


def _sentence_pattern(template: str) -> re.Pattern[str]:
    """A regular expression for the sentences a template fills ({n} and {obj} captured)."""
    return re.compile("".join(re.escape(literal) + (_FIELDS[field] if field else "")
                              for literal, field, _, _ in string.Formatter().parse(template)))


_READERS = tuple((name, _sentence_pattern(sentence), code)
                 for name, sentences, code in (("start", (OPENING,), OPENING_CODE),
                                               *((k, op.sentences, op.code) for k, op in OPERATIONS.items()))
                 for sentence in sentences)


def read_story(question: str) -> tuple[StoryStep, ...] | None:
    """The sentences of a curriculum question (numbered or not) in order, each with its operation
    and code; None when a sentence is not one the curriculum tells (another dataset's question)."""
    *sentences, _ = re.split(r"(?<=\.) ", question)  # the last piece asks for the count
    story = []
    for sentence in sentences:
        told = re.sub(r"^\(\d+\) ", "", sentence)
        match = next(((name, m, code) for name, pattern, code in _READERS if (m := pattern.fullmatch(told))), None)
        if match is None:
            return None
        name, m, code = match
        var = _variable(m["obj"])
        story.append(StoryStep(sentence, name, f"{var} = {code.format(var=var, n=m.groupdict().get('n'))}"))
    return tuple(story) or None


def recital(question: str, rng: random.Random) -> str | None:
    """The story's sentences in a random order, one per line as a worked solution's comments write
    them (`# (3) Tom loses 4 apples.`): the answer to "which sentence has this label?" for every
    label, with no operation's code in it. None for a question the curriculum does not tell."""
    story = read_story(question)
    if story is None:
        return None
    lines = [comment_line(step.sentence) for step in story]
    rng.shuffle(lines)
    return "\n" + "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class StepGrade:
    """One sentence's step in a program: `right` when the program's k-th assignment is the code
    sentence k asks for (spaces aside), `copied` when the comment line just above that assignment
    is the sentence. A skipped or extra step puts the steps after it off by one: wrong."""

    operation: str
    copied: bool
    right: bool


_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*\s*=(?!=)")


def grade_steps(question: str, response: str) -> list[StepGrade] | None:
    """A `StepGrade` for each sentence of a curriculum question; None for another dataset's."""
    story = read_story(question)
    if story is None:
        return None
    lines = sf.extract_program(response).splitlines()
    written = [(lines[i - 1] if i else "", re.sub(r"\s", "", line))  # (the line above, the assignment)
               for i, line in enumerate(lines) if _ASSIGNMENT.match(line)]
    return [StepGrade(step.operation, k < len(written) and written[k][0] == comment_line(step.sentence),
                      k < len(written) and written[k][1] == re.sub(r"\s", "", step.code))
            for k, step in enumerate(story)]


class OperationCounts(NamedTuple):
    """{operation: [steps, all steps]} in the order "start", then OPERATIONS: the steps whose code
    is right, and those whose comment is copied."""

    right: dict[str, list[int]]
    copied: dict[str, list[int]]


def operation_counts(solutions: Iterable[tuple[str, str]]) -> OperationCounts:
    """`grade_steps` tallied per operation over (question, response) pairs, in one pass; questions
    the curriculum does not tell are left out."""
    right: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    copied: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for question, response in solutions:
        for grade in grade_steps(question, response) or ():
            for counts, holds in ((right, grade.right), (copied, grade.copied)):
                counts[grade.operation][0] += holds
                counts[grade.operation][1] += 1
    order = [name for name in ("start", *OPERATIONS) if name in right]
    return OperationCounts({name: right[name] for name in order}, {name: copied[name] for name in order})
