"""Searched trees on the host: `SearchResult` (arrays + per-node text), save / load, and export to
the original's per-problem JSONL (`{tag: state}`, spec §3.10).

A saved search is a directory: `trees.npz` (the `Tree` arrays), `problems.jsonl` (one line per
tree: problem id, question, gold answer, source) and `nodes.jsonl` (one line per node: tree, node,
text, code, output, answer, correct). Every file is written atomically. `load` also reads a
directory of saved searches as one (e.g. a pass of `rstar-jax evolve`, saved in chunks).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from rstar_jax.data.problems import Problem
from rstar_jax import steps as sf
from rstar_jax.search.tree import NO_NODE, ROOT, NodeKind, Tree

if TYPE_CHECKING:
    from rstar_jax.data import records

# The original's `final_answer` for terminals that are not answers.
SENTINELS = {
    NodeKind.CODE_ERRORS: sf.TOO_MANY_CODE_ERRORS,
    NodeKind.TOO_DEEP: sf.TOO_MANY_STEPS,
    NodeKind.UNPARSABLE: sf.NO_VALID_CHILD,
}
_RECORD_TERMINALS = {
    NodeKind.ANSWER: "answer",
    NodeKind.CODE_ERRORS: "code_error",
    NodeKind.TOO_DEEP: "too_many_steps",
    NodeKind.UNPARSABLE: "no_valid_child",
}
_TREE_FIELDS = tuple(f.name for f in dataclasses.fields(Tree))
_FILES = ("trees.npz", "problems.jsonl", "nodes.jsonl")  # what `save` writes


@dataclasses.dataclass
class NodeRecord:
    """The host side of one node: its step text and what verifying it produced."""

    text: str = ""  # the step as it enters the trajectory (with <output> when it closes a block)
    code: str | None = None  # the program executed to verify a code step
    output: str | None = None  # the interpreter's output, or its error
    answer: str | None = None  # the final answer of an answer step, or a terminal sentinel
    correct: bool | None = None  # the answer graded against the gold answer, when known


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """A root-to-leaf path: per step its node id, text, Q, value and visits (root excluded)."""

    nodes: tuple[int, ...]
    steps: tuple[str, ...]
    q_values: tuple[float, ...]
    values: tuple[float, ...]
    visit_counts: tuple[int, ...]
    kind: NodeKind  # of the leaf
    answer: str | None
    correct: bool | None

    @property
    def text(self) -> str:
        return "".join(self.steps)

    @property
    def mean_q(self) -> float:
        return float(np.mean(self.q_values)) if self.q_values else 0.0


@dataclasses.dataclass
class SearchResult:
    """B searched problems: the tree arrays (numpy) and, per tree, one `NodeRecord` per node."""

    problems: list[Problem]
    arrays: dict[str, np.ndarray]  # the `Tree` fields
    nodes: list[list[NodeRecord]]

    @classmethod
    def from_tree(cls, problems: Sequence[Problem], tree: Tree, nodes: list[list[NodeRecord]]) -> SearchResult:
        arrays = {name: np.array(jax.device_get(getattr(tree, name))) for name in _TREE_FIELDS}
        return cls(list(problems), arrays, nodes)

    def __len__(self) -> int:
        return len(self.problems)

    def take(self, rows: Sequence[int]) -> SearchResult:
        """The trees `rows` only, in that order."""
        rows = list(rows)
        return SearchResult([self.problems[b] for b in rows], {k: a[rows] for k, a in self.arrays.items()},
                            [self.nodes[b] for b in rows])

    def tree(self) -> Tree:
        """The arrays back as a device `Tree` (e.g. to continue searching)."""
        return Tree(**{name: jnp.asarray(a) for name, a in self.arrays.items()})

    def num_nodes(self, b: int) -> int:
        return int(self.arrays["node_count"][b])

    def q_values(self, b: int) -> np.ndarray:
        n, w = self.arrays["visit_count"][b], self.arrays["value_sum"][b]
        return np.where(n > 0, w / np.maximum(n, 1), 0.0)[: self.num_nodes(b)]

    def answer_nodes(self, b: int) -> np.ndarray:
        """The valid answers of tree b that were scored (beam search leaves unchosen ones unvisited)."""
        count = self.num_nodes(b)
        kind, visits = self.arrays["kind"][b, :count], self.arrays["visit_count"][b, :count]
        return np.flatnonzero((kind == NodeKind.ANSWER) & (visits > 0))

    def best_answer_node(self, b: int) -> int:
        """The answer with the highest Q (its own score: ground truth or PPM; spec §3.7), or -1."""
        ids = self.answer_nodes(b)
        return int(ids[np.argmax(self.q_values(b)[ids])]) if len(ids) else NO_NODE

    def answer(self, b: int) -> str | None:
        node = self.best_answer_node(b)
        return self.nodes[b][node].answer if node != NO_NODE else None

    def pass_at_n(self, b: int) -> bool | None:
        """Whether any answer in the tree is correct (None when nothing was graded)."""
        graded = [self.nodes[b][i].correct for i in self.answer_nodes(b) if self.nodes[b][i].correct is not None]
        return any(graded) if graded else None

    def path(self, b: int, node: int) -> list[int]:
        """Node ids from the first step down to `node` (root excluded)."""
        parent, ids = self.arrays["parent"][b], []
        while node not in (ROOT, NO_NODE):
            ids.append(int(node))
            node = parent[node]
        return ids[::-1]

    def trajectories(self, b: int) -> list[Trajectory]:
        """Every root-to-leaf path of tree b, leaves in node order (unexpanded leaves included)."""
        count, q = self.num_nodes(b), self.q_values(b)
        leaves = np.flatnonzero(self.arrays["children"][b, :count, 0] == NO_NODE)
        out = []
        for leaf in leaves[leaves != ROOT]:
            ids = self.path(b, leaf)
            rec = self.nodes[b][leaf]
            out.append(Trajectory(
                nodes=tuple(ids), steps=tuple(self.nodes[b][i].text for i in ids),
                q_values=tuple(float(q[i]) for i in ids),
                values=tuple(float(self.arrays["value"][b, i]) for i in ids),
                visit_counts=tuple(int(self.arrays["visit_count"][b, i]) for i in ids),
                kind=NodeKind(int(self.arrays["kind"][b, leaf])), answer=rec.answer, correct=rec.correct,
            ))
        return out

    def step_tree(self, b: int) -> records.StepTree:
        """Tree b as the records extractor's `StepTree` (SFT examples and PPM pairs, spec §4)."""
        from rstar_jax.data import records  # only extraction needs it (and editdistance)

        q, kind = self.q_values(b), self.arrays["kind"][b]
        return records.StepTree(self.problems[b].question, tuple(
            records.StepNode(
                parent=int(self.arrays["parent"][b, i]), text=rec.text, q=float(q[i]),
                visits=int(self.arrays["visit_count"][b, i]),
                terminal=_RECORD_TERMINALS.get(NodeKind(int(kind[i]))), correct=bool(rec.correct),
            )
            for i, rec in enumerate(self.nodes[b])
        ))


