"""Searched trees on the host: `SearchResult` (arrays + per-node text), save / load, and export to
the original's per-problem JSONL (`{tag: state}`, spec §3.10).

`SearchResult` keeps the arrays, to save, load and continue a search; `result.tree(b)` is tree b as
the one host view every reader uses (`data.trees.SearchedTree`: paths, trajectories, ranking).

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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rstar_jax.data.problems import Problem
from rstar_jax.data.trees import Node, SearchedTree
from rstar_jax.search.tree import NO_NODE, ROOT, NodeKind, Tree

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

    def device_tree(self) -> Tree:
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

    def tree(self, b: int) -> SearchedTree:
        """Tree b as the host view that extraction, inspection and evaluation read: per node its
        parent, step text, Q, value, visits, kind, answer and grade."""
        count, a = self.num_nodes(b), self.arrays
        columns = (a["parent"][b, :count].tolist(), self.q_values(b).tolist(), a["value"][b, :count].tolist(),
                   a["visit_count"][b, :count].tolist(), a["kind"][b, :count].tolist())
        return SearchedTree(self.problems[b].question, tuple(
            Node(parent, rec.text, q, value, visits, NodeKind(kind), rec.answer, rec.correct)
            for rec, parent, q, value, visits, kind in zip(self.nodes[b], *columns)
        ))


def concat(results: Iterable[SearchResult]) -> SearchResult:
    """One result from several batches (their trees must share N and K)."""
    results = list(results)
    if not results:
        raise ValueError("no search results: the list of problems to search was empty")
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
    index) that an earlier subdirectory holds is left out, should two hold it."""
    seen: set[tuple[str, Any]] = set()
    for path in _saved_directories(directory):
        result = _load_one(path)
        keys = [(p.source, p.index) for p in result.problems]
        rows = [b for b, key in enumerate(keys) if key not in seen]
        seen.update(keys)
        if rows:
            yield result if len(rows) == len(keys) else result.take(rows)


def saved_problems(directory: str) -> list[Problem]:
    """The problems of the saved searches in `directory` (as `load_each` finds them), read without
    their trees."""
    return [p for path in _saved_directories(directory) for p in _read_problems(os.path.join(path, "problems.jsonl"))]


def _saved_directories(directory: str) -> Iterator[str]:
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: no such search directory")
    if _is_saved(directory):
        yield directory
        return
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if ".tmp" not in name and os.path.isdir(path) and _is_saved(path):
            yield path


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
    problems = _read_problems(paths["problems.jsonl"])
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


def _read_problems(path: str) -> list[Problem]:
    problems = []
    for line in _read_jsonl(path):
        answer = line["answer"]
        problems.append(Problem(line["index"], line["question"], tuple(answer) if isinstance(answer, list) else answer,
                                line["source"]))
    return problems


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
