"""Self-evolution bookkeeping: manifest resume, search passes and shards, extraction, report.

The search here is a deterministic stand-in that builds small trees from the problem index (a
real MCTS needs a trained policy; the end-to-end run is tested with experiments/smoke.gin).
"""

import json
import os

import numpy as np
import pytest

from rstar_jax import evolve
from rstar_jax.config import EvalConfig, EvolveConfig, RoundConfig, SearchConfig
from rstar_jax.data import records
from rstar_jax.data.problems import Problem
from rstar_jax.data.records import StepNode, StepTree
from rstar_jax.search import io
from rstar_jax.search.io import NodeRecord, SearchResult
from rstar_jax.search.tree import NO_NODE, NodeKind, Tree


def problems(n: int, source: str = "level1") -> list[Problem]:
    return [Problem(i, f"Question {i} of {source}?", str(i), source) for i in range(n)]


def stand_in_tree(problem: Problem, rollouts: int) -> StepTree:
    """Solved when `rollouts` reaches the problem's difficulty (index % 3: 4, 8 or 16 rollouts)."""
    solved = rollouts >= 4 * 2 ** (problem.index % 3)
    step = f"<code>\n# think about question {problem.index} carefully\nx = {problem.index}\n<end_of_step>"
    wrong = f"\n<answer>The answer must be \\boxed{{{problem.index + 1000}}}.<end_of_answer>"
    right = f"\n<answer>From the result, the answer is \\boxed{{{problem.index}}}.<end_of_answer>"
    nodes = [StepNode(-1, "", 0.0, 3), StepNode(0, step, 0.0 if solved else -1.0, 2),
             StepNode(1, wrong, -1.0, 1, "answer", False),
             StepNode(0, "<code>\nprint(1/0)\n<end_of_code>\n<output>ZeroDivisionError<end_of_output>",
                      -1.0, 1, "code_error")]
    if solved:
        nodes.append(StepNode(1, right, 1.0, 1, "answer", True))
    return StepTree(problem.question, tuple(nodes))


_KINDS = {None: NodeKind.STEP, "answer": NodeKind.ANSWER, "code_error": NodeKind.CODE_ERRORS}


def search_result(batch: list[Problem], trees: list[StepTree], max_nodes: int = 8, k: int = 4) -> SearchResult:
    """The driver's result holding `trees` (the inverse of `SearchResult.step_tree`)."""
    a = SearchResult.from_tree(batch, Tree.init(len(trees), max_nodes, k), []).arrays
    nodes = []
    for b, tree in enumerate(trees):
        a["node_count"][b] = len(tree.nodes)
        for i, n in enumerate(tree.nodes):
            kind = _KINDS[n.terminal]
            a["parent"][b, i], a["kind"][b, i], a["terminal"][b, i] = n.parent, kind, kind != NodeKind.STEP
            a["visit_count"][b, i], a["value_sum"][b, i] = n.visits, n.q * n.visits
            if i:
                a["depth"][b, i] = a["depth"][b, n.parent] + 1
                slot = list(a["children"][b, n.parent]).index(NO_NODE)
                a["children"][b, n.parent, slot] = i
        nodes.append([NodeRecord(n.text, answer="x" if n.terminal == "answer" else None,
                                 correct=n.correct if n.terminal == "answer" else None) for n in tree.nodes])
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


def test_stand_in_result_holds_the_stand_in_trees():
    batch = problems(3)
    result = search_result(batch, [stand_in_tree(p, 8) for p in batch])
    assert [result.step_tree(b) for b in range(3)] == [stand_in_tree(p, 8) for p in batch]


ROUND = RoundConfig(SearchConfig(num_rollouts=4), unsolved_rollouts=(8, 16))


