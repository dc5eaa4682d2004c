"""A deterministic text-level policy and PPM: samples and scores derived from a hash of the prompt."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from rstar_jax import steps as sf

# (text, stop string): code steps, a failing step, the block-closing print, answers, junk.
STEPS = (
    ("<code>\nx = 3 + 4\n<end_of_step>", sf.STEP_END),
    ("\n# double it\ny = 2 * x\n<end_of_step>", sf.STEP_END),
    ("\nz = 1 / 0\n<end_of_step>", sf.STEP_END),
    ("\nprint(x)\n<end_of_code>", sf.CODE_END),
    ("\n<answer>The answer is \\boxed{7}<end_of_answer>", sf.ANSWER_END),
    ("\n<answer>The answer is \\boxed{8}<end_of_answer>", sf.ANSWER_END),
    ("I am not sure", None),
)


def seeded_rng(*key) -> np.random.Generator:
    digest = hashlib.sha256(repr(key).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclasses.dataclass(frozen=True)
class FakeCompletion:
    text: str
    token_ids: list[int]
    finish_reason: str
    logprob_sum: float
    stop_string: str | None


class FakePolicy:
    """Answers become likelier the longer the partial solution is."""

    def __init__(self):
        self.calls: list[int] = []  # prompts per call

    def sample(self, prompts, num_samples, sampling, *, seed, streams):
        self.calls.append(len(prompts))
        out = []
        for prompt, stream in zip(prompts, streams, strict=True):
            rng = seeded_rng(prompt, seed, stream)
            depth = prompt.count(sf.STEP_END) + prompt.count(sf.CODE_END)
            p = np.array([4, 3, 1, 2, 1 + depth, 1 + depth, 0.5])
            picks = rng.choice(len(STEPS), size=num_samples, p=p / p.sum())
            out.append([FakeCompletion(STEPS[j][0], [1] * (3 + j), "stop" if STEPS[j][1] else "length",
                                       float(-j), STEPS[j][1]) for j in picks])
        return out


class FakePPM:
    def __init__(self):
        self.calls: list[int] = []

    def score(self, texts, step_starts):
        assert len(step_starts) == len(texts) and all(0 < s < len(t) for t, s in zip(texts, step_starts))
        self.calls.append(len(texts))
        raw = np.array([seeded_rng(t).integers(-8, 9) / 2 for t in texts], np.float32)
        return raw, np.tanh(raw / 5)
