"""Stand-ins for the search: deterministic small trees built from the problem index (a real MCTS
needs a trained policy; end-to-end runs, killed and resumed, are in test_evolve_paper_mode.py).
"""



from rstar_jax.config import RoundConfig, SearchConfig
from rstar_jax.data.problems import Problem
from rstar_jax.data.trees import Node, SearchedTree
from rstar_jax.search.io import NodeRecord, SearchResult
from rstar_jax.search.tree import NO_NODE, NodeKind, Tree


def problems(n: int, source: str = "level1") -> list[Problem]:
    return [Problem(i, f"Question {i} of {source}?", str(i), source) for i in range(n)]


def stand_in_tree(problem: Problem, rollouts: int) -> SearchedTree:
    """Solved when `rollouts` reaches the problem's difficulty (index % 3: 4, 8 or 16 rollouts)."""
    solved = rollouts >= 4 * 2 ** (problem.index % 3)
    step = f"<code>\n# think about question {problem.index} carefully\nx = {problem.index}\n<end_of_step>"
    wrong = f"\n<answer>The answer must be \\boxed{{{problem.index + 1000}}}.<end_of_answer>"
    right = f"\n<answer>From the result, the answer is \\boxed{{{problem.index}}}.<end_of_answer>"
    nodes = [Node(NO_NODE, visits=3), Node(0, step, q=0.0 if solved else -1.0, visits=2),
             Node(1, wrong, q=-1.0, visits=1, kind=NodeKind.ANSWER, answer="x", correct=False),
             Node(0, "<code>\nprint(1/0)\n<end_of_code>\n<output>ZeroDivisionError<end_of_output>",
                  q=-1.0, visits=1, kind=NodeKind.CODE_ERRORS)]
    if solved:
        nodes.append(Node(1, right, q=1.0, visits=1, kind=NodeKind.ANSWER, answer="x", correct=True))
    return SearchedTree(problem.question, tuple(nodes))


def search_result(batch: list[Problem], trees: list[SearchedTree], max_nodes: int = 8, k: int = 4) -> SearchResult:
    """The driver's result holding `trees` (the inverse of `SearchResult.tree`)."""
    a = SearchResult.from_tree(batch, Tree.init(len(trees), max_nodes, k), []).arrays
    nodes = []
    for b, tree in enumerate(trees):
        a["node_count"][b] = len(tree.nodes)
        for i, n in enumerate(tree.nodes):
            a["parent"][b, i], a["kind"][b, i], a["terminal"][b, i] = n.parent, n.kind, n.kind != NodeKind.STEP
            a["visit_count"][b, i], a["value_sum"][b, i], a["value"][b, i] = n.visits, n.q * n.visits, n.value
            if i:
                a["depth"][b, i] = a["depth"][b, n.parent] + 1
                slot = list(a["children"][b, n.parent]).index(NO_NODE)
                a["children"][b, n.parent, slot] = i
        nodes.append([NodeRecord(n.text, answer=n.answer, correct=n.correct) for n in tree.nodes])
    return SearchResult(list(batch), a, nodes)


class StandInSearch:
    def __init__(self, fail_on_call: int | None = None):
        self.calls: list[list[int]] = []
        self.fail_on_call = fail_on_call

    def __call__(self, batch, rollouts, seed):
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt("killed")
        self.calls.append([p.index for p in batch])
        return search_result(batch, [stand_in_tree(p, rollouts) for p in batch])


ROUND = RoundConfig(SearchConfig(num_rollouts=4), unsolved_rollouts=(8, 16))