def test_manifest_skips_finished_stages(tmp_path):
    calls = []
    manifest = evolve.Manifest.load(str(tmp_path))
    assert manifest.run("round0/a", lambda: calls.append(1) or {"x": 1}) == {"x": 1}
    again = evolve.Manifest.load(str(tmp_path))
    assert again.run("round0/a", lambda: calls.append(2)) == {"x": 1}
    assert calls == [1]
    assert list(json.load(open(tmp_path / "manifest.json"))["stages"]) == ["round0/a"]
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(ValueError, match="manifest.json: not a manifest"):
        evolve.Manifest.load(str(tmp_path))


def test_unsolved_problems_get_further_passes(tmp_path):
    search = StandInSearch()
    result = evolve.search_round(str(tmp_path), {"level1": problems(9)}, ROUND,
                                 lambda b, n, s: search(b, n, s), seed=0, chunk=4)
    passes = [sorted(i for call in calls for i in call) for calls in
              ([search.calls[0], search.calls[1], search.calls[2]], [search.calls[3], search.calls[4]],
               [search.calls[5]])]
    assert passes == [list(range(9)), [1, 2, 4, 5, 7, 8], [2, 5, 8]]
    assert result == {"trees": 9 + 6 + 3, "unsolved": 0, "ppm": True}


