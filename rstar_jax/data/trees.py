"""One searched tree on the host, as every reader sees it: record extraction (`data.records`), the
notebook helpers (`search.inspect`), evaluation and the self-evolution stages.

`search.io.SearchResult` keeps a batch of trees as arrays, to save, load and continue them;
`SearchResult.tree(b)` gives tree b as a `SearchedTree`: per node its parent, step text, Q, value,
visits, `NodeKind`, answer and grade. Paths and trajectories are derived here, once, with the one
ranking of trajectories, (mean Q, min Q).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from statistics import mean
from typing import Any

from rstar_jax.steps import NodeKind

ROOT = 0  # node 0 is the root of every tree
NO_NODE = -1  # no parent, no child, no leaf


def path(parents: Sequence[int], node: int) -> list[int]:
    """Node ids from the first step down to `node` (root excluded), following `parents[i]`, the
    parent of node i (NO_NODE for the root). Finished trees and the driver's growing ones use it."""
    ids = []
    while node not in (ROOT, NO_NODE):
        ids.append(int(node))
        node = parents[node]
    return ids[::-1]


@dataclasses.dataclass(frozen=True)
class Node:
    """One node of a searched tree (the root has no text and NO_NODE as parent)."""

    parent: int
    text: str = ""  # the step as it enters the trajectory (with <output> when it closes a block)
    q: float = 0.0  # W / N, 0 when unvisited
    value: float = 0.0  # the first value the node was updated with (PPM value or reward)
    visits: int = 0
    kind: NodeKind = NodeKind.STEP
    answer: str | None = None  # an answer step's final answer, or a terminal's sentinel
    correct: bool | None = None  # the answer graded against the gold one; None when not graded


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """A root-to-leaf path: per step its node id, text, Q, value and visits (root excluded), and
    what its leaf is."""

    nodes: tuple[int, ...]
    steps: tuple[str, ...]
    q_values: tuple[float, ...]  # the leaf's own Q included
    values: tuple[float, ...]
    visit_counts: tuple[int, ...]
    kind: NodeKind  # of the leaf
    answer: str | None
    correct: bool | None  # the leaf's grade

    @property
    def text(self) -> str:
        """The solution as the policy wrote it (an SFT response)."""
        return "".join(self.steps)

    @property
    def is_correct(self) -> bool:
        """Whether it ends in an answer graded correct."""
        return self.kind == NodeKind.ANSWER and bool(self.correct)

    @property
    def mean_q(self) -> float:
        return mean(self.q_values)

    @property
    def rank_key(self) -> tuple[float, float]:
        """(mean Q, min Q): how SFT examples, final-answer pairs and the notebook rank trajectories
        (the original's `sample_sft_data.py`), higher is better."""
        return mean(self.q_values), min(self.q_values)


@dataclasses.dataclass(frozen=True)
class SearchedTree:
    """One searched problem; node 0 is the root and every parent precedes its children."""

    question: str
    nodes: tuple[Node, ...]

    @functools.cached_property
    def parents(self) -> tuple[int, ...]:
        return tuple(n.parent for n in self.nodes)

    def children(self) -> list[list[int]]:
        """Per node, its children's ids in creation order."""
        kids: list[list[int]] = [[] for _ in self.nodes]
        for i, parent in enumerate(self.parents[1:], start=1):
            kids[parent].append(i)
        return kids

    def path(self, node: int) -> list[int]:
        """Node ids from the first step down to `node` (root excluded)."""
        return path(self.parents, node)

    def trajectory(self, leaf: int) -> Trajectory:
        """The path from the root down to `leaf`."""
        ids = self.path(leaf)
        steps = [self.nodes[i] for i in ids]
        end = self.nodes[leaf]
        return Trajectory(
            nodes=tuple(ids), steps=tuple(n.text for n in steps), q_values=tuple(n.q for n in steps),
            values=tuple(n.value for n in steps), visit_counts=tuple(n.visits for n in steps),
            kind=end.kind, answer=end.answer, correct=end.correct,
        )

    def trajectories(self) -> list[Trajectory]:
        """Every root-to-leaf path, leaves in node order (unexpanded leaves included)."""
        kids = self.children()
        return [self.trajectory(leaf) for leaf in range(1, len(self.nodes)) if not kids[leaf]]

    def is_solved(self) -> bool:
        """Whether the tree holds a correct answer (the paper's coverage counts these)."""
        return any(n.kind == NodeKind.ANSWER and bool(n.correct) for n in self.nodes)


def to_json(tree: SearchedTree) -> dict[str, Any]:
    """A JSON-ready dict; nodes are [parent, text, q, value, visits, kind, answer, correct] rows."""
    return {"question": tree.question,
            "nodes": [[n.parent, n.text, n.q, n.value, n.visits, int(n.kind), n.answer, n.correct]
                      for n in tree.nodes]}


def from_json(obj: dict[str, Any]) -> SearchedTree:
    nodes = tuple(Node(parent, text, q, value, visits, NodeKind(kind), answer, correct)
                  for parent, text, q, value, visits, kind, answer, correct in obj["nodes"])
    return SearchedTree(obj["question"], nodes)
