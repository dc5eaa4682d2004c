"""Round evaluation bookkeeping: greedy's score on the problems the search methods ran on.
"""



from rstar_jax.evolve import evaluate
from rstar_jax.config import EvalConfig


def test_greedy_on_the_search_problems_is_cut_from_the_greedy_run():
    record = lambda correct: {"candidates": [{"correct": correct, "cluster": 0, "score": None}]}  # noqa: E731
    greedy = {"level1": [record(True), record(False), record(True)], "level2": [record(False)] * 3}
    rows = evaluate.greedy_on_head(greedy, 2, EvalConfig(methods=("greedy", "mcts"), ks=(1,)))
    assert [(r["set"], r["method"], r["problems"], r["accuracy"]) for r in rows] == [
        ("level1", evaluate.SUBSET_GREEDY, 2, 50.0), ("level2", evaluate.SUBSET_GREEDY, 2, 0.0)]
