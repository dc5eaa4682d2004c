"""Record extraction (spec §4) on hand-built trees, and rStar's released record formats."""

import json
import os

import pytest

from rstar_jax.data import records as rec
from rstar_jax.data.records import PreferencePair, SFTRecord
from rstar_jax.data.trees import Node, SearchedTree
from rstar_jax import steps as sf
from rstar_jax.steps import NodeKind

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "rstar_examples")
Q = "Mia has 5 apples. Mia buys 3 more apples. How many apples does Mia have now?"

S_GOOD = "<code>\n# Mia has 5 apples.\napples = 5\n<end_of_step>"
S_BAD = "<code>\n# Mia buys apples\nbananas_total = 5 * 3\n<end_of_step>"
S_ERR = "<code>\n# oops\nprint(undefined_name)\n<end_of_code>\n<output>NameError: x<end_of_output>"
A_RIGHT = "\n\n# Now print the final answer\napples = apples + 3\nprint(apples)\n<end_of_code>"
A_WRONG = "\n<answer>From the result, the answer is \\boxed{15}.<end_of_answer>"
A_WRONG2 = "\n<answer>So the count must be \\boxed{2}.<end_of_answer>"


ANSWER, CODE_ERRORS = NodeKind.ANSWER, NodeKind.CODE_ERRORS


def node(parent, text, q, kind=NodeKind.STEP, correct=False, visits=1):
    return Node(parent=parent, text=text, q=q, visits=visits, kind=kind, correct=correct)


def small_tree() -> SearchedTree:
    """root -> {1 good step, 2 bad step, 3 code error}; 1 -> {4 right, 5 wrong}; 2 -> {6 wrong}."""
    return SearchedTree(Q, (
        node(-1, "", 0.0, visits=4),
        node(0, S_GOOD, 0.6),
        node(0, S_BAD, -0.5),
        node(0, S_ERR, -1.0, CODE_ERRORS),
        node(1, A_RIGHT, 1.0, ANSWER, correct=True),
        node(1, A_WRONG2, -1.0, ANSWER),
        node(2, A_WRONG, -1.0, ANSWER),
    ))


def test_attempts_and_coverage():
    tree = small_tree()
    got = {t.steps: (t.q_values, t.is_correct) for t in rec.attempts(tree)}
    assert got == {
        (S_ERR,): ((-1.0,), False),
        (S_GOOD, A_RIGHT): ((0.6, 1.0), True),
        (S_GOOD, A_WRONG2): ((0.6, -1.0), False),
        (S_BAD, A_WRONG): ((-0.5, -1.0), False),
    }
    assert tree.is_solved()
    assert not SearchedTree(Q, tree.nodes[:4]).is_solved()


def test_step_counts_tally_solutions_by_code_steps():
    one_step = S_GOOD + A_RIGHT
    two_steps = S_GOOD + S_GOOD + A_RIGHT
    assert [rec.code_steps(r) for r in (one_step, two_steps, A_WRONG)] == [1, 2, 0]
    counts = rec.step_counts([(two_steps, True), (one_step, False), (two_steps, False), (A_WRONG, False)])
    assert counts == {"0": [0, 1], "1": [0, 1], "2": [1, 2]}
    assert list(counts) == ["0", "1", "2"]


def test_sft_takes_top2_by_mean_then_min_q_without_errors():
    nodes = [node(-1, "", 0.0)]
    # (step Q, answer Q): means a 0.9, b 0.8 (min 0.6), c 0.8 (min 0.7); d has an error in its text
    for tag, step_q, answer_q, code in (("a", 0.8, 1.0, "a = 1"), ("b", 0.6, 1.0, "b = 1"),
                                        ("c", 0.7, 0.9, "c = 1"), ("d", 1.0, 1.0, "print('Error')")):
        nodes.append(node(0, f"<code>\n# {tag}\n{code}\n<end_of_step>", step_q))
        nodes.append(node(len(nodes) - 1, "\n<answer>\\boxed{8}<end_of_answer>", answer_q,
                          ANSWER, correct=True))
    out = rec.sft_records([SearchedTree(Q, tuple(nodes))], n=2)
    assert [r.response.split("# ")[1][0] for r in out] == ["a", "c"]
    assert all(r.query == Q for r in out)