def test_killed_search_resumes_without_losing_or_duplicating(tmp_path):
    sets = {"level1": problems(10), "level2": problems(5, "level2")}
    clean = StandInSearch()
    evolve.search_round(str(tmp_path / "clean"), sets, ROUND, clean, seed=0, chunk=4)
    killed = StandInSearch(fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        evolve.search_round(str(tmp_path / "killed"), sets, ROUND, killed, seed=0, chunk=4)
    leftover = tmp_path / "killed" / "search" / "pass0" / "p000-of-001.c00002.tmp"  # killed while saving
    leftover.mkdir()
    (leftover / "problems.jsonl").write_text("{half a line")
    resumed = StandInSearch()
    evolve.search_round(str(tmp_path / "killed"), sets, ROUND, resumed, seed=0, chunk=4)
    assert resumed.calls[0] == clean.calls[2]  # the two finished chunks are not searched again
    for k in range(3):
        a = evolve.read_pass(str(tmp_path / "clean" / "search" / f"pass{k}"))
        b = evolve.read_pass(str(tmp_path / "killed" / "search" / f"pass{k}"))
        assert a == b
    assert not [f for f in os.listdir(tmp_path / "killed" / "search" / "pass0") if ".tmp" in f]


class StandInStages:
    """evolve()'s model stages replaced by stand-ins that record which base each policy fine-tunes."""

    def __init__(self, monkeypatch, workdir):
        self.workdir, self.bases = workdir, []
        search = StandInSearch()
        monkeypatch.setattr(evolve, "train_tokenizer", lambda out, texts, vocab: out)
        monkeypatch.setattr(evolve, "init_policy", lambda out, tokenizer, config: "init")
        monkeypatch.setattr(evolve, "train_policy", self.train_policy)
        monkeypatch.setattr(evolve, "train_reward_model", lambda run_dir, *args: run_dir)
        monkeypatch.setattr(evolve, "search_stage", lambda round_dir, sets, rc, config, policy, ppm, seed:
                            evolve.search_round(round_dir, sets, rc, search, seed, config.search_chunk))
        monkeypatch.setattr(evolve, "evaluate_round", lambda *args: {
            "accuracy": {"greedy": {"level1": 50.0}}, "ppm_heldout_accuracy": None})

    def train_policy(self, run_dir, base, sft_file, config, train):
        self.bases.append(base if base == "init" else os.path.relpath(base, self.workdir))
        return run_dir


@pytest.mark.parametrize("round_base, bases", [
    ("base", ["init", "round0/policy", "round0/policy", "round0/policy"]),
    ("init", ["init", "init", "init", "init"]),
    ("previous", ["init", "round0/policy", "round1/policy", "round2/policy"]),
])
def test_round_base_picks_what_each_round_fine_tunes(tmp_path, monkeypatch, round_base, bases):
    from rstar_jax.config import CurriculumConfig

    stages = StandInStages(monkeypatch, str(tmp_path))
    config = EvolveConfig(rounds=(ROUND,) * 3, round_base=round_base)
    curriculum = CurriculumConfig(levels=(1,), seed_levels=(1,), seed_per_level=2, train_per_level=3,
                                  test_per_level=1)
    evolve.evolve(str(tmp_path), config=config, curriculum=curriculum)
    assert stages.bases == bases


def test_unknown_round_base_is_refused(tmp_path):
    with pytest.raises(ValueError, match="round_base 'latest' is not one of"):
        evolve.evolve(str(tmp_path), config=EvolveConfig(round_base="latest"))


def _evolve_search(workdir) -> str:
    """Round 1's search of a small run with the stand-in; returns its first pass directory."""
    sets = {"level1": problems(5), "level2": problems(3, "level2")}
    evolve.search_round(os.path.join(workdir, "round1"), sets, ROUND, StandInSearch(), seed=0, chunk=2)
    return os.path.join(workdir, "round1", "search", "pass0")


def test_an_evolve_pass_opens_like_a_saved_search(tmp_path):
    """What the inspect_tree notebook does, on `<workdir>/round1/search/pass0`."""
    from rstar_jax.search import inspect as si

    result = io.load(_evolve_search(str(tmp_path)))
    assert len(os.listdir(tmp_path / "round1" / "search" / "pass0")) == 4  # chunks of two problems
    assert [(p.source, p.index) for p in result.problems] == [("level1", i) for i in range(5)] + [
        ("level2", i) for i in range(3)]
    assert [result.pass_at_n(b) for b in range(len(result))] == [p.index % 3 == 0 for p in result.problems]
    table = si.to_dataframe(result, 0)
    assert list(table.kind) == ["STEP", "STEP", "ANSWER", "CODE_ERRORS", "ANSWER"]
    assert si.draw_tree(result, 0)._repr_html_().count("<polygon") == 2
    assert "=> ANSWER: 'x' (correct)" in si.best_trajectory(result, 0)
    assert "treescope-container" in si.render_arrays(result, 0)


@pytest.mark.slow
def test_notebook_runs_on_an_evolve_pass(tmp_path, run_inspect_notebook):
    html = run_inspect_notebook(_evolve_search(str(tmp_path)))
    assert "<svg" in html and "level2" in html


def test_process_shards_cover_every_problem_once(tmp_path):
    todo = [("level1", p) for p in problems(11)]
    search = StandInSearch()
    for index in range(3):
        evolve.search_pass(str(tmp_path / "three"), todo, lambda b, s: search(b, 4, s),
                           seed=0, chunk=2, process=(index, 3))
    evolve.search_pass(str(tmp_path / "one"), todo, lambda b, s: search(b, 4, s), seed=0, chunk=2, process=(0, 1))
    key = lambda t: (t.set, t.index)  # noqa: E731
    three = sorted(evolve.read_pass(str(tmp_path / "three")), key=key)
    assert three == sorted(evolve.read_pass(str(tmp_path / "one")), key=key)
    assert [t.index for t in three] == list(range(11))
    # a run resumed with another process count reads each problem once
    evolve.search_pass(str(tmp_path / "three"), todo, lambda b, s: search(b, 4, s), seed=0, chunk=2, process=(0, 1))
    assert sorted(evolve.read_pass(str(tmp_path / "three")), key=key) == three
    assert len(io.load(str(tmp_path / "three"))) == 11  # the notebook's view: each problem once too


def test_extract_writes_records_and_coverage(tmp_path):
    sets = {"level1": problems(6), "level2": problems(3, "level2")}
    evolve.search_round(str(tmp_path), sets, RoundConfig(SearchConfig(num_rollouts=4), ()),
                        StandInSearch(), seed=0, chunk=4)
    seed_file = tmp_path / "seed.json"
    records.write_records(str(seed_file), [records.SFTRecord("seed question", "seed answer")])
    config = EvolveConfig(ppm_heldout_fraction=0.25)
    result = evolve.extract_round(str(tmp_path), sets, config, str(seed_file))
    # with 4 rollouts only problems 0 and 3 (index % 3 == 0) are solved
    assert result["coverage"] == {"level1": 2 / 6, "level2": 1 / 3}
    assert result["coverage_all"] == pytest.approx(3 / 9)
    # {code steps: [correct, all]}: a code error (0 steps), a wrong answer and, if solved, a right one
    assert result["search_steps"] == {"level1": {"0": [0, 6], "1": [2, 8]}, "level2": {"0": [0, 3], "1": [1, 4]}}
    sft = records.read_sft(str(tmp_path / "sft.json"))
    assert [r.query for r in sft] == ["seed question", "Question 0 of level1?", "Question 3 of level1?",
                                      "Question 0 of level2?"]
    train = records.read_pairs(str(tmp_path / "ppm.json"))
    held = records.read_pairs(str(tmp_path / "ppm_heldout.json"))
    # per solved tree: one step pair (right vs wrong answer) and two final-answer pairs; a problem's
    # pairs are held out together (by a hash of its question)
    assert len(train) + len(held) == 3 * 3 and len(held) % 3 == 0
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    assert len(held) == 3 * sum(evolve.is_heldout_problem(q, 0.25) for q in
                                ("Question 0 of level1?", "Question 3 of level1?", "Question 0 of level2?"))
    assert result["ppm_pairs"] == len(train) and result["sft_records"] == len(sft)
    assert records.read_pairs(str(tmp_path / evolve.PPM_TRAIN)) == train  # round 1: the pool is its own pairs


def test_heldout_problems_are_a_stable_share():
    questions = [f"Question {i}?" for i in range(2000)]
    held = [q for q in questions if evolve.is_heldout_problem(q, 0.25)]
    assert 0.2 < len(held) / len(questions) < 0.3
    assert held == [q for q in questions if evolve.is_heldout_problem(q, 0.25)]
    assert not any(evolve.is_heldout_problem(q, 0.0) for q in questions)


def test_each_round_searches_its_own_shard_of_the_training_problems():
    sets = {"level1": problems(8), "level2": problems(4, "level2")}
    shards = [evolve.round_train_sets(sets, r, 4) for r in (1, 2, 3, 4, 5)]
    assert [p.index for p in shards[1]["level1"]] == [1, 5] and [p.index for p in shards[1]["level2"]] == [1]
    assert sorted(p.index for s in shards[:4] for p in s["level1"]) == list(range(8))
    assert shards[4] == shards[0]  # round 5 of 4 shards starts over
    assert evolve.round_train_sets(sets, 3, 1) == sets


def test_the_ppm_pools_join_the_pairs_of_earlier_rounds(tmp_path):
    sets = {"level1": problems(6)}
    rounds = [tmp_path / "round1", tmp_path / "round2"]
    results = []
    for k, round_dir in enumerate(rounds):
        evolve.search_round(str(round_dir), sets, RoundConfig(SearchConfig(num_rollouts=4), ()),
                            StandInSearch(), seed=k, chunk=4)
        results.append(evolve.extract_round(str(round_dir), sets, EvolveConfig(ppm_heldout_fraction=0.25),
                                            None, [str(d) for d in rounds[:k]]))
    for pool, own in ((evolve.PPM_TRAIN, "ppm.json"), (evolve.PPM_HELDOUT, "ppm_heldout.json")):
        assert (records.read_pairs(str(rounds[1] / pool))
                == records.read_pairs(str(rounds[0] / own)) + records.read_pairs(str(rounds[1] / own)))
    assert results[1]["ppm_train_pairs"] == results[0]["ppm_pairs"] + results[1]["ppm_pairs"]
    assert results[1]["ppm_heldout_pool_pairs"] == results[0]["ppm_heldout_pairs"] + results[1]["ppm_heldout_pairs"]


def test_report_files(tmp_path):
    manifest = evolve.Manifest.load(str(tmp_path))
    manifest.run("round0/evaluate", lambda: {"accuracy": {"greedy": {"level1": 50.0, "level2": 10.0}},
                                             "ppm_heldout_accuracy": None})
    manifest.run("round1/extract", lambda: {"coverage": {"level1": 0.5, "level2": 0.25}, "coverage_all": 0.4,
                                            "sft_records": 12, "ppm_pairs": 30, "ppm_heldout_pairs": 2,
                                            "ppm_train_pairs": 50, "ppm_heldout_pool_pairs": 4,
                                            "search_steps": {"level2": {"3": [1, 5]}, "level1": {"2": [4, 4]}}})
    manifest.run("round1/evaluate", lambda: {
        "accuracy": {"greedy": {"level1": 70.0, "level2": 20.0}, "mcts": {"level1": 80.0, "level2": 30.0}},
        "ppm_heldout_accuracy": 0.75, "greedy_steps": {"level1": {"2": [7, 9], "3": [0, 1]}}})
    rows = evolve.round_rows(manifest, 4)
    assert [r["round"] for r in rows] == [0, 1]
    markdown = evolve.write_report(str(tmp_path), rows, seed_levels=(1,))
    assert "- round 1 search trajectories: level1 2: 4/4; level2 3: 1/5\n" in markdown
    assert "- round 1 greedy on the test split: level1 2: 7/9, 3: 0/1\n" in markdown
    assert "a level-n problem's solution has n + 1 steps" in markdown
    assert "code steps" not in evolve.report_markdown(rows[:1])  # nothing counted, no section
    assert "| 1 | 40.0 | 12 | 30 / 50 | 75.0 (4) | 70.0 | 20.0 | 45.0 | 80.0 | 30.0 | 55.0 | 45.0 |" in markdown
    report = json.load(open(tmp_path / "report.json"))
    assert report["rounds"][1]["coverage"] == {"level1": 0.5, "level2": 0.25}
    assert report["targets"][0] == {"name": "(a) training coverage rises every round", "met": None,
                                    "detail": "coverage %: round 1 40.0"}
    assert "- (b) greedy pass@1 mean rises >= 15 points from round 0: met (round 0 30.0 -> round 1 45.0: +15.0)" \
        in markdown
    assert (tmp_path / "report.md").read_text().startswith("# Self-evolution report")
    assert (tmp_path / "accuracy.png").stat().st_size > 0


def report_row(r, coverage, greedy, mcts=None, ppm=None):
    """A `round_rows` row; greedy / MCTS accuracy (%) on level1..level4."""
    accuracy = {"greedy": dict(zip(("level1", "level2", "level3", "level4"), greedy))}
    if mcts:
        accuracy["mcts"] = dict(zip(("level1", "level2", "level3", "level4"), mcts))
    return {"round": r, "coverage": None, "coverage_all": coverage, "sft_records": None, "ppm_pairs": None,
            "accuracy": accuracy, "ppm_heldout_accuracy": ppm, "seconds": {}}


def test_targets_say_which_are_met_and_by_how_much():
    missed = [report_row(0, None, (60, 30, 10, 0)),  # greedy mean 25
              report_row(1, 0.40, (70, 40, 15, 0), (80, 50, 20, 5), 0.62),  # means 31.25 / 38.75
              report_row(2, 0.50, (75, 45, 20, 5), (74, 44, 19, 4), 0.70),  # 36.25 / 35.25
              report_row(3, 0.45, (80, 50, 22, 0), (85, 55, 30, 10), 0.66)]  # 38 / 45
    assert [(t.name, t.met, t.detail) for t in evolve.targets(missed, seed_levels=(1, 2, 3))] == [
        ("(a) training coverage rises every round", False,
         "coverage %: round 1 40.0, round 2 50.0, round 3 45.0; no rise in round 3"),
        ("(b) greedy pass@1 mean rises >= 15 points from round 0", False,
         "round 0 25.0 -> round 3 38.0: +13.0, 2.0 short"),
        ("(c) greedy rises on the hardest seeded level and the one above (level3, level4)", False,
         "level3 10.0 -> 22.0 (+12.0); level4 0.0 -> 0.0 (+0.0)"),
        ("(d) MCTS + PPM mean beats greedy mean (on the same problems) in every round with a PPM", False,
         "MCTS - greedy points: round 1 +7.5, round 2 -1.0, round 3 +7.0; not ahead in round 2"),
        ("(e) PPM held-out pairwise accuracy > 50% and does not fall", False,
         "accuracy %: round 1 62.0, round 2 70.0, round 3 66.0; falls in round 3"),
    ]
    met = [report_row(0, None, (50, 20, 0, 0)),  # 17.5
           report_row(1, 0.5, (60, 30, 10, 5), (70, 40, 20, 11), 0.6),  # 26.25 / 35.25
           report_row(2, 0.7, (80, 50, 20, 10), (85, 60, 30, 15), 0.6)]  # 40 / 47.5; PPM accuracy level
    assert [(t.met, t.detail) for t in evolve.targets(met, seed_levels=(1, 2, 3))] == [
        (True, "coverage %: round 1 50.0, round 2 70.0"),
        (True, "round 0 17.5 -> round 2 40.0: +22.5"),
        (True, "level3 0.0 -> 20.0 (+20.0); level4 0.0 -> 10.0 (+10.0)"),
        (True, "MCTS - greedy points: round 1 +9.0, round 2 +7.5"),
        (True, "accuracy %: round 1 60.0, round 2 60.0"),
    ]
    low = [report_row(0, None, (50, 20, 0, 0)), report_row(1, 0.5, (60, 30, 10, 5), (60, 30, 10, 5), 0.5)]
    assert [(t.met, t.detail) for t in evolve.targets(low)][2:] == [  # no seed levels (base model): no (c)
        (False, "MCTS - greedy points: round 1 +0.0; not ahead in round 1"),
        (False, "accuracy %: round 1 50.0; <= 50 in round 1"),
    ]
    bootstrap_only = evolve.targets(met[:1], seed_levels=(1, 2, 3))
    assert [t.met for t in bootstrap_only] == [None] * 5
    assert bootstrap_only[2].detail == "level3 not evaluated; level4 not evaluated"
    markdown = evolve.report_markdown(missed, seed_levels=(1, 2, 3))
    assert ("Targets:\n\n- (a) training coverage rises every round: not met (coverage %: round 1 40.0, "
            "round 2 50.0, round 3 45.0; no rise in round 3)\n") in markdown
    assert "- (e) PPM held-out pairwise accuracy > 50% and does not fall: n/a (accuracy %: none)" in \
        evolve.report_markdown(met[:1])


def test_greedy_on_the_search_problems_is_cut_from_the_greedy_run():
    record = lambda correct: {"candidates": [{"correct": correct, "cluster": 0, "score": None}]}  # noqa: E731
    greedy = {"level1": [record(True), record(False), record(True)], "level2": [record(False)] * 3}
    rows = evolve.greedy_on_head(greedy, 2, EvalConfig(methods=("greedy", "mcts"), ks=(1,)))
    assert [(r["set"], r["method"], r["problems"], r["accuracy"]) for r in rows] == [
        ("level1", evolve.SUBSET_GREEDY, 2, 50.0), ("level2", evolve.SUBSET_GREEDY, 2, 0.0)]


def test_mcts_is_compared_with_greedy_on_the_problems_it_ran_on():
    rows = [report_row(0, None, (50, 20, 0, 0)), report_row(1, 0.5, (60, 30, 10, 5), (70, 40, 20, 10), 0.6)]
    rows[1]["accuracy"][evolve.SUBSET_GREEDY] = dict(zip(("level1", "level2", "level3", "level4"), (80, 50, 30, 10)))
    assert evolve.targets(rows)[2].detail == "MCTS - greedy points: round 1 -7.5; not ahead in round 1"
    assert "| 35.0 | 42.5 |" in evolve.report_markdown(rows)


WORKER = """
import importlib.util, json, sys
import jax
from rstar_jax.parallel.mesh import initialize_distributed
initialize_distributed()
from rstar_jax import evolve
from rstar_jax.config import EvolveConfig
spec = importlib.util.spec_from_file_location("test_evolve", sys.argv[1])
te = importlib.util.module_from_spec(spec)
spec.loader.exec_module(te)
workdir = sys.argv[2]
sets = {"level1": te.problems(9), "level2": te.problems(4, "level2")}
search = te.StandInSearch()
manifest = evolve.Manifest.load(workdir)
manifest.run("round1/search", lambda: evolve.search_round(workdir + "/round1", sets, te.ROUND, search, 0, 2))
main = jax.process_index() == 0
result = manifest.run("round1/extract", lambda: evolve.extract_round(
    workdir + "/round1", sets, EvolveConfig(), None) if main else None)
with open(f"{workdir}/process{jax.process_index()}.json", "w") as f:
    json.dump({"count": jax.process_count(), "calls": search.calls, "extract": result}, f)
"""


def test_two_processes_search_their_shards_and_process0_extracts(tmp_path):
    """Two local CPU processes joined by jax.distributed (gloo collectives for the barriers)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    procs = [subprocess.Popen(
        [sys.executable, str(script), os.path.abspath(__file__), str(tmp_path)], cwd=root,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": root, "JAX_NUM_PROCESSES": "2",
             "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_PROCESS_ID": str(i)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    for p in procs:
        out, _ = p.communicate()
        assert p.returncode == 0, out
    outs = [json.load(open(tmp_path / f"process{i}.json")) for i in range(2)]
    assert [o["count"] for o in outs] == [2, 2]
    searched = sorted(i for o in outs for call in o["calls"] for i in call)
    # pass 0: 9 + 4 problems; pass 1: the 6 + 2 with index % 3 > 0; pass 2: the 3 + 1 with index % 3 == 2
    assert len(searched) == 13 + 8 + 4
    assert all(o["calls"] for o in outs)  # both processes searched a share
    assert outs[0]["extract"]["coverage"] == {"level1": 1.0, "level2": 1.0}
    assert outs[1]["extract"] is None
    assert list(json.load(open(tmp_path / "manifest.json"))["stages"]) == ["round1/search", "round1/extract"]


def _evolve_cmd(workdir) -> list[str]:
    import sys

    return [sys.executable, "-m", "rstar_jax.cli", "evolve", "--gin_file", "smoke", "--workdir", str(workdir)]


def _outputs(workdir) -> dict[str, object]:
    """Stage names, search trees and records of a finished run (what must not depend on kills)."""
    out: dict[str, object] = {"stages": list(json.load(open(workdir / "manifest.json"))["stages"])}
    for path in sorted(workdir.glob("round[1-9]/search/pass*/*/*.jsonl")):
        out[str(path.relative_to(workdir))] = path.read_text()
    for path in sorted(workdir.glob("round[1-9]/search/pass*/*/trees.npz")):  # zip entries carry a time
        with np.load(path) as arrays:
            out[str(path.relative_to(workdir))] = {k: (arrays[k].shape, arrays[k].tobytes()) for k in arrays.files}
    for path in sorted(workdir.glob("round[1-9]/*.json")):
        out[str(path.relative_to(workdir))] = json.load(open(path))
    return out


@pytest.mark.slow
def test_smoke_run_killed_at_several_points_resumes_to_the_same_records(tmp_path):
    """experiments/smoke.gin end to end; a copy is killed (SIGKILL) mid-search, mid-training and
    between stages, then resumed; it must end with exactly the uninterrupted run's records."""
    import subprocess
    import time

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": root}
    clean = subprocess.run(_evolve_cmd(tmp_path / "clean"), cwd=root, env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert "| round |" in clean.stdout
    killed = tmp_path / "killed"
    kill_points = (
        lambda: any(killed.glob("round1/search/pass0/*/trees.npz")),  # mid-search: a chunk (being) written
        lambda: any(killed.glob("round1/policy/checkpoints/*")),  # mid-training
        lambda: "round2/search" in (killed / "manifest.json").read_text(),  # between stages
    )
    for reached in kill_points:
        proc = subprocess.Popen(_evolve_cmd(killed), cwd=root, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while proc.poll() is None:
            try:
                if reached():
                    proc.kill()
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.1)
        proc.wait()
    resumed = subprocess.run(_evolve_cmd(killed), cwd=root, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _outputs(killed) == _outputs(tmp_path / "clean")
    report = json.load(open(killed / "report.json"))
    assert [row["round"] for row in report["rounds"]] == [0, 1, 2]
    assert (killed / "report.md").exists() and (killed / "accuracy.png").exists()


def test_tiny_cpu_gin_restates_the_defaults():
    """`rstar-jax evolve` with no arguments and with experiments/tiny_cpu.gin run the same thing."""
    import gin

    from rstar_jax import cli
    from rstar_jax.config import CurriculumConfig

    gin.clear_config()
    try:
        cli.configure("rstar_jax.evolve", "evolve", ["tiny_cpu"], [], [])
        args = gin.get_bindings(evolve.evolve)
    finally:
        gin.clear_config()
    assert args["curriculum"] == CurriculumConfig()
    assert args["config"] == EvolveConfig()


@pytest.mark.slow
def test_ppm_stage_trains_on_pairs_and_scores_held_out_pairs(tmp_path):
    """The PPM path with real (tiny, untrained) models: train from the policy, score pairs."""
    from rstar_jax.config import ModelConfig, TrainConfig

    sets = {"level1": problems(6)}
    evolve.search_round(str(tmp_path), sets, RoundConfig(SearchConfig(num_rollouts=4), ()),
                        StandInSearch(), seed=0, chunk=4)
    evolve.extract_round(str(tmp_path), sets, EvolveConfig(ppm_heldout_fraction=0.5), None)
    pairs = records.read_pairs(str(tmp_path / "ppm.json"))
    tokenizer = evolve.train_tokenizer(str(tmp_path / "tokenizer"),
                                       [p.prompt + p.pos + p.neg for p in pairs] * 4, 400)
    train = TrainConfig(learning_rate=1e-3, batch_size=2, max_steps=2, max_length=256,
                        compute_dtype="float32", checkpoint_every=2)
    config = EvolveConfig(model=ModelConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1,
                                            tie_word_embeddings=True),
                          ppm_train=train, exec_workers=1)
    policy = evolve.init_policy(str(tmp_path / "init"), tokenizer, config)
    ppm = evolve.train_reward_model(str(tmp_path / "ppm"), policy, str(tmp_path / "ppm.json"), config, None)
    assert os.path.exists(os.path.join(ppm, "value_head.safetensors"))
    with evolve.ModelStack(config, policy, ppm) as stack:
        accuracy = evolve.pairwise_accuracy(stack.ppm, records.read_pairs(str(tmp_path / "ppm_heldout.json")))
    assert 0.0 <= accuracy <= 1.0
    records.write_records(str(tmp_path / "none.json"), [])
    assert evolve.train_reward_model(str(tmp_path / "ppm2"), policy, str(tmp_path / "none.json"),
                                     config, "previous/ppm") == "previous/ppm"