def concat(results: Iterable[SearchResult]) -> SearchResult:
    """One result from several batches (their trees must share N and K)."""
    results = list(results)
    arrays = {k: np.concatenate([r.arrays[k] for r in results]) for k in results[0].arrays}
    return SearchResult([p for r in results for p in r.problems], arrays, [n for r in results for n in r.nodes])


def _atomic(path: str, write) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def _jsonl(lines: Iterable[dict[str, Any]]):
    def write(f):
        for line in lines:
            f.write((json.dumps(line, ensure_ascii=False) + "\n").encode())
    return write


def _problem_json(p: Problem) -> dict[str, Any]:
    return {"index": p.index, "question": p.question, "answer": list(p.answer) if isinstance(p.answer, tuple) else p.answer,
            "source": p.source}


def save(result: SearchResult, directory: str) -> None:
    """Writes `trees.npz`, `problems.jsonl` and `nodes.jsonl` into `directory`."""
    os.makedirs(directory, exist_ok=True)
    _atomic(os.path.join(directory, "problems.jsonl"), _jsonl(_problem_json(p) for p in result.problems))
    _atomic(os.path.join(directory, "nodes.jsonl"), _jsonl(
        {"tree": b, "node": i, **dataclasses.asdict(rec)}
        for b, recs in enumerate(result.nodes) for i, rec in enumerate(recs)
    ))
    _atomic(os.path.join(directory, "trees.npz"), lambda f: np.savez_compressed(f, **result.arrays))


def _is_saved(directory: str) -> bool:
    return any(os.path.exists(os.path.join(directory, name)) for name in _FILES)


