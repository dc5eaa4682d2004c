"""run_mcts / run_beam_search on a fake text policy with the real executor and grader; tree I/O."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from fake_search import check_consistent
from fake_text import FakeCompletion, FakePolicy, FakePPM, seeded_rng

from rstar_jax.config import SearchConfig
from rstar_jax.data.problems import Problem
from rstar_jax import steps as sf
from rstar_jax.search import io
from rstar_jax.search.driver import _postprocess, run_mcts
from rstar_jax.search.tree import NodeKind
from rstar_jax.verify.executor import Executor

PROBLEMS = [Problem(i, f"What is 3 + 4? (variant {i})", "7", "toy") for i in range(3)]


@pytest.fixture(scope="module")
def executor():
    with Executor(num_workers=2, timeout_s=5.0) as ex:
        yield ex


@pytest.fixture(scope="module")
def searched(executor):
    # seed: the fake policy's draws hash the prompt; this one grows every kind of node
    config = SearchConfig.data_generation(3, num_rollouts=4, num_candidates=4, max_depth=5, batch_size=2,
                                          max_nodes=100, seed=4)
    policy, ppm = FakePolicy(), FakePPM()
    return run_mcts(PROBLEMS, policy, ppm, config, executor, progress=False), policy, ppm


def test_mcts_trees_are_consistent(searched):
    result, policy, ppm = searched
    assert len(result) == 3 and result.arrays["parent"].shape[1] == 128  # bucketed
    tree = result.device_tree()
    kinds = set()
    for b in range(len(result)):
        check_consistent(tree, b)
        recs = result.nodes[b]
        assert len(recs) == result.num_nodes(b)
        for i, rec in enumerate(recs[1:], start=1):
            kind = NodeKind(int(result.arrays["kind"][b, i]))
            kinds.add(kind)
            if kind == NodeKind.ANSWER:
                assert rec.correct == (rec.answer == "7")
                assert result.arrays["value"][b, i] == (1.0 if rec.correct else -1.0)
            if kind == NodeKind.CODE_ERRORS:
                assert rec.answer == sf.TOO_MANY_CODE_ERRORS and rec.text.endswith("Error: " + rec.output.split(": ", 1)[1] + sf.OUTPUT_END)
            if kind == NodeKind.STEP:
                assert not np.isnan(result.arrays["ppm_value"][b, i])  # PPM-initialised Q
            if sf.CODE_END in rec.text and kind == NodeKind.STEP:
                assert rec.text.endswith(sf.OUTPUT + "7" + sf.OUTPUT_END)
        if result.pass_at_n(b):
            assert result.answer(b) == "7"
    assert {NodeKind.ANSWER, NodeKind.CODE_ERRORS, NodeKind.STEP} <= kinds
    # one sampler call per phase covers every leaf of the batch
    assert max(policy.calls) == 2


def test_save_load_export(searched, tmp_path):
    result = searched[0]
    io.save(result, str(tmp_path / "s"))
    back = io.load(str(tmp_path / "s"))
    assert back.problems == result.problems and back.nodes == result.nodes
    for k, v in result.arrays.items():
        np.testing.assert_array_equal(back.arrays[k], v)
    assert not [f for f in os.listdir(tmp_path / "s") if ".tmp" in f]
    io.export_rstar_jsonl(result, str(tmp_path / "out.jsonl"))
    lines = [json.loads(line) for line in open(tmp_path / "out.jsonl")]
    states = lines[0]["rstar"]
    assert states["0"]["extra_info"] == "question: " + PROBLEMS[0].question
    assert set(states["0"]) == {"text", "extra_info", "action", "action_input", "final_answer", "observation",
                                "value", "q_value", "visit_count"}
    assert "0.1" in states and all(t == "0" or t.rsplit(".", 1)[0] in states for t in states)
    view = result.tree(0)
    assert len(view.nodes) == result.num_nodes(0) and view.question == PROBLEMS[0].question
    trajs = view.trajectories()
    assert trajs and all(len(t.steps) == len(t.q_values) == len(t.nodes) for t in trajs)
    best = result.best_answer_node(0)
    assert [n.q for n in view.nodes] == result.q_values(0).tolist() and view.nodes[best].answer == result.answer(0)
    assert view.trajectory(best).nodes[-1] == best and back.tree(0) == view


def test_load_names_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="trees.npz"):
        io.load(str(tmp_path))


def test_postprocess_dedups_and_keeps_first_answer():
    from fake_text import FakeCompletion
    a = FakeCompletion("x<end_of_step>", [1], "stop", 0.0, sf.STEP_END)
    ans1 = FakeCompletion("<answer>\\boxed{1}<end_of_answer>", [1], "stop", 0.0, sf.ANSWER_END)
    ans2 = FakeCompletion("<answer>\\boxed{2}<end_of_answer>", [1], "stop", 0.0, sf.ANSWER_END)
    assert [j for j, _ in _postprocess([a, a])] == [0]
    assert [j for j, _ in _postprocess([a, ans1, a, ans2])] == [1]


def test_evaluation_mode_scores_answers_with_the_ppm(executor):
    config = SearchConfig.evaluation(num_rollouts=3, num_candidates=4, max_depth=4, max_nodes=100)
    result = run_mcts(PROBLEMS[:2], FakePolicy(), FakePPM(), config, executor, progress=False)
    tree = result.device_tree()
    for b in range(2):
        check_consistent(tree, b)
        ids = result.answer_nodes(b)
        np.testing.assert_array_equal(result.arrays["value"][b, ids], result.arrays["ppm_value"][b, ids])
        if len(ids):
            assert result.best_answer_node(b) == ids[np.argmax(result.arrays["value"][b, ids])]


def _texts(result, b):
    return [rec.text for rec in result.nodes[b]]


class DepthPolicy:
    """Code steps numbered by their random stream; the problem "shallow" answers from depth 1 on,
    "deep" never does: its rollouts run to max_depth while shallow's wait for the next rollout."""

    def sample(self, prompts, num_samples, sampling, *, seed, streams):
        out = []
        for prompt, stream in zip(prompts, streams, strict=True):
            depth = prompt.count(sf.STEP_END)
            drawn = [seeded_rng(seed, stream, j).integers(1 << 31) for j in range(num_samples)]
            if "shallow" in prompt and depth:
                out.append([FakeCompletion(f"\n{sf.ANSWER}\\boxed{{{n}}}{sf.ANSWER_END}", [1], "stop", 0.0,
                                           sf.ANSWER_END) for n in drawn])
            else:
                out.append([FakeCompletion(f"{'' if depth else sf.CODE}\nx{depth} = {n}\n{sf.STEP_END}", [1], "stop",
                                           0.0, sf.STEP_END) for n in drawn])
        return out


