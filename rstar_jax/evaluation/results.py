"""Per-problem result records: grading, and the resumable sharded JSONL files that hold them.

Each host appends its records to `<set>/<method>/predictions.shard-<i>-of-<n>.jsonl`, one write per
batch; a restart repairs a torn last line and skips the problems already there. Once every shard
is complete, process 0 merges them (in problem order) into `predictions.jsonl`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rstar_jax.data.problems import Problem
from rstar_jax.data.records import read_jsonl
from rstar_jax.evaluation import metrics

MERGED = "predictions.jsonl"


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One candidate solution: its steps, the final answer (None: no valid answer) and its score."""

    answer: str | None
    steps: tuple[str, ...]
    # Why it ended: "answer", "no_answer", "too_many_steps", or the sampler's finish reason of a
    # step that gave no answer ("eos", "length", or "stop" for an unparsable step).
    finish: str
    score: float | None = None  # PPM value of the whole solution (None without a PPM)
    step_scores: tuple[float, ...] | None = None
    run: int = 0  # sample or search-run number
    # Search methods: the other answers found in the run's tree (the original's per-tree pass@n).
    leaf_answers: tuple[str, ...] | None = None


def grade(
    problem: Problem,
    position: int,
    method: str,
    candidates: Sequence[Candidate],
    equivalent: Callable[[str, str | Sequence[str]], bool],
) -> dict[str, Any]:
    """The JSON record of one problem: every candidate with its correctness and answer cluster."""
    golds = list(problem.golds)

    def correct(answer: str | None) -> bool:
        return answer is not None and bool(equivalent(answer, golds))

    clusters = metrics.cluster_answers([c.answer for c in candidates], equivalent)
    graded = []
    for c, cluster in zip(candidates, clusters, strict=True):
        record = {**dataclasses.asdict(c), "correct": correct(c.answer), "cluster": cluster}
        if c.leaf_answers is not None:
            record["leaf_correct"] = record["correct"] or any(map(correct, c.leaf_answers))
        graded.append(record)
    return {
        "source": problem.source, "position": position, "index": problem.index, "question": problem.question,
        "gold": problem.answer, "method": method, "candidates": graded,
    }


def shard_path(directory: str, process_index: int, process_count: int) -> str:
    return os.path.join(directory, f"predictions.shard-{process_index:05d}-of-{process_count:05d}.jsonl")


class ShardWriter:
    """Appends result records to one host's shard; knows which problem positions are done."""

    def __init__(self, directory: str, process_index: int = 0, process_count: int = 1):
        os.makedirs(directory, exist_ok=True)
        self.path = shard_path(directory, process_index, process_count)
        self.done: set[int] = {record["position"] for record in read_jsonl(self.path, repair=True)}

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Writes a batch of records with one write + fsync, so a kill loses at most this batch."""
        records = list(records)
        if not records:
            return
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self.done.update(r["position"] for r in records)


def merge_shards(directory: str, num_problems: int, process_count: int) -> list[dict[str, Any]] | None:
    """Merges all shards into `predictions.jsonl` (atomically) once every problem is present.

    Returns the records in problem order, or None while some shard is still incomplete.
    """
    by_position: dict[int, dict[str, Any]] = {}
    for i in range(process_count):
        for record in read_jsonl(shard_path(directory, i, process_count)):
            by_position[record["position"]] = record
    if len(by_position) < num_problems:
        return None
    records = [by_position[p] for p in range(num_problems)]
    write_jsonl(os.path.join(directory, MERGED), records)
    return records


def write_jsonl(path: str, records: Iterable[dict[str, Any]]) -> None:
    """Writes a JSONL file atomically (temp file + rename)."""
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def write_text(path: str, text: str) -> None:
    """Writes a text file atomically (temp file + rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
