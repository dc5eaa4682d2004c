"""Training records from search trees (spec §4): SFT examples and PPM preference pairs.

Extraction reads `SearchedTree`, the host view of one searched tree (`data.trees`; a saved search
gives it as `SearchResult.tree(b)`). Records are written and read in rStar's released formats:
SFT `[{query, response}]`, PPM `[{prompt, pos, neg, pos_count, neg_count}]`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from statistics import mean
from typing import Any

import editdistance

from rstar_jax import steps as sf
from rstar_jax.data.trees import SearchedTree, Trajectory
from rstar_jax.steps import NodeKind


def code_steps(response: str) -> int:
    """Code steps before the last one in a solution (the last ends the code block, not a step)."""
    return response.count(sf.STEP_END)


def step_counts(solutions: Iterable[tuple[str, bool]]) -> dict[str, list[int]]:
    """{code steps: [correct, all]} over (response, correct) pairs; keys are strings (JSON)."""
    counts: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0])
    for response, correct in solutions:
        tally = counts[code_steps(response)]
        tally[0] += correct
        tally[1] += 1
    return {str(n): counts[n] for n in sorted(counts)}


@dataclasses.dataclass(frozen=True)
class SFTRecord:
    query: str
    response: str


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    prompt: str
    pos: str
    neg: str
    pos_count: int
    neg_count: int


@dataclasses.dataclass(frozen=True)
class PairFilter:
    """Step-pair thresholds of `sample_rm_data.py`, plus how many children each side keeps."""

    min_step_margin: float = 0.5
    min_edit_distance: int = 20
    per_side: int = 2  # top-2 chosen vs bottom-2 rejected ...
    fallback: int = 4  # ... or up to 4 on one side when the other has a single candidate


def attempts(tree: SearchedTree) -> list[Trajectory]:
    """The trajectories extraction ranks: those ending in an answer (correct or not) or in too many
    code errors."""
    return [t for t in tree.trajectories() if t.kind in (NodeKind.ANSWER, NodeKind.CODE_ERRORS)]


def sft_records(trees: Sequence[SearchedTree], n: int = 2) -> list[SFTRecord]:
    """The top-`n` correct trajectories of one problem's trees (several search passes) by
    (mean Q, min Q), among those whose text has no error in it.

    `sample_sft_data.py` drops error-containing responses after keeping the top n; we drop them
    first, so a problem keeps n examples whenever it has n clean ones.
    """
    clean = [t for tree in trees for t in attempts(tree)
             if t.is_correct and "error" not in t.text.lower()]
    clean.sort(key=lambda t: t.rank_key, reverse=True)
    return [SFTRecord(trees[0].question, t.text) for t in clean[:n]]


def _outcome_counts(tree: SearchedTree, kids: list[list[int]]) -> tuple[list[int], list[int]]:
    """Correct / wrong answer leaves below every node (spec §4.2). Only answers are labelled, as
    `extra_rm_file.py` does (`if is_valid_final_answer_node(node) or ...: if node.q_value == 1:
    final_correct ... elif node.q_value == -1 and node.final_answer != TOO_MANY_CODE_ERRORS:
    final_wrong`): code-error, too-many-steps and no-valid-child leaves are neither, so no pair
    is rejected for a format failure alone. Correctness comes from grading, which is what
    q = +1 / -1 means on a data-generation tree."""
    correct, wrong = [0] * len(tree.nodes), [0] * len(tree.nodes)
    for i in reversed(range(len(tree.nodes))):  # children come after their parent
        node = tree.nodes[i]
        if not kids[i] and node.kind == NodeKind.ANSWER:
            correct[i] = int(node.correct is True)
            wrong[i] = int(node.correct is False)  # an answer whose grading ran out of time is neither
        if i:
            correct[node.parent] += correct[i]
            wrong[node.parent] += wrong[i]
    return correct, wrong


def step_pairs(tree: SearchedTree, flt: PairFilter = PairFilter()) -> list[PreferencePair]:
    """Step-level pairs: at each expanded node, high-Q children leading to correct answers vs
    low-Q children leading to wrong ones, sharing the prefix (`extra_rm_file.py`, mode "all",
    then the margin and edit-distance filters of `sample_rm_data.py`)."""
    kids = tree.children()
    correct, wrong = _outcome_counts(tree, kids)
    q = [n.q for n in tree.nodes]

    def continuation_mean(i: int, good: bool) -> float:
        # follow the best-Q correct child (or the worst-Q wrong child) down to a leaf
        values = [q[i]]
        while kids[i]:
            options = [c for c in kids[i] if (correct if good else wrong)[c] > 0]
            i = max(options, key=q.__getitem__) if good else min(options, key=q.__getitem__)
            values.append(q[i])
        return mean(values)

    pairs, queue = [], collections.deque([0])
    while queue:
        node = queue.popleft()
        chosen = sorted((c for c in kids[node] if correct[c]), key=lambda c: -q[c])
        rejected = sorted((c for c in kids[node] if wrong[c]), key=lambda c: q[c])
        n_chosen = flt.fallback if len(rejected) == 1 else flt.per_side
        n_rejected = flt.fallback if len(chosen) == 1 else flt.per_side
        chosen, rejected = chosen[:n_chosen], rejected[:n_rejected]
        prefix = sf.policy_prompt(tree.question) + "".join(tree.nodes[i].text for i in tree.path(node))
        for c in chosen:
            for r in rejected:
                pos, neg = tree.nodes[c].text, tree.nodes[r].text
                if (q[c] - q[r] >= flt.min_step_margin
                        and continuation_mean(c, True) > continuation_mean(r, False)
                        and editdistance.eval(pos, neg) >= flt.min_edit_distance):
                    pairs.append(PreferencePair(prefix, pos, neg, len(chosen), len(rejected)))
        queue.extend(c for c in kids[node] if correct[c] and wrong[c])
    return pairs


def final_answer_pairs(trees: Sequence[SearchedTree], per_side: int = 2) -> list[PreferencePair]:
    """Whole-trajectory pairs over one problem's trees: the top `per_side` correct vs the bottom
    `per_side` wrong trajectories by mean Q (code-error ones count as wrong), if both exist (spec
    §4.2: 2). `per_side` 0: every distinct correct text against every distinct wrong one. Each
    pair weighs 1 / (pos_count * neg_count), so a problem's pairs weigh 1 together either way;
    the whole cross product gives the PPM more comparisons of the same problems (the paper's
    pairs come from 747k problems instead)."""
    ranked = [t for tree in trees for t in attempts(tree)]
    pos = sorted((t for t in ranked if t.is_correct), key=lambda t: t.rank_key, reverse=True)
    graded = [t for t in ranked if t.kind != NodeKind.ANSWER or t.correct is not None]  # ungraded: neither side
    neg = sorted((t for t in graded if not t.is_correct), key=lambda t: t.rank_key)
    pos, neg = [t.text for t in pos], [t.text for t in neg]
    if per_side:
        pos, neg = pos[:per_side], neg[:per_side]
    else:  # a step sampled twice, or a path searched in two passes, is one trajectory
        pos, neg = list(dict.fromkeys(pos)), list(dict.fromkeys(neg))
    question = trees[0].question
    prompt = sf.QUESTION_TEMPLATE.format(question=question)
    head = sf.policy_prompt(question)[len(prompt):]  # "\n<|assistant|>: Let's think ..."
    return [PreferencePair(prompt, head + p, head + n, len(pos), len(neg)) for p in pos for n in neg]


PAIR_KINDS = ("step", "answer", "no_answer")


def pair_kind(pair: PreferencePair) -> str:
    """What a pair compares: "step", two continuations of the same steps; "answer", a right final
    answer against a wrong one; "no_answer", a right answer against a trajectory that ended in code
    errors. Final-answer pairs hold the bare question as their prompt (`final_answer_pairs`)."""
    if sf.ASSISTANT in pair.prompt:
        return "step"
    return "answer" if pair.neg.rstrip().endswith(sf.ANSWER_END) else "no_answer"


# ---- rStar's released JSON formats -------------------------------------------------------------

class RecordFormatError(ValueError):
    """A record file that cannot be read; the message names the file, record and field."""


def write_json_atomic(path: str, obj: Any) -> None:
    """Writes JSON through a temporary file and a rename, so readers never see half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
    os.replace(tmp, path)


