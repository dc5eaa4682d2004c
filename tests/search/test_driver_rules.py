"""The driver's and beam search's rules taken from the original: dedup keys, answer collection,
code blocks with timed-out steps, rewards of grades that ran out of time, a full context."""

from __future__ import annotations

import numpy as np
import pytest
from fake_text import FakeCompletion, FakePolicy

from rstar_jax import steps as sf
from rstar_jax.config import SearchConfig
from rstar_jax.data.problems import Problem
from rstar_jax.search import driver
from rstar_jax.search.driver import StepExpander, _postprocess, run_mcts
from rstar_jax.search.io import NodeRecord
from rstar_jax.search.tree import NodeKind
from rstar_jax.verify.executor import ExecResult

Q = "What is 3 + 4?"
PROBLEMS = [Problem(0, Q, "7", "toy")]


class NoCode:
    """An executor whose programs all print nothing."""

    def run(self, programs):
        return [ExecResult("") for _ in programs]


def completion(text, stop):
    return FakeCompletion(text + (stop or ""), [1], "stop" if stop else "length", 0.0, stop)


def test_dedup_ignores_the_stop_string_as_vllm_text_does():
    # llms.py dedups `out.text`, which vLLM returns without the stop string
    a = completion("\nx = 1\n", sf.STEP_END)
    b = completion("\nx = 1\n", sf.CODE_END)
    c = completion("\nx = 2\n", sf.STEP_END)
    assert [j for j, _ in _postprocess([a, b, c, a])] == [0, 2]


def test_open_block_keeps_timed_out_steps():
    # collect_action_inputs' TimeoutError check never fires in the original: the step text is
    # the action input, so `text.split(action_input)[-1]` is always ''
    steps = StepExpander(PROBLEMS, None, None, None, SearchConfig(), 1)
    steps.nodes[0] += [
        NodeRecord("<code>\nx = 1\n<end_of_step>", "x = 1", ""),
        NodeRecord("\nwhile True: pass\n<end_of_step>", "...", "TimeoutError: Execution of the code "
                   "snippet has timed out for exceeding 5 seconds."),
        NodeRecord("\ny = x\n<end_of_step>", "...", ""),
    ]
    steps.parents[0] += [0, 1, 2]
    assert steps._open_block(0, 3) == [rec.text for rec in steps.nodes[0][1:]]


def test_an_answer_whose_grade_ran_out_of_time_is_neutral_and_counted(monkeypatch):
    monkeypatch.setattr(driver, "grade", lambda pred, golds: None)
    config = SearchConfig.data_generation(3, num_rollouts=4, num_candidates=4, max_depth=5, max_nodes=100,
                                          use_ppm=False)
    stats: dict[str, float] = {}
    result = run_mcts(PROBLEMS, FakePolicy(), None, config, NoCode(), progress=False, stats=stats)
    answers = result.answer_nodes(0)
    assert len(answers) and stats["ungraded_answers"] >= len(answers)
    assert all(result.nodes[0][i].correct is None for i in answers)
    np.testing.assert_array_equal(result.arrays["value"][0, answers], 0.0)  # never -1
    assert result.pass_at_n(0) is None


def test_an_empty_problem_list_is_one_clear_error():
    config = SearchConfig.data_generation(3, num_rollouts=1, num_candidates=2, use_ppm=False)
    with pytest.raises(ValueError, match="the list of problems to search was empty"):
        run_mcts([], FakePolicy(), None, config, NoCode(), progress=False)


