"""Summaries: metric means, the paper's number for the same benchmark, markdown / JSON and the plot."""

import json

import pytest

from rstar_jax.evaluation import reporting


def _record(correct, clusters, scores=None):
    scores = scores or [None] * len(correct)
    return {"candidates": [{"correct": c, "cluster": k, "score": s} for c, k, s in zip(correct, clusters, scores)]}


@pytest.mark.parametrize("name, column", [("math500_test", "MATH"), ("MATH_test", None), ("GSM8K_test", "GSM8K"),
                                             ("aime2024_test", "AIME"), ("omni_test", "Omni"), ("mine", None)])
def test_set_names_map_to_paper_columns(name, column):
    assert reporting.benchmark_of(name) == column


def test_greedy_summary_has_the_paper_number_for_the_round():
    records = [_record([True], [0]), _record([False], [0]), _record([True], [0]), _record([True], [0])]
    row = reporting.summarize("math500_test", "greedy", records, ks=(1, 4), top_n=4, paper_round=4)
    assert row["headline"] == "pass@1" and row["accuracy"] == 75.0
    assert (row["paper"], row["paper_source"]) == (78.4, "Table 3 SLM-r4 (greedy)")
    assert reporting.summarize("GSM8K_test", "greedy", records, (1,), 4, 2)["paper"] == 89.1


def test_mcts_runs_are_judged_by_top_k_vote_against_table_1():
    # Four runs per problem; answers: wrong cluster 0 outscored by correct cluster 1.
    records = [_record([False, True, True, False], [0, 1, 1, 0], [0.1, 0.9, 0.8, 0.2])] * 2
    row = reporting.summarize("olympiadbench_test", "mcts", records, ks=(1, 2, 4), top_n=4, paper_round=4)
    assert row["headline"] == "top4_maj@4" and row["accuracy"] == 100.0  # 2:2 tie: the best-ranked answer wins
    assert row["paper"] == 65.6 and "64 trajectories" in row["paper_source"]
    assert row["metrics"]["best@1"] == 0.0 and row["metrics"]["best@2"] == 100.0


def test_every_candidate_counts_when_ks_stop_short_of_them():
    # Four MCTS runs under ks = (1, 8): the metrics and the headline still take all four.
    records = [_record([False, True, True, False], [0, 1, 1, 0], [0.1, 0.9, 0.8, 0.2])]
    row = reporting.summarize("amc23_test", "mcts", records, ks=(1, 8), top_n=4, paper_round=4)
    assert row["headline"] == "top4_maj@4" and row["accuracy"] == 100.0 and row["k"] == 4
    assert row["metrics"]["pass@4"] == 100.0 and "pass@8" not in row["metrics"]


def test_write_summary_and_plot(tmp_path):
    records = [_record([False, True, True, False], [0, 1, 1, 0])]
    row = reporting.summarize("amc23_test", "sample", records, ks=(1, 2, 4), top_n=4, paper_round=4)
    assert row["headline"] == "maj@4" and row["paper"] is None
    reporting.write_summary(str(tmp_path), [row])
    assert json.loads((tmp_path / "summary.json").read_text())[0]["metrics"]["pass@4"] == 100.0
    table = (tmp_path / "summary.md").read_text().splitlines()
    assert table[2] == "| amc23_test | sample | 1 | maj@4 | 0.0 | - | - |"  # 2:2 tie goes to the first answer
    assert reporting.plot_accuracy_vs_k(str(tmp_path / "acc.png"), row)
    assert (tmp_path / "acc.png").read_bytes().startswith(b"\x89PNG")
    single = reporting.summarize("amc23_test", "greedy", [_record([True], [0])], ks=(1,), top_n=4, paper_round=4)
    assert not reporting.plot_accuracy_vs_k(str(tmp_path / "none.png"), single)


def test_scored_methods_report_zero_when_nothing_was_answered():
    records = [_record([False, False], [None, None])]  # e.g. a random model: no valid answer
    for method, headline in (("best_of_n", "best@2"), ("mcts", "top4_maj@2"), ("beam", "top4_maj@2")):
        row = reporting.summarize("amc23_test", method, records, ks=(1, 2), top_n=4, paper_round=4)
        assert (row["headline"], row["accuracy"], row["paper"], row["paper_source"]) == (headline, 0.0, None, "")
