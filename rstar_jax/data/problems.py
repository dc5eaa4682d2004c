"""Problem sets in rStar's format: `{index, question, answer}` records (spec §7).

A set is a JSON list, a JSONL file (one record per line) or a JSON object holding the list under
"example" (all three are accepted by the original `main.py`). `answer` is the final answer only;
a list of strings means any of them is accepted. A directory holds several sets, one per file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from collections.abc import Sequence
from typing import Any

SET_SUFFIXES = (".json", ".jsonl")


class ProblemFormatError(ValueError):
    """A malformed problem file; the message names the file, record and field."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One question with its gold final answer(s); `source` names the set it came from."""

    index: int | str
    question: str
    answer: str | tuple[str, ...]
    source: str

    @property
    def golds(self) -> tuple[str, ...]:
        """The accepted answers as a tuple (one element unless the set lists several)."""
        return self.answer if isinstance(self.answer, tuple) else (self.answer,)


def stream_id(*parts: object) -> int:
    """A stable 31-bit number naming `parts`, e.g. a problem's source and index: the random stream a
    sampler draws that problem's samples from, so they do not depend on its place in a batch."""
    return zlib.crc32("\x00".join(map(str, parts)).encode()) & 0x7FFFFFFF


def set_name(path: str) -> str:
    """A set's name is its file name without the suffix, e.g. "math500_test"."""
    base = os.path.basename(os.path.normpath(path))
    for suffix in SET_SUFFIXES:
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def load_problem_set(path: str, *, source: str | None = None) -> list[Problem]:
    """Reads one problem file (JSON list, JSONL, or JSON dict with "example")."""
    source = source or set_name(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: problem file not found") from None
    except OSError as e:
        raise ProblemFormatError(f"{path}: cannot read problem file ({e.strerror})") from None
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not part of the JSON
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ProblemFormatError(f"{path}: line {line}: not UTF-8 text (byte {data[e.start]:#04x} at offset "
                                 f"{e.start}); save the file as UTF-8") from None
    if path.endswith(".jsonl"):
        records = _jsonl_records(path, text)
    else:
        records = _json_records(path, text)
    if not records:
        raise ProblemFormatError(f"{path}: holds no problems")
    problems = [_problem(path, i, record, source) for i, record in enumerate(records)]
    first: dict[int | str, int] = {}
    for i, p in enumerate(problems):  # search trees and results are keyed by (set, index)
        if p.index in first:
            raise ProblemFormatError(f'{path}: record {i}: field "index" {p.index!r} repeats record {first[p.index]}'
                                     " (indices must be unique within a set)")
        first[p.index] = i
    return problems


def load_problem_sets(path: str) -> dict[str, list[Problem]]:
    """Reads a problem file or every *.json / *.jsonl file of a directory, keyed by set name."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such problem file or directory")
    if not os.path.isdir(path):
        return {set_name(path): load_problem_set(path)}
    files = sorted(f for f in os.listdir(path) if f.endswith(SET_SUFFIXES))
    if not files:
        raise ProblemFormatError(f"{path}: directory holds no *.json or *.jsonl problem file")
    sets: dict[str, list[Problem]] = {}
    for file in files:
        name = set_name(file)
        if name in sets:
            raise ProblemFormatError(f"{path}: two problem files are both named {name!r}")
        sets[name] = load_problem_set(os.path.join(path, file))
    return sets


def _json_records(path: str, text: str) -> list[Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProblemFormatError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if isinstance(data, dict):
        if "example" not in data:
            raise ProblemFormatError(f'{path}: a JSON object must hold the problem list under "example"')
        data = data["example"]
    if not isinstance(data, list):
        raise ProblemFormatError(f"{path}: expected a JSON list of problems, got {type(data).__name__}")
    return data


def _jsonl_records(path: str, text: str) -> list[Any]:
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ProblemFormatError(f"{path}: line {lineno} is not valid JSON ({e.msg})") from None
    return records


def _problem(path: str, number: int, record: Any, source: str) -> Problem:
    where = f"{path}: record {number}"
    if not isinstance(record, dict):
        raise ProblemFormatError(f"{where}: expected an object, got {type(record).__name__}")
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ProblemFormatError(f'{where}: field "question" must be a non-empty string, got {question!r}')
    if "answer" not in record:
        raise ProblemFormatError(f'{where}: missing field "answer"')
    index = record.get("index", number)
    if not isinstance(index, (int, str)) or isinstance(index, bool):
        raise ProblemFormatError(f'{where}: field "index" must be an int or a string, got {index!r}')
    return Problem(index=index, question=question, answer=_answer(where, record["answer"]), source=source)


def _answer(where: str, answer: Any) -> str | tuple[str, ...]:
    # Numbers are accepted as the original does (`str(d["answer"])`); lists mean "any of these".
    if isinstance(answer, (str, int, float)) and not isinstance(answer, bool):
        return str(answer)
    if isinstance(answer, Sequence) and answer and all(isinstance(a, (str, int, float)) for a in answer):
        return tuple(str(a) for a in answer)
    raise ProblemFormatError(
        f'{where}: field "answer" must be a string, a number or a non-empty list of them, got {answer!r}'
    )
