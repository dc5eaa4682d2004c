"""The whole grading path on real benchmark answers: an oracle policy through the real pipeline.

The oracle follows the Sampler interface and writes an rStar-format solution for each known
question: a code block that prints the gold answer, then an answer step ending in
`\\boxed{gold}`. Prompting, step parsing, the sandboxed executor, answer extraction and
equivalence are all the real ones, so a correct oracle must score 100% on every problem of the
nine rStar sets and a wrong one 0%.
"""

import json
import os
import re

import pytest
from oracle import OraclePolicy, WrongSpotterPPM

from rstar_jax.config import EvalConfig
from rstar_jax.data.problems import load_problem_sets
from rstar_jax.evaluation.run import evaluate_sets
from rstar_jax.evaluation.methods import Models
from rstar_jax import steps as sf
from rstar_jax.verify.executor import Executor

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "eval_data_sample")
SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "eval_data")
NEEDS_SHARED = pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared/eval_data (the nine rStar sets) is absent")


@pytest.fixture(scope="module")
def executor():
    with Executor(num_workers=2, timeout_s=30.0) as ex:
        yield ex


def _evaluate(tmp_path, sets, executor, *, wrong: bool, per_set: int = 0, grade_workers: int = 0):
    policy = OraclePolicy([p for ps in sets.values() for p in ps], right_samples=() if wrong else None)
    config = EvalConfig(methods=("greedy",), batch_size=512, max_problems=per_set, grade_workers=grade_workers)
    return evaluate_sets(str(tmp_path), sets, Models(policy, executor), config, process_index=0, process_count=1)


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


def test_oracle_on_the_fixture_sample_scores_100_and_wrong_oracle_0(tmp_path, executor):
    sets = load_problem_sets(FIXTURES)
    rows = _evaluate(tmp_path / "right", sets, executor, wrong=False)
    assert _failures(tmp_path / "right", rows) == []
    assert [r["accuracy"] for r in rows] == [100.0] * len(sets)
    rows = _evaluate(tmp_path / "wrong", sets, executor, wrong=True)
    assert [r["accuracy"] for r in rows] == [0.0] * len(sets)
    # each set's batches log like training: metrics.jsonl (and TensorBoard) beside the predictions
    name = sorted(sets)[0]
    with open(tmp_path / "right" / name / "greedy" / "metrics.jsonl") as f:
        (line,) = map(json.loads, f)
    assert line["step"] == 1 and line[f"eval/{name}/greedy/first_candidate_accuracy"] == 1.0
    assert line[f"eval/{name}/greedy/done"] == len(sets[name]) and (tmp_path / "right" / name / "greedy" / "tensorboard").is_dir()


def test_two_hosts_each_take_a_slice_and_process_0_merges(tmp_path, executor):
    sets = {name: ps for name, ps in load_problem_sets(FIXTURES).items() if name in ("MATH_test", "omni_test")}
    policy = OraclePolicy([p for ps in sets.values() for p in ps])
    config = EvalConfig(methods=("greedy",), batch_size=1, grade_workers=0)

    def run(i):
        return evaluate_sets(str(tmp_path), sets, Models(policy, executor), config, process_index=i, process_count=2)

    assert run(1) == []  # not process 0: writes its shard only
    shard = tmp_path / "MATH_test" / "greedy" / "predictions.shard-00001-of-00002.jsonl"
    assert [json.loads(line)["position"] for line in shard.read_text().splitlines()] == [1, 3]
    rows = run(0)
    assert [(r["set"], r["problems"], r["accuracy"]) for r in rows] == [("MATH_test", 4, 100.0), ("omni_test", 4, 100.0)]
    merged = (tmp_path / "omni_test" / "greedy" / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["position"] for line in merged] == [0, 1, 2, 3]


class Killed(Exception):
    pass


class Recording(OraclePolicy):
    """The oracle, noting the solutions it starts and when its prefix pool is emptied (`events`);
    killed once it has started `die_after`."""

    def __init__(self, problems, die_after=None):
        super().__init__(problems)
        self.started, self.die_after, self.events = [], die_after, []

    def forget_prefixes(self):
        self.events.append("forget")

    def sample(self, prompts, num_samples, sampling, **kwargs):
        started = [p for p in prompts if p in self.golds]
        self.started += started
        self.events += ["start"] * len(started)
        if self.die_after is not None and len(self.started) > self.die_after:
            raise Killed
        return super().sample(prompts, num_samples, sampling, **kwargs)


