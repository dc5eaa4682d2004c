"""The host view of a searched tree: paths, trajectories and their ranking, on a hand-built tree."""

import json

from rstar_jax.data import trees
from rstar_jax.data.trees import NO_NODE, Node, SearchedTree
from rstar_jax.steps import NodeKind


def tree() -> SearchedTree:
    """root -> {1 step, 2 code errors}; 1 -> {3 right answer, 4 unexpanded step}."""
    return SearchedTree("What is 3 + 4?", (
        Node(NO_NODE, visits=3),
        Node(0, "a", q=0.5, value=0.25, visits=2),
        Node(0, "b", q=-1.0, value=-1.0, visits=1, kind=NodeKind.CODE_ERRORS, answer="Too many"),
        Node(1, "c", q=1.0, value=1.0, visits=1, kind=NodeKind.ANSWER, answer="7", correct=True),
        Node(1, "d"),
    ))


def test_paths_follow_parents():
    assert trees.path([NO_NODE, 0, 0, 1, 1], 3) == [1, 3]
    assert trees.path([NO_NODE, 0], 0) == [] and trees.path([NO_NODE, 0], NO_NODE) == []
    assert tree().path(4) == [1, 4]
    assert tree().children() == [[1, 2], [3, 4], [], [], []]


def test_trajectories_and_their_rank():
    got = {t.nodes: t for t in tree().trajectories()}
    assert list(got) == [(2,), (1, 3), (1, 4)]  # leaves in node order, unexpanded ones included
    right = got[1, 3]
    assert (right.text, right.q_values, right.values, right.visit_counts) == ("ac", (0.5, 1.0), (0.25, 1.0), (2, 1))
    assert (right.kind, right.answer, right.is_correct) == (NodeKind.ANSWER, "7", True)
    assert right.rank_key == (0.75, 0.5) and right.mean_q == 0.75
    assert not got[2,].is_correct and got[1, 4].kind == NodeKind.STEP
    assert tree().trajectory(3) == right
    assert tree().is_solved() and not SearchedTree("?", tree().nodes[:3]).is_solved()


def test_json_round_trip():
    assert trees.from_json(json.loads(json.dumps(trees.to_json(tree())))) == tree()
