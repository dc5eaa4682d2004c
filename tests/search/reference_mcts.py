"""A plain-Python MCTS written straight from the spec (§3.1-§3.6), and a deterministic fake step
generator, to check the jitted kernels against.

The fake generator decides, from a hash of (seed, tree, path), what the K samples of an expansion
turn into after post-processing: dropped (duplicate, or not the first answer), a final answer
(correct or not), an unparsable sample, a code step that failed, or a plain step, plus a PPM
value. Values are multiples of 1/8 so float32 sums are exact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np

from rstar_jax.config import SearchConfig
from rstar_jax.search.tree import NodeKind


@dataclasses.dataclass(frozen=True)
class FakeCandidate:
    is_answer: bool
    correct: bool
    code_error: bool
    unparsable: bool
    ppm: float
    prior: float


def fake_candidates(seed: int, tree_id: int, path: tuple[int, ...], k: int) -> list[FakeCandidate | None]:
    """The kept candidates of one expansion, in sample order (None: removed by post-processing).

    Deeper nodes answer more often, and trees differ in how fast, so one batch mixes depths.
    """
    digest = hashlib.sha256(repr((seed, tree_id, path)).encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    p_answer = min(0.9, (0.04 + 0.03 * (tree_id % 4)) * (1 + len(path)))
    out: list[FakeCandidate | None] = []
    answered = False
    for _ in range(k):
        kind, correct, ppm, prior = rng.random(), rng.random() < 0.5, rng.integers(-7, 8) / 8, rng.random()
        is_answer = kind < p_answer
        duplicate = rng.random() < 0.15
        if duplicate or (answered and is_answer):
            out.append(None)
            continue
        answered |= is_answer
        code_error, unparsable = not is_answer and kind > 0.75, not is_answer and 0.7 < kind <= 0.75
        out.append(FakeCandidate(is_answer, bool(correct), code_error, unparsable, float(ppm), float(prior)))
    if answered:  # spec §3.3: when a sample ends the answer, only the first such sample is kept
        out = [c if c is not None and c.is_answer else None for c in out]
    return out


@dataclasses.dataclass(eq=False)
class RefNode:
    id: int
    parent: RefNode | None
    depth: int
    path: tuple[int, ...]
    children: list[RefNode] = dataclasses.field(default_factory=list)
    visit_count: int = 0
    value_sum: float = 0.0
    value: float = 0.0
    inited: bool = False
    terminal: bool = False
    kind: int = NodeKind.STEP
    consecutive_errors: int = 0
    ppm_value: float = math.nan

    def q_value(self) -> float:
        return self.value_sum / self.visit_count if self.visit_count else 0.0

    def update(self, v: float) -> None:
        if not self.inited:
            self.inited, self.value = True, v
        self.visit_count += 1
        self.value_sum += v

    def update_recursive(self, v: float) -> None:
        node = self
        while node is not None:
            node.update(v)
            node = node.parent

    def uct(self, c: float) -> float:
        q = self.q_value() if self.visit_count > 0 else 0.0
        if self.parent.visit_count == 0 or self.visit_count == 0:
            return q
        return q + c * math.sqrt(math.log(self.parent.visit_count) / self.visit_count)


class RefTree:
    """One tree, with the original's `selection` / expansion / evaluation in plain Python."""

    def __init__(self, tree_id: int, config: SearchConfig, seed: int, capacity: int):
        self.tree_id, self.config, self.seed, self.capacity = tree_id, config, seed, capacity
        self.root = RefNode(0, None, 0, ())
        self.nodes = [self.root]
        self.current: RefNode | None = None

    def select_child(self, node: RefNode) -> RefNode | None:
        best, best_value = None, -math.inf
        for child in node.children:
            if child.terminal:
                continue
            v = child.uct(self.config.c_puct)
            if v > best_value:  # strict: ties go to the first child
                best, best_value = child, v
        return best

    def selection(self, node: RefNode) -> RefNode | None:
        if node.children or node.terminal:
            nxt = self.select_child(node)
            if nxt is None:
                node.terminal = True
            node = nxt
        return None if node is None or node.terminal else node

    def expand(self, node: RefNode) -> None:
        cfg = self.config
        created = []
        for k, cand in enumerate(fake_candidates(self.seed, self.tree_id, node.path, cfg.num_candidates)):
            if cand is None:
                continue
            if len(self.nodes) >= self.capacity:
                break
            child = RefNode(len(self.nodes), node, node.depth + 1, node.path + (k,))
            self.nodes.append(child)
            node.children.append(child)
            child.consecutive_errors = node.consecutive_errors + 1 if cand.code_error else 0
            if cand.is_answer:
                child.terminal, child.kind = True, NodeKind.ANSWER
                if cfg.ground_truth_rewards:  # eval_final_answer: backed up at creation
                    child.update_recursive(cfg.positive_reward if cand.correct else cfg.negative_reward)
            elif cand.unparsable:
                child.terminal, child.kind = True, NodeKind.UNPARSABLE
                child.update(cfg.negative_reward)
            elif cand.code_error and child.consecutive_errors >= cfg.errors_threshold:
                child.terminal, child.kind = True, NodeKind.CODE_ERRORS
                child.update(cfg.negative_reward)
            if not child.terminal and child.depth > cfg.max_depth:
                child.terminal, child.kind = True, NodeKind.TOO_DEEP
                child.update(cfg.negative_reward)
            created.append((child, cand))
        if not created:
            node.terminal = True
        for child, cand in created:  # the value phase: PPM init of steps, PPM-scored answers in eval
            if child.kind == NodeKind.STEP and cfg.use_ppm:
                child.ppm_value = cand.ppm
                child.update(cand.ppm)
            elif child.kind == NodeKind.ANSWER and not cfg.ground_truth_rewards:
                child.ppm_value = cand.ppm
                child.update_recursive(cand.ppm)


def run_reference(num_trees: int, config: SearchConfig, seed: int, capacity: int) -> list[RefTree]:
    """solver.py's loop: rollouts x depth steps, all trees in lockstep, one level per step."""
    trees = [RefTree(b, config, seed, capacity) for b in range(num_trees)]
    for _ in range(config.num_rollouts):
        for t in trees:
            t.current = t.selection(t.root)
        for _ in range(config.max_depth):
            for t in trees:
                cur = t.current
                if cur is None or cur.terminal or cur.depth > config.max_depth:
                    continue
                if not cur.children:
                    t.expand(cur)
                t.current = t.selection(cur)
    return trees
