"""Test policies that know the answers, and a PPM that recognises a wrong one.

`OraclePolicy` honours the Sampler interface, stop strings included, so it runs through the
greedy, sampling and search paths alike. Its rStar-format solution is a two-step code block
(`answer = <gold>`, then `print(answer)`) and, once the block has run, an answer step that
boxes the value its code assigned.
"""

import ast
import collections
import re
from collections.abc import Collection, Sequence

import numpy as np

from rstar_jax.data.problems import Problem
from rstar_jax.inference.sampler import Completion
from rstar_jax import steps as sf

WRONG = "-987654.3"  # no gold of the nine sets is equivalent to it


def solution_block(answer: str) -> str:
    return (f"{sf.CODE}\n# Step 1: the answer\nanswer = {answer!r}\n{sf.STEP_END}"
            f"\n\n# Now print the final answer\nprint(answer)\n{sf.CODE_END}")


class OraclePolicy:
    """Answers right in the samples `right_samples` (None: all of them) and WRONG in the others.

    Sets repeat some questions with different golds, so a question's golds are handed out in
    turn (in problem order, as the evaluation asks).
    """

    def __init__(self, problems: Sequence[Problem], *, right_samples: Collection[int] | None = None):
        self.right_samples = right_samples
        self.golds: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)
        for p in problems:
            self.golds[sf.policy_prompt(p.question)].append(p.golds[0])

    def sample(self, prompts, num_samples, sampling, *, seed, streams):
        out = []
        for prompt in prompts:
            if prompt in self.golds:  # a new solution
                golds = self.golds[prompt]
                golds.rotate(-1)
                answers = [golds[-1] if self.right_samples is None or j in self.right_samples else WRONG
                           for j in range(num_samples)]
                out.append([_cut(solution_block(a), sampling.stop) for a in answers])
            else:  # continue the solution in the prompt
                done = prompt[prompt.rindex(sf.CODE):]
                answer = ast.literal_eval(re.search(r"answer = (.*)\n", done).group(1))
                if sf.CODE_END in done:
                    text = f"\n{sf.ANSWER}From the result, the answer is \\boxed{{{answer}}}.{sf.ANSWER_END}"
                else:
                    text = solution_block(answer)[len(done):]
                out.append([_cut(text, sampling.stop)] * num_samples)
        return out

    def forget_prefixes(self):
        """Keeps no prefixes: nothing to empty."""


def _cut(text: str, stop: Sequence[str]) -> Completion:
    """The completion a sampler returns: up to and including the first stop string."""
    ends = [(text.find(s) + len(s), s) for s in stop if s in text]
    if not ends:
        return Completion(text, [], "eos", 0.0, None)
    end, s = min(ends)
    return Completion(text[:end], [], "stop", 0.0, s)


class WrongSpotterPPM:
    """A PPM double (PPMScorer.score interface): -0.76 for texts with WRONG's code, +0.76 otherwise."""

    def score(self, texts: Sequence[str], step_starts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        raw = np.array([-5.0 if repr(WRONG) in t else 5.0 for t in texts], np.float32)
        return raw, np.tanh(raw / 5.0)

    def forget_prefixes(self):
        """Keeps no prefixes: nothing to empty."""