def read_jsonl(path: str, *, repair: bool = False) -> list[dict[str, Any]]:
    """The objects of a JSONL file (none if it is absent); a torn last line (killed mid-write) is
    dropped, and cut off the file if `repair`."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    complete = data[: data.rfind(b"\n") + 1]
    if repair and len(complete) < len(data):
        with open(path, "r+b") as f:
            f.truncate(len(complete))
    records = []
    for lineno, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {lineno} is not valid JSON ({e.msg}); delete the file to redo it") from None
    return records


def write_records(path: str, records: Iterable[SFTRecord | PreferencePair]) -> None:
    """Writes SFT records or preference pairs as one rStar-format JSON list."""
    write_json_atomic(path, [dataclasses.asdict(r) for r in records])


def read_sft(path: str) -> list[SFTRecord]:
    return _read(path, SFTRecord)


def read_pairs(path: str) -> list[PreferencePair]:
    return _read(path, PreferencePair)


def _read(path: str, cls: type) -> list[Any]:
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise RecordFormatError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, list):
        raise RecordFormatError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    out = []
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise RecordFormatError(f"{path}: record {i}: expected an object")
        for name, kind in fields.items():
            expected = int if kind == "int" else str
            if not isinstance(record.get(name), expected):
                raise RecordFormatError(
                    f'{path}: record {i}: field "{name}" must be {expected.__name__}, '
                    f"got {record.get(name)!r}")
        out.append(cls(**{name: record[name] for name in fields}))
    return out


def merge_record_files(paths: Sequence[str], out_path: str) -> int:
    """Concatenates record files (e.g. per-process shards) into one; returns the record count."""
    merged: list[Any] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            merged.extend(json.load(f))
    write_json_atomic(out_path, merged)
    return len(merged)
