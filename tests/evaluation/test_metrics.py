"""Metric arithmetic on hand-made predictions: pass@k, votes and their ties, top-K by PPM score."""

import itertools
import math

import pytest

from rstar_jax.evaluation import metrics


def test_pass_at_k_matches_the_mean_over_all_k_subsets():
    correct = [True, False, False, True, False]
    for k in range(1, 6):
        subsets = list(itertools.combinations(correct, k))
        expected = sum(any(s) for s in subsets) / len(subsets)
        assert metrics.pass_at_k(5, 2, k) == pytest.approx(expected)
    assert metrics.pass_at_k(4, 0, 4) == 0.0 and metrics.pass_at_k(4, 4, 1) == 1.0
    with pytest.raises(ValueError, match="k <= n"):
        metrics.pass_at_k(2, 1, 3)


def test_clusters_group_equivalent_answers_in_first_appearance_order():
    calls = []

    def equivalent(a, b):
        calls.append((a, b))
        return float(a) == float(b)

    clusters = metrics.cluster_answers(["0.5", None, "2", "0.50", "0.5", "2.0"], equivalent)
    assert clusters == [0, None, 1, 0, 0, 1]
    assert ("0.5", "0.5") not in calls  # equal strings are never graded


def test_majority_vote_ties_go_to_the_earliest_cluster():
    assert metrics.majority_vote([1, 0, 0, 1]) == 0  # 2 vs 2: cluster 1 appeared first (index 0)
    assert metrics.majority_vote([1, 0, 0]) == 1
    assert metrics.majority_vote([None, 2, None]) == 1
    assert metrics.majority_vote([None, None]) is None


def test_weighted_vote_sums_scores_per_cluster():
    #            a    b    b    a    c
    clusters = [0, 1, 1, 0, 2]
    assert metrics.weighted_vote(clusters, [0.9, 0.5, 0.5, 0.0, 0.95]) == 1  # b: 1.0 > c: 0.95 > a: 0.9
    assert metrics.weighted_vote(clusters, [0.9, 0.45, 0.45, 0.0, 0.95]) == 4  # c: 0.95 > a: 0.9 = b
    assert metrics.weighted_vote(clusters, [0.5, 0.25, 0.25, 0.0, 0.1]) == 0  # tie a = b: a first


def test_top_k_by_score_is_stable_and_skips_unscored():
    assert metrics.top_k_by_score([0.1, None, 0.7, 0.7, -0.2], 3) == [2, 3, 0]
    assert metrics.top_k_by_score([None], 2) == []


@pytest.mark.parametrize("how, expected", [("min", -0.5), ("last", 0.25), ("mean", 0.25)])
def test_step_score_reductions(how, expected):
    assert metrics.reduce_step_scores([1.0, -0.5, 0.25], how) == pytest.approx(expected)


def test_step_score_reduction_rejects_unknown_names():
    with pytest.raises(ValueError, match="min"):
        metrics.reduce_step_scores([0.1], "max")


def test_problem_metrics_on_a_hand_worked_problem():
    # Eight runs: answers a (wrong) x3 with low scores, b (correct) x2 with high scores, c once, two failures.
    answers = ["a", "b", "a", None, "b", "a", "c", None]
    correct = [a == "b" for a in answers]
    clusters = metrics.cluster_answers(answers, lambda x, y: x == y)
    scores = [0.1, 0.8, 0.2, 0.99, 0.7, 0.3, 0.75, None]
    m = metrics.problem_metrics(correct, clusters, scores, ks=(1, 2, 4, 8, 16), top_n=4)
    assert set(m) == {f"{name}@{k}" for name in ("pass", "maj", "best", "weighted", "top4_maj", "top4_weighted")
                      for k in (1, 2, 4, 8)}
    assert m["pass@1"] == pytest.approx(2 / 8)
    assert m["pass@8"] == 1.0
    assert m["maj@1"] == 0.0  # a
    assert m["maj@2"] == 0.0  # a, b tie -> a came first
    assert m["maj@8"] == 0.0  # a wins 3 : 2
    assert m["best@1"] == 0.0 and m["best@2"] == 1.0  # the None answer's 0.99 never counts
    assert m["best@8"] == 1.0  # b 0.8
    assert m["weighted@8"] == 1.0  # b 1.5 > c 0.75 > a 0.6
    # top-4 by score among valid answers: b .8, c .75, b .7, a .3 -> b wins the vote either way.
    assert m["top4_maj@8"] == 1.0 and m["top4_weighted@8"] == 1.0
    # top-4 of the first 4: b .8, a .2, a .1 -> majority a, weighted b (.8 > .3).
    assert m["top4_maj@4"] == 0.0 and m["top4_weighted@4"] == 1.0


def test_problem_metrics_without_scores_has_only_pass_and_majority():
    m = metrics.problem_metrics([True], [0], None, ks=(1, 4), top_n=4)
    assert m == {"pass@1": 1.0, "maj@1": 1.0}
    assert math.isclose(metrics.problem_metrics([False, True], [0, 1], None, (1,), 4)["pass@1"], 0.5)
