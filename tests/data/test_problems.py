"""Problem-set loading: rStar's three file layouts, directories, and errors that name the record."""

import json
import os

import pytest

from rstar_jax.data.problems import Problem, ProblemFormatError, load_problem_set, load_problem_sets

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "eval_data_sample")
SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "eval_data")
# Sizes from spec §7.
SHARED_SIZES = {
    "GSM8K_test": 1319, "MATH_test": 5000, "math500_test": 500, "aime2024_test": 30, "amc23_test": 40,
    "collegemath_test": 2818, "gaokao2023en_test": 385, "olympiadbench_test": 675, "omni_test": 4428,
}


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_json_list_jsonl_and_example_dict_load_the_same(tmp_path):
    records = [{"index": 0, "question": "1+1?", "answer": "2"}, {"index": "b", "question": "Q", "answer": 3}]
    as_list = _write(tmp_path, "a.json", json.dumps(records))
    as_jsonl = _write(tmp_path, "b.jsonl", "\n".join(json.dumps(r) for r in records) + "\n\n")
    as_dict = _write(tmp_path, "c.json", json.dumps({"example": records}))
    loaded = [load_problem_set(p) for p in (as_list, as_jsonl, as_dict)]
    assert [(p.index, p.question, p.answer) for p in loaded[0]] == [(0, "1+1?", "2"), ("b", "Q", "3")]
    assert [[(p.index, p.question, p.answer) for p in ps] for ps in loaded[1:]] == [[(0, "1+1?", "2"), ("b", "Q", "3")]] * 2
    assert [ps[0].source for ps in loaded] == ["a", "b", "c"]


def test_list_answer_means_any_of_them_and_missing_index_is_the_record_number(tmp_path):
    path = _write(tmp_path, "s.json", json.dumps([{"question": "Q", "answer": ["3", "-3"]}]))
    (problem,) = load_problem_set(path)
    assert problem == Problem(index=0, question="Q", answer=("3", "-3"), source="s")
    assert problem.golds == ("3", "-3")


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("bad.json", "[{", "bad.json: not valid JSON (line 1"),
        ("bad.json", '{"data": []}', 'must hold the problem list under "example"'),
        ("bad.json", '"x"', "expected a JSON list of problems, got str"),
        ("bad.jsonl", '{"question": "Q", "answer": "1"}\n{oops', "bad.jsonl: line 2 is not valid JSON"),
        ("bad.json", '[{"question": "Q", "answer": "1"}, 5]', "record 1: expected an object, got int"),
        ("bad.json", '[{"question": "Q", "answer": "1"}, {"answer": "2"}]', 'record 1: field "question" must be'),
        ("bad.json", '[{"question": "Q"}]', 'record 0: missing field "answer"'),
        ("bad.json", '[{"question": "Q", "answer": {"a": 1}}]', 'record 0: field "answer" must be'),
        ("bad.json", '[{"question": "Q", "answer": []}]', 'record 0: field "answer" must be'),
        ("bad.json", '[{"question": "Q", "answer": "1", "index": [1]}]', 'record 0: field "index" must be'),
        ("bad.json", '[{"question": 5, "answer": "1"}]', 'record 0: field "question" must be a non-empty string'),
        ("bad.json", '[{"question": "Q", "answer": true}]', 'record 0: field "answer" must be'),
        ("bad.json", "[]", "bad.json: holds no problems"),
        ("bad.jsonl", "\n\n", "bad.jsonl: holds no problems"),
        ("bad.json", '{"example": []}', "bad.json: holds no problems"),
        ("bad.json", '{"example": {"question": "Q"}}', "expected a JSON list of problems, got dict"),
        ("bad.json", '[{"question": "Q", "answer": "1", "index": 7}, {"question": "R", "answer": "2", "index": 7}]',
         'record 1: field "index" 7 repeats record 0'),
        ("bad.json", '[{"question": "Q", "answer": "1", "index": 1}, {"question": "R", "answer": "2"}]',
         'record 1: field "index" 1 repeats record 0'),  # a missing index is the record number
    ],
)
def test_malformed_files_name_the_file_record_and_field(tmp_path, name, text, message):
    path = _write(tmp_path, name, text)
    with pytest.raises(ProblemFormatError) as info:
        load_problem_set(path)
    assert message in str(info.value) and path in str(info.value)


def test_missing_file_and_empty_directory_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json: problem file not found"):
        load_problem_set(str(tmp_path / "nope.json"))
    with pytest.raises(FileNotFoundError, match="nope: no such problem file or directory"):
        load_problem_sets(str(tmp_path / "nope"))
    with pytest.raises(ProblemFormatError, match="no \\*.json or \\*.jsonl"):
        load_problem_sets(str(tmp_path))


def test_fixture_directory_loads_all_nine_sets():
    sets = load_problem_sets(FIXTURES)
    assert sorted(sets) == sorted(SHARED_SIZES)
    assert all(problems and all(p.source == name for p in problems) for name, problems in sets.items())
    assert ("3", "-3") in [p.answer for p in sets["MATH_test"]]


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared/eval_data (the nine rStar sets) is not present")
def test_the_nine_real_sets_load_with_the_spec_sizes():
    sets = load_problem_sets(SHARED)
    assert {name: len(problems) for name, problems in sets.items()} == SHARED_SIZES
    assert load_problem_sets(os.path.join(SHARED, "amc23_test.json")) == {"amc23_test": sets["amc23_test"]}


def test_a_file_that_is_not_utf8_names_its_line_and_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "latin1.json"
    text = '[{"question": "1+1?", "answer": "2"},\n {"question": "caf\u00e9?", "answer": "3"}]'
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ProblemFormatError, match=r"latin1\.json: line 2: not UTF-8 text \(byte 0xe9"):
        load_problem_set(str(path))

    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + '{"question": "caf\u00e9?", "answer": "3"}\n'.encode())
    assert [p.question for p in load_problem_set(str(bom))] == ["caf\u00e9?"]
