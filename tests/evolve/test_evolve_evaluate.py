"""Round evaluation bookkeeping: greedy's score on the problems the search methods ran on, and the
PPM's held-out pairs.
"""

import numpy as np

from rstar_jax.config import EvalConfig
from rstar_jax.data.records import PreferencePair
from rstar_jax.evolve import evaluate


def test_greedy_on_the_search_problems_is_cut_from_the_greedy_run():
    record = lambda correct: {"candidates": [{"correct": correct, "cluster": 0, "score": None}]}  # noqa: E731
    greedy = {"level1": [record(True), record(False), record(True)], "level2": [record(False)] * 3}
    rows = evaluate.greedy_on_head(greedy, 2, EvalConfig(methods=("greedy", "mcts"), ks=(1,)))
    assert [(r["set"], r["method"], r["problems"], r["accuracy"]) for r in rows] == [
        ("level1", evaluate.SUBSET_GREEDY, 2, 50.0), ("level2", evaluate.SUBSET_GREEDY, 2, 0.0)]


class Scorer:
    """Scores a text by its length, noting when its prefix pool is emptied and what it scores."""

    def __init__(self):
        self.events = []

    def forget_prefixes(self):
        self.events.append("forget")

    def score(self, texts, step_starts):
        self.events.append(len(texts))
        raw = np.array([len(t) for t in texts], np.float32)
        return raw, np.tanh(raw)


def test_held_out_pairs_are_scored_from_an_empty_prefix_pool():
    """A resumed round skips the evaluation batches it had finished, so the scorer's pool holds
    other prefixes than in a run that was not killed; the held-out figure must not hang on them."""
    pairs = [PreferencePair("Q", "a longer step", "short", 1, 2), PreferencePair("Q", "x", "yy", 1, 2)]
    scorer = Scorer()
    assert evaluate.ranked_right(scorer, pairs).tolist() == [True, False]
    assert scorer.events == ["forget", 4]