def test_step_pairs_on_small_tree():
    pairs = rec.step_pairs(small_tree())
    prefix = sf.policy_prompt(Q)
    # root: one correct-leading child (1) -> up to 4 rejected: 2 (Q -0.5) and 1 itself (margin 0,
    # dropped); node 1 mixes outcomes, so it is visited: 4 vs 5.
    assert pairs == [
        PreferencePair(prefix, S_GOOD, S_BAD, 1, 2),
        PreferencePair(prefix + S_GOOD, A_RIGHT, A_WRONG2, 1, 1),
    ]


@pytest.mark.parametrize("terminal", [NodeKind.TOO_DEEP, NodeKind.UNPARSABLE, NodeKind.CODE_ERRORS])
def test_step_pairs_label_only_answers_as_wrong(terminal):
    # extra_rm_file.py: final_wrong only for a valid answer with q == -1; a leaf that failed on
    # format or depth leads to neither side, so it never becomes a rejected step
    nodes = (
        node(-1, "", 0.0, visits=3),
        node(0, S_GOOD, 0.6), node(1, A_RIGHT, 1.0, ANSWER, correct=True),
        node(0, S_BAD, -0.5), node(3, "\n\n# keep going\nx = 1\n<end_of_step>", -1.0, terminal),
    )
    assert rec.step_pairs(SearchedTree(Q, nodes)) == []
    wrong = nodes[:4] + (node(3, A_WRONG, -1.0, ANSWER),)
    assert [(p.pos, p.neg) for p in rec.step_pairs(SearchedTree(Q, wrong))] == [(S_GOOD, S_BAD)]
    ungraded = nodes[:4] + (node(3, A_WRONG, 0.0, ANSWER, correct=None),)  # its grading ran out of time
    assert rec.step_pairs(SearchedTree(Q, ungraded)) == []
    assert rec.final_answer_pairs([SearchedTree(Q, ungraded)]) == []


def test_step_pairs_fall_back_to_four_and_filter_margin_and_edit_distance():
    nodes = [node(-1, "", 0.0), node(0, S_GOOD, 0.9)]
    nodes.append(node(1, "\n<answer>\\boxed{8}<end_of_answer>", 1.0, ANSWER, correct=True))
    # one correct-leading child, so up to 4 rejected (the lowest Q); Q 0.45 fails the 0.5 margin
    wrong_qs = [-0.9, -0.8, 0.45, 0.6, 0.7]
    for i, q in enumerate(wrong_qs):
        nodes.append(node(0, f"<code>\n# wrong idea number {i}\nx = {i} * 1000 + 17\n<end_of_step>", q))
        nodes.append(node(len(nodes) - 1, A_WRONG, -1.0, ANSWER))
    # nearly the same text as the chosen step: edit distance < 20
    nodes.append(node(0, S_GOOD.replace("5", "6"), -0.9))
    nodes.append(node(len(nodes) - 1, A_WRONG, -1.0, ANSWER))
    pairs = rec.step_pairs(SearchedTree(Q, tuple(nodes)))
    assert [p.neg for p in pairs] == [nodes[i].text for i in (3, 5)]
    assert {(p.pos, p.pos_count, p.neg_count) for p in pairs} == {(S_GOOD, 1, 4)}


def test_step_pairs_need_the_chosen_continuation_to_beat_the_rejected_one():
    # chosen (Q 0.1) reaches its correct answer through low-Q steps (mean -0.175); the rejected
    # step (Q -0.4) continues through a high-Q step before failing (mean -1/6)
    nodes = (
        node(-1, "", 0.0),
        node(0, S_GOOD, 0.1), node(1, "\n\n# then\ny = 2\n<end_of_step>", -0.9),
        node(2, "\n\n# and then\nz = 3\n<end_of_step>", -0.9),
        node(3, "\n<answer>\\boxed{8}<end_of_answer>", 1.0, ANSWER, correct=True),
        node(0, S_BAD, -0.4), node(5, "\n\n# more\nw = 4\n<end_of_step>", 0.9),
        node(6, A_WRONG, -1.0, ANSWER),
    )
    assert rec.step_pairs(SearchedTree(Q, nodes)) == []
    relaxed = list(nodes)
    relaxed[6] = node(5, relaxed[6].text, 0.0)
    assert [p.neg for p in rec.step_pairs(SearchedTree(Q, tuple(relaxed)))] == [S_BAD]


