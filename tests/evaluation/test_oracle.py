"""The whole grading path on real benchmark answers: an oracle policy through the real pipeline.

The oracle follows the Sampler interface and writes an rStar-format solution for each known
question: a code block that prints the gold answer, then (once it sees the executed output) an
answer step ending in `\\boxed{gold}`. Prompting, step parsing, the sandboxed executor, answer
extraction and equivalence are all the real ones, so a correct oracle must score 100% on every
problem of the nine rStar sets and a wrong one 0%.
"""

import json
import os

import pytest

from rstar_jax.config import EvalConfig
from rstar_jax.data.problems import Problem, load_problem_sets
from rstar_jax.evaluate import evaluate_sets
from rstar_jax.evaluation.methods import Models
from rstar_jax.inference.sampler import Completion
from rstar_jax.search import step_format
from rstar_jax.verify.executor import Executor

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "eval_data_sample")
SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "eval_data")
NEEDS_SHARED = pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared/eval_data (the nine rStar sets) is absent")
WRONG = "-987654.3"  # no gold of the nine sets is equivalent to it


class OraclePolicy:
    """Sampler-compatible policy that knows the answers (or a fixed wrong one)."""

    def __init__(self, problems: list[Problem], *, wrong: bool = False):
        self.answers = {step_format.policy_prompt(p.question): WRONG if wrong else p.golds[0] for p in problems}

    def sample(self, prompts, num_samples, *, max_new_tokens, stop, temperature, top_p, top_k, seed):
        return [[self._complete(prompt, stop)] * num_samples for prompt in prompts]

    def _complete(self, prompt: str, stop) -> Completion:
        if step_format.OUTPUT_END not in prompt:  # no step yet: the code block
            answer = self.answers[prompt]
            text = f"{step_format.CODE}\n# Step 1: print the answer\nprint({answer!r})\n{step_format.CODE_END}"
            return Completion(text, [], "stop", 0.0, step_format.CODE_END)
        answer = self.answers[prompt[: prompt.rindex(step_format.CODE)]]
        text = f"\n{step_format.ANSWER}From the result, the answer is \\boxed{{{answer}}}.{step_format.ANSWER_END}"
        assert step_format.ANSWER_END in stop
        return Completion(text, [], "stop", 0.0, step_format.ANSWER_END)


def _evaluate(tmp_path, sets, *, wrong: bool, per_set: int = 0):
    problems = [p for ps in sets.values() for p in ps]
    config = EvalConfig(methods=("greedy",), batch_size=512, max_problems=per_set)
    with Executor(num_workers=2, timeout_s=30.0) as executor:
        return evaluate_sets(str(tmp_path), sets, Models(OraclePolicy(problems, wrong=wrong), executor), config,
                             process_index=0, process_count=1)


def _failures(tmp_path, rows):
    """(set, index, gold, answer) of every problem the oracle did not get right, for the message."""
    failures = []
    for row in rows:
        with open(tmp_path / row["set"] / "greedy" / "predictions.jsonl") as f:
            for record in map(json.loads, f):
                (cand,) = record["candidates"]
                if not cand["correct"]:
                    failures.append((row["set"], record["index"], record["gold"], cand["answer"]))
    return failures


def test_oracle_on_the_fixture_sample_scores_100_and_wrong_oracle_0(tmp_path):
    sets = load_problem_sets(FIXTURES)
    rows = _evaluate(tmp_path / "right", sets, wrong=False)
    assert _failures(tmp_path / "right", rows) == []
    assert [r["accuracy"] for r in rows] == [100.0] * len(sets)
    rows = _evaluate(tmp_path / "wrong", sets, wrong=True)
    assert [r["accuracy"] for r in rows] == [0.0] * len(sets)


@NEEDS_SHARED
def test_oracle_on_30_problems_of_each_real_set(tmp_path):
    sets = load_problem_sets(SHARED)
    rows = _evaluate(tmp_path, sets, wrong=False, per_set=30)
    assert _failures(tmp_path, rows) == []


@pytest.mark.slow
@NEEDS_SHARED
def test_oracle_on_every_problem_of_the_nine_real_sets(tmp_path):
    sets = load_problem_sets(SHARED)
    rows = _evaluate(tmp_path / "right", sets, wrong=False)
    assert _failures(tmp_path / "right", rows) == []
    assert sum(r["problems"] for r in rows) == 15195
    rows = _evaluate(tmp_path / "wrong", sets, wrong=True)
    assert [r["accuracy"] for r in rows] == [0.0] * len(sets)
