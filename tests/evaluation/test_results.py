"""Result records: grading with clusters, resumable shard appends (torn tails) and the merge."""

import json

from rstar_jax.data.problems import Problem
from rstar_jax.data.records import read_jsonl
from rstar_jax.evaluation.results import Candidate, ShardWriter, grade, merge_shards


def _record(position):
    return {"position": position, "candidates": []}


def test_grade_marks_correctness_against_any_gold_and_clusters_answers():
    problem = Problem(index=7, question="Q", answer=("3", "-3"), source="s")
    candidates = [Candidate("-3", ("a",), "answer"), Candidate(None, ("b",), "too_many_steps"),
                  Candidate("4", ("c",), "answer", score=0.5, run=2), Candidate("-3.0", ("d",), "answer")]

    def equivalent(pred, gold):
        golds = gold if isinstance(gold, list) else [gold]
        return any(float(pred) == float(g) for g in golds)

    record = grade(problem, 3, "sample", candidates, equivalent)
    assert {k: record[k] for k in ("source", "position", "index", "gold", "method")} == {
        "source": "s", "position": 3, "index": 7, "gold": ("3", "-3"), "method": "sample"}
    assert [(c["correct"], c["cluster"]) for c in record["candidates"]] == [(True, 0), (False, None), (False, 1), (True, 0)]
    assert record["candidates"][2]["score"] == 0.5 and record["candidates"][2]["run"] == 2
    json.dumps(record)  # the record is plain JSON


def test_writer_resumes_after_a_torn_last_line(tmp_path):
    writer = ShardWriter(str(tmp_path), 0, 1)
    writer.append([_record(0), _record(1)])
    with open(writer.path, "a") as f:
        f.write('{"position": 2, "candi')  # killed mid-write
    resumed = ShardWriter(str(tmp_path), 0, 1)
    assert resumed.done == {0, 1}
    resumed.append([_record(2)])
    assert [r["position"] for r in read_jsonl(resumed.path)] == [0, 1, 2]


def test_merge_waits_for_every_shard_then_writes_problem_order(tmp_path):
    directory = str(tmp_path)
    first, second = ShardWriter(directory, 0, 2), ShardWriter(directory, 1, 2)
    first.append([_record(0), _record(2)])
    assert merge_shards(directory, 4, 2) is None
    second.append([_record(3), _record(1)])
    merged = merge_shards(directory, 4, 2)
    assert [r["position"] for r in merged] == [0, 1, 2, 3]
    assert read_jsonl(str(tmp_path / "predictions.jsonl")) == merged