def test_final_answer_pairs_whole_trajectories():
    pairs = rec.final_answer_pairs([small_tree()])
    head = sf.policy_prompt(Q)[len(f"{sf.USER}:\n{Q}"):]
    assert head.startswith(sf.NEWLINE_ASSISTANT)
    # wrong trajectories by mean Q ascending: code error (-1), bad step (-0.75), then wrong answer
    assert pairs == [
        PreferencePair(f"{sf.USER}:\n{Q}", head + S_GOOD + A_RIGHT, head + S_ERR, 1, 2),
        PreferencePair(f"{sf.USER}:\n{Q}", head + S_GOOD + A_RIGHT, head + S_BAD + A_WRONG, 1, 2),
    ]
    unsolved = SearchedTree(Q, small_tree().nodes[:4])
    assert rec.final_answer_pairs([unsolved]) == []


def test_final_answer_pairs_every_distinct_correct_against_every_distinct_wrong():
    # two passes over the same problem: the second repeats the first's trajectories
    trees = [small_tree(), small_tree()]
    prompt, head = f"{sf.USER}:\n{Q}", sf.policy_prompt(Q)[len(f"{sf.USER}:\n{Q}"):]
    wrong = [S_ERR, S_BAD + A_WRONG, S_GOOD + A_WRONG2]  # by mean Q ascending, each once
    assert rec.final_answer_pairs(trees, per_side=0) == [
        PreferencePair(prompt, head + S_GOOD + A_RIGHT, head + n, 1, 3) for n in wrong]
    assert len(rec.final_answer_pairs(trees, per_side=2)) == 2 * 2  # the top two: the same right one twice
    assert rec.final_answer_pairs([SearchedTree(Q, small_tree().nodes[:4])], per_side=0) == []


def test_pair_kinds_tell_steps_wrong_answers_and_code_errors_apart():
    kinds = [rec.pair_kind(p) for p in rec.step_pairs(small_tree()) + rec.final_answer_pairs([small_tree()])]
    # two step pairs; the final-answer pairs reject the code error, then the wrong answer
    assert kinds == ["step", "step", "no_answer", "answer"]
    assert set(kinds) <= set(rec.PAIR_KINDS)


def test_released_formats_round_trip(tmp_path):
    for name, read in (("sft_data_examples.json", rec.read_sft), ("rm_data_examples.json", rec.read_pairs)):
        src = os.path.join(EXAMPLES, name)
        records = read(src)
        assert records
        out = tmp_path / name
        rec.write_records(str(out), records)
        original = json.load(open(src))
        assert json.load(open(out)) == [{k: r[k] for k in records[0].__dataclass_fields__} for r in original]
    sft = rec.read_sft(os.path.join(EXAMPLES, "sft_data_examples.json"))
    assert sft[0].response.startswith(sf.CODE) and sft[0].response.endswith(sf.ANSWER_END)


def test_merge_shards(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    rec.write_records(str(a), [SFTRecord("q1", "r1")])
    rec.write_records(str(b), [SFTRecord("q2", "r2"), SFTRecord("q3", "r3")])
    assert rec.merge_record_files([str(a), str(b)], str(tmp_path / "all.json")) == 3
    assert [r.query for r in rec.read_sft(str(tmp_path / "all.json"))] == ["q1", "q2", "q3"]


def test_bad_record_file_names_record_and_field(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"query": "q", "response": "r"}, {"query": "q"}]))
    with pytest.raises(rec.RecordFormatError, match=r'bad.json: record 1: field "response"'):
        rec.read_sft(str(path))
    path.write_text("{not json")
    with pytest.raises(rec.RecordFormatError, match="bad.json: not valid JSON"):
        rec.read_pairs(str(path))