def test_a_killed_evaluation_resumes_where_it_stopped(tmp_path, executor):
    problems = load_problem_sets(FIXTURES)["MATH_test"]  # 4 problems
    sets, config = {"MATH_test": problems}, EvalConfig(methods=("greedy",), batch_size=2, grade_workers=0)
    with pytest.raises(Killed):  # dies in the second batch
        evaluate_sets(str(tmp_path), sets, Models(Recording(problems, die_after=2), executor), config,
                      process_index=0, process_count=1)
    shard = tmp_path / "MATH_test" / "greedy" / "predictions.shard-00000-of-00001.jsonl"
    assert len(shard.read_text().splitlines()) == 2
    policy = Recording(problems)
    (row,) = evaluate_sets(str(tmp_path), sets, Models(policy, executor), config, process_index=0, process_count=1)
    assert row["problems"] == 4 and row["accuracy"] == 100.0
    assert policy.started == [sf.policy_prompt(p.question) for p in problems[2:]]  # only the rest


@NEEDS_SHARED
def test_oracle_on_10_problems_of_each_real_set(tmp_path, executor):
    sets = load_problem_sets(SHARED)
    rows = _evaluate(tmp_path, sets, executor, wrong=False, per_set=10)
    assert _failures(tmp_path, rows) == []


@pytest.mark.slow
@NEEDS_SHARED
def test_oracle_on_every_problem_of_the_nine_real_sets(tmp_path, executor):
    sets = load_problem_sets(SHARED)
    rows = _evaluate(tmp_path / "right", sets, executor, wrong=False, grade_workers=2)
    assert sum(r["problems"] for r in rows) == 15195
    failures = _failures(tmp_path / "right", rows)
    assert [f for f in failures if not _malformed(f[2])] == []  # a few omni_test golds are malformed
    rows = _evaluate(tmp_path / "wrong", sets, executor, wrong=True, grade_workers=2)
    assert [r["accuracy"] for r in rows] == [0.0] * len(sets)


def _malformed(gold) -> bool:
    """A gold that no boxed answer can reproduce: its braces (other than \\{ \\}) do not balance,
    e.g. the truncated "\\frac{5055}{2^{15}", or it ends in a stray backslash that escapes the
    box's closing brace."""
    gold, depth = gold if isinstance(gold, str) else gold[0], 0
    for ch in re.sub(r"\\[{}]", "", gold):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return True
    return depth != 0 or gold.endswith("\\")


def test_a_batch_cut_short_by_a_kill_runs_again_whole(tmp_path, executor):
    """A sampled row's key and its padding depend on its batch, so the resumed evaluation runs the
    batches of an uninterrupted one: the torn batch again whole, writing only its missing records."""
    problems = load_problem_sets(FIXTURES)["MATH_test"]  # 4 problems
    sets, config = {"MATH_test": problems}, EvalConfig(methods=("greedy",), batch_size=2, grade_workers=0)
    (full,) = evaluate_sets(str(tmp_path / "full"), sets, Models(Recording(problems), executor), config,
                            process_index=0, process_count=1)
    shard = tmp_path / "full" / "MATH_test" / "greedy" / "predictions.shard-00000-of-00001.jsonl"
    torn = tmp_path / "torn" / "MATH_test" / "greedy"
    torn.mkdir(parents=True)
    (torn / shard.name).write_text("".join(shard.read_text().splitlines(keepends=True)[:3]))  # batch 2 half written
    policy = Recording(problems)
    (row,) = evaluate_sets(str(tmp_path / "torn"), sets, Models(policy, executor), config,
                           process_index=0, process_count=1)
    assert policy.started == [sf.policy_prompt(p.question) for p in problems[2:]]  # the whole second batch
    assert (torn / "predictions.jsonl").read_text() == (shard.parent / "predictions.jsonl").read_text()
    assert row == full


class ForgettingPPM(WrongSpotterPPM):
    def __init__(self):
        self.forgotten = 0

    def forget_prefixes(self):
        self.forgotten += 1


def test_every_batch_starts_with_empty_prefix_pools(tmp_path, executor):
    """Reused prefixes move float roundings, so a batch run again after a kill matches its first try
    to the bit only if no batch reuses an earlier batch's prefixes."""
    problems = load_problem_sets(FIXTURES)["MATH_test"]  # 4 problems
    sets = {"MATH_test": problems}
    config = EvalConfig(methods=("best_of_n",), num_samples=1, batch_size=2, grade_workers=0)
    policy, ppm = Recording(problems), ForgettingPPM()
    evaluate_sets(str(tmp_path), sets, Models(policy, executor, ppm=ppm), config, process_index=0, process_count=1)
    assert policy.events == ["forget", "start", "start"] * 2 and ppm.forgotten == 2
