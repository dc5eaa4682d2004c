"""A problem's sampled solutions depend on the problem, not on its place in an evaluation batch."""

import hashlib

import pytest

from rstar_jax.config import EvalConfig
from rstar_jax.data.problems import Problem
from rstar_jax.evaluation import methods
from rstar_jax.evaluation.methods import Models
from rstar_jax.inference.sampler import Completion
from rstar_jax import steps as sf
from rstar_jax.verify.executor import Executor


class StreamEcho:
    """Writes what its random stream draws: a code block printing one number, then an answer
    boxing another. Sample j of a prompt draws from (seed, streams[i], j), as the Sampler does."""

    def sample(self, prompts, num_samples, sampling, *, seed, streams):
        draw = lambda *key: int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:4], "little") % 1000
        out = []
        for prompt, stream in zip(prompts, streams, strict=True):
            if sf.OUTPUT in prompt:  # the code block has run
                texts = [f"\n{sf.ANSWER}\\boxed{{{draw(seed, stream, j)}}}{sf.ANSWER_END}" for j in range(num_samples)]
            else:
                texts = [f"{sf.CODE}\nprint({draw(seed, stream, j)})\n{sf.CODE_END}" for j in range(num_samples)]
            out.append([Completion(t, [1], "stop", 0.0, sf.ANSWER_END if sf.ANSWER in t else sf.CODE_END)
                        for t in texts])
        return out

    def forget_prefixes(self):
        """Keeps no prefixes: nothing to empty."""


@pytest.fixture(scope="module")
def models():
    with Executor(num_workers=1, timeout_s=10.0) as executor:
        yield Models(StreamEcho(), executor)


def _solutions(problems, models):
    config = EvalConfig(num_samples=3, grade_workers=0)
    return [[(c.steps, c.answer) for c in cands] for cands in methods.sample(problems, models, config)]


def test_a_problems_samples_do_not_depend_on_its_batch(models):
    """Both calls of a solution (the code block, then the answer) draw from the problem's streams:
    problem b's rollouts are the same alone and behind another problem still being written."""
    first, second = Problem(0, "What is 1 + 1?", "2", "toy"), Problem(1, "What is 2 + 2?", "4", "toy")
    together = _solutions([first, second], models)
    assert together[1] == _solutions([second], models)[0]
    assert together[0] == _solutions([first], models)[0]
    assert all(steps[-1].endswith(sf.ANSWER_END) for steps, _ in together[0])  # both calls were made


def test_problems_asking_the_same_question_draw_different_samples(models):
    """Two problems of one question, each first in its own batch, once drew the same numbers."""
    twins = [Problem(i, "What is 1 + 1?", "2", "toy") for i in range(2)]
    assert _solutions(twins[:1], models)[0] != _solutions(twins[1:], models)[0]