def load_each(directory: str) -> Iterator[SearchResult]:
    """The saved searches in `directory`: itself when `save` wrote it, else every subdirectory that
    `save` wrote, in name order (`*.tmp*` ones, still being written, skipped). A problem (source,
    index) that an earlier subdirectory holds is left out: a resumed sharded run may search one twice.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: no such search directory")
    if _is_saved(directory):
        yield _load_one(directory)
        return
    seen: set[tuple[str, Any]] = set()
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if ".tmp" in name or not os.path.isdir(path) or not _is_saved(path):
            continue
        result = _load_one(path)
        keys = [(p.source, p.index) for p in result.problems]
        rows = [b for b, key in enumerate(keys) if key not in seen]
        seen.update(keys)
        if rows:
            yield result if len(rows) == len(keys) else result.take(rows)


def load(directory: str) -> SearchResult:
    """Reads a directory written by `save`, or a directory of them as one result (see `load_each`)."""
    results = list(load_each(directory))
    if not results:
        raise FileNotFoundError(f"{directory}: no trees.npz here or in a subdirectory; not a saved search directory")
    shapes = {r.arrays["children"].shape[1:] for r in results}
    if len(shapes) > 1:
        raise ValueError(f"{directory}: its saved searches have different tree shapes (nodes, children) "
                         f"{sorted(shapes)}; read them one by one with `load_each`")
    return results[0] if len(results) == 1 else concat(results)


def _load_one(directory: str) -> SearchResult:
    paths = {name: os.path.join(directory, name) for name in _FILES}
    for path in paths.values():
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: missing; not a saved search directory")
    with np.load(paths["trees.npz"]) as data:
        missing = set(_TREE_FIELDS) - set(data.files)
        if missing:
            raise ValueError(f"{paths['trees.npz']}: missing arrays {sorted(missing)}")
        arrays = {name: data[name] for name in _TREE_FIELDS}
    problems = []
    for line in _read_jsonl(paths["problems.jsonl"]):
        answer = line["answer"]
        problems.append(Problem(line["index"], line["question"], tuple(answer) if isinstance(answer, list) else answer,
                                line["source"]))
    nodes: list[list[NodeRecord]] = [[] for _ in problems]
    fields = {f.name for f in dataclasses.fields(NodeRecord)}
    for lineno, line in enumerate(_read_jsonl(paths["nodes.jsonl"]), start=1):
        b, i = line["tree"], line["node"]
        if not 0 <= b < len(nodes) or i != len(nodes[b]):
            raise ValueError(f"{paths['nodes.jsonl']}:{lineno}: node ({b}, {i}) out of order")
        nodes[b].append(NodeRecord(**{k: v for k, v in line.items() if k in fields}))
    for b, recs in enumerate(nodes):
        if len(recs) != int(arrays["node_count"][b]):
            raise ValueError(f"{paths['nodes.jsonl']}: tree {b} has {len(recs)} nodes, trees.npz says "
                             f"{int(arrays['node_count'][b])}")
    return SearchResult(problems, arrays, nodes)


def _read_jsonl(path: str) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not JSON ({e.msg})") from None


def rstar_states(result: SearchResult, b: int) -> dict[str, dict[str, Any]]:
    """Tree b as the original's `{tag: state}` dict: root "0", children "<parent>.<k>", k from 1."""
    arrays, q = result.arrays, result.q_values(b)
    tags = {ROOT: "0"}
    states = {}
    for i, rec in enumerate(result.nodes[b]):
        if i != ROOT:
            parent = int(arrays["parent"][b, i])
            k = list(arrays["children"][b, parent]).index(i) + 1
            tags[i] = f"{tags[parent]}.{k}"
        kind = NodeKind(int(arrays["kind"][b, i]))
        is_code = rec.code is not None
        states[tags[i]] = {
            "text": rec.text,
            "extra_info": f"question: {result.problems[b].question}" if i == ROOT else "",
            "action": "python_interpreter" if is_code else "",
            "action_input": rec.text if is_code else "",
            "final_answer": rec.answer if kind != NodeKind.STEP and rec.answer is not None else "",
            "observation": rec.output or "",
            "value": float(arrays["value"][b, i]),
            "q_value": float(q[i]),
            "visit_count": int(arrays["visit_count"][b, i]),
        }
    return states


def export_rstar_jsonl(result: SearchResult, path: str) -> None:
    """One line per problem: `{question, answer, "rstar": {tag: state}}`, as the original's main.py."""
    _atomic(path, _jsonl(
        {"question": p.question, "answer": p.answer if isinstance(p.answer, str) else list(p.answer),
         "rstar": rstar_states(result, b)}
        for b, p in enumerate(result.problems)
    ))