def test_a_tree_depends_on_its_problem_not_on_its_batch(executor):
    """Not on its place in the batch, nor on how far its batch-mates' rollouts go."""
    deep, shallow = Problem(0, "deep: what is 3 + 4?", "7", "toy"), Problem(1, "shallow: what is 3 + 4?", "7", "toy")
    config = SearchConfig.data_generation(3, num_rollouts=3, num_candidates=2, max_depth=4, batch_size=2, seed=3)
    search = lambda problems: run_mcts(problems, DepthPolicy(), FakePPM(), config, executor, progress=False)  # noqa: E731
    forward, backward, alone = search([deep, shallow]), search([shallow, deep]), search([shallow])
    assert _texts(forward, 1) == _texts(backward, 0) == _texts(alone, 0)
    assert _texts(forward, 0) == _texts(backward, 1) == _texts(search([deep]), 0)
    assert alone.num_nodes(0) == 1 + 2 * config.num_candidates  # both steps expanded (one answer each)


def test_problems_asking_the_same_question_grow_different_trees(executor):
    """Tree 0 of every batch (a search chunk) once drew the same random numbers: two problems of one
    question, in batches of one, grew the same tree."""
    twins = [Problem(i, PROBLEMS[0].question, "7", "toy") for i in range(2)]
    config = SearchConfig.data_generation(3, num_rollouts=4, num_candidates=4, max_depth=5, batch_size=1,
                                          max_nodes=100, seed=3)
    result = run_mcts(twins, FakePolicy(), FakePPM(), config, executor, progress=False)
    assert _texts(result, 0) != _texts(result, 1)


def test_needs_a_ppm():
    with pytest.raises(ValueError, match="needs a PPM"):
        run_mcts(PROBLEMS, FakePolicy(), None, SearchConfig.evaluation(), executor=None)


def test_beam_search_keeps_children_with_their_parents(executor):
    from rstar_jax.search.beam import run_beam_search

    config = SearchConfig.beam_search(num_candidates=4, beam_width=2, max_depth=4, max_nodes=100)
    policy = FakePolicy()
    result = run_beam_search(PROBLEMS[:2], policy, FakePPM(), config, executor, progress=False)
    assert max(policy.calls) <= 2 * 2  # one call per step for all beam nodes of all problems
    for b in range(2):
        parents, recs = result.arrays["parent"][b], result.nodes[b]
        chosen = np.flatnonzero(result.arrays["visit_count"][b, : result.num_nodes(b)])
        for i in range(1, result.num_nodes(b)):
            # A child's text continues its own parent's trajectory: its program starts with the
            # parent's open code block.
            if recs[i].code is not None and parents[i] != 0 and sf.CODE_END not in recs[parents[i]].text:
                assert recs[parents[i]].code in recs[i].code
            if int(result.arrays["kind"][b, i]) in (NodeKind.STEP, NodeKind.ANSWER):
                assert not np.isnan(result.arrays["ppm_value"][b, i])
        # every expanded node (but the root) was chosen into the beam
        expanded = np.flatnonzero(result.arrays["children"][b, : result.num_nodes(b), 0] >= 0)
        assert set(expanded[expanded > 0]) <= set(chosen)
        if result.answer(b) is not None:
            node = result.best_answer_node(b)
            assert result.arrays["visit_count"][b, node] == 1