def test_a_full_context_ends_the_node_as_too_deep_and_is_counted():
    class FullAfterOneStep:
        """Room for one step; then every prompt is over the context (sampler: empty, "length")."""

        def sample(self, prompts, num_samples, sampling, **kw):
            return [[completion("<code>\nx = 7\n", sf.STEP_END) if p.endswith("code.") else
                     FakeCompletion("", [], "length", 0.0, None)] * num_samples for p in prompts]

    config = SearchConfig.data_generation(3, num_rollouts=2, num_candidates=3, max_depth=5, max_nodes=100,
                                          use_ppm=False)
    stats: dict[str, float] = {}
    result = run_mcts(PROBLEMS, FullAfterOneStep(), None, config, NoCode(), progress=False, stats=stats)
    kinds = result.arrays["kind"][0, : result.num_nodes(0)].tolist()
    assert kinds == [NodeKind.STEP, NodeKind.STEP, NodeKind.TOO_DEEP]  # one child each: dedup
    assert result.nodes[0][2].answer == sf.TOO_MANY_STEPS and result.nodes[0][2].text == ""
    assert stats["context_full"] == 1 and bool(result.arrays["terminal"][0, 0])


class ScriptedPolicy:
    """Root -> code steps A, B, C; A -> an answer (7); B -> code steps B1, B2; B1 -> an answer (8)."""

    A = "<code>\n# plan A\nx = 3 + 4\n<end_of_step>"
    B = "<code>\n# plan B\nx = 4 + 3\n<end_of_step>"
    C = "<code>\n# plan C\nx = 2 + 5\n<end_of_step>"
    B1 = "\n# check B\ny = x\n<end_of_step>"
    B2 = "\n# double B\ny = 2 * x\n<end_of_step>"
    END7 = "\n<answer>The answer is \\boxed{7}.<end_of_answer>"
    END8 = "\n<answer>The answer is \\boxed{8}.<end_of_answer>"
    CHILDREN = {"code.": (A, B, C), A: (END7,), B: (B1, B2), B1: (END8,)}

    def __init__(self):
        self.prompts: list[list[str]] = []

    def sample(self, prompts, num_samples, sampling, **kw):
        self.prompts.append(list(prompts))
        out = []
        for p in prompts:
            texts = next(v for k, v in self.CHILDREN.items() if p.endswith(k))
            out.append([FakeCompletion(t, [1], "stop", 0.0, sf.ANSWER_END if "answer>" in t else sf.STEP_END)
                        for t in texts])
        return out


class ScriptedPPM:
    VALUES = {ScriptedPolicy.A: 0.9, ScriptedPolicy.B: 0.8, ScriptedPolicy.C: 0.7, ScriptedPolicy.B1: 0.6,
              ScriptedPolicy.B2: 0.55, ScriptedPolicy.END7: 0.05, ScriptedPolicy.END8: 0.3}

    def score(self, texts, step_starts):
        for text, start in zip(texts, step_starts, strict=True):  # a step alone, an answer with its solution
            step = next(t for t in self.VALUES if text.endswith(t))
            assert text[start:] == step or (sf.ANSWER in step and sf.ASSISTANT not in text[:start])
        values = np.array([next(v for t, v in self.VALUES.items() if text.endswith(t)) for text in texts],
                          np.float32)
        return values, values


def test_beam_collects_every_answer_among_the_candidates_and_shrinks_the_width():
    from rstar_jax.search.beam import run_beam_search

    config = SearchConfig.beam_search(num_candidates=3, beam_width=2, max_depth=6, max_nodes=100)
    policy = ScriptedPolicy()
    result = run_beam_search(PROBLEMS, policy, ScriptedPPM(), config, NoCode(), progress=False)
    texts = [rec.text for rec in result.nodes[0]]
    end7 = texts.index(ScriptedPolicy.END7)
    # Step 2's candidates rank B1 (0.6), B2 (0.55), the answer 7 (0.05). The answer is outside the
    # top 2 but still collected (chosen: N = 1) and drops the width to 1: only B1 is expanded.
    assert result.arrays["kind"][0, end7] == NodeKind.ANSWER and result.arrays["visit_count"][0, end7] == 1
    assert [len(p) for p in policy.prompts] == [1, 2, 1]
    assert policy.prompts[2][0].endswith(ScriptedPolicy.B1)
    assert sorted(result.nodes[0][i].answer for i in result.answer_nodes(0)) == ["7", "8"]
    assert result.answer(0) == "8"  # the highest PPM value among the collected answers
