"""The round report: accuracy with 95% intervals, and the run's targets met or missed by how much.
"""

import dataclasses
import json


from rstar_jax.evolve import evaluate, runner
from rstar_jax.evolve import report as evolve_report
from rstar_jax.config import Targets


GOALS = Targets(coverage_rises=True, greedy_rise=15, hardest_rise=10, search_margin=3, search_from_round=1,
                best_of_n_over_majority=True, ppm_accuracy=0.7, ppm_pairs=200, minutes=20)


def test_report_files(tmp_path):
    manifest = runner.Manifest.load(str(tmp_path))
    manifest.run("round0/evaluate", lambda: {"accuracy": {"greedy": {"level1": 50.0, "level2": 10.0}},
                                             "problems": {"greedy": {"level1": 100, "level2": 100}},
                                             "ppm_heldout_accuracy": None})
    manifest.run("round1/extract", lambda: {"coverage": {"level1": 0.5, "level2": 0.25}, "coverage_all": 0.4,
                                            "sft_records": 12, "ppm_pairs": 30, "ppm_heldout_pairs": 2,
                                            "ppm_train_pairs": 50, "ppm_heldout_pool_pairs": 4,
                                            "search_steps": {"level2": {"3": [1, 5]}, "level1": {"2": [4, 4]}},
                                            "sft_operations": {"level1": {"start": [4, 4], "fewer": [3, 4]}},
                                            "sft_comments": {"level1": {"start": [4, 4], "fewer": [2, 4]}}})
    manifest.run("round1/evaluate", lambda: {
        "accuracy": {"greedy": {"level1": 70.0, "level2": 20.0}, "mcts": {"level1": 80.0, "level2": 30.0}},
        "problems": {"greedy": {"level1": 100, "level2": 100}, "mcts": {"level1": 100, "level2": 100}},
        "ppm_heldout_accuracy": 0.75, "ppm_heldout_pairs_scored": 4,
        "ppm_heldout_by_kind": {"step": [1.0, 2], "answer": [0.5, 2]},
        "greedy_steps": {"level1": {"2": [7, 9], "3": [0, 1]}},
        "greedy_operations": {"level2": {"start": [9, 10], "more": [2, 5]}, "level1": {}}})
    manifest.run("round1/ppm", lambda: {"model": None, "trained": False, "records": 0, "reason": "no pairs"})
    rows = evolve_report.round_rows(manifest, 4)
    assert [r["round"] for r in rows] == [0, 1]
    markdown = evolve_report.write_report(str(tmp_path), rows, GOALS)
    assert "- round 1 search trajectories: level1 2: 4/4; level2 3: 1/5\n" in markdown
    assert "- round 1 greedy on the test split: level1 2: 7/9, 3: 0/1\n" in markdown
    assert "code steps" not in evolve_report.report_markdown(rows[:1])  # nothing counted, no section
    assert "- round 1 SFT records of the search: level1 start: 4/4, fewer: 3/4\n" in markdown
    assert "- round 1 greedy on the test split: level2 start: 9/10, more: 2/5\n" in markdown
    assert "copied/all" in markdown and "- round 1 SFT records of the search: level1 start: 4/4, fewer: 2/4\n" in markdown
    assert "by the operation" not in evolve_report.report_markdown(rows[:1])
    assert "- round 1: no ppm trained, the previous one carried forward (no pairs)\n" in markdown
    assert "- round 1: step 100.0 (2), answer 50.0 (2)\n" in markdown
    assert "by kind of pair" not in evolve_report.report_markdown(rows[:1])
    # accuracy with its 95% Wilson interval: 70/100 -> 60-78; the mean pools both sets' 200 problems
    assert ("| 1 | 40.0 | 12 | 30 / 50 | 75.0 (4) | 70.0 (60-78) | 20.0 (13-29) | 45.0 (38-52) | 55.0 (48-62) "
            "| 45.0 (38-52) |") in markdown
    report = json.load(open(tmp_path / "report.json"))
    assert report["rounds"][1]["coverage"] == {"level1": 0.5, "level2": 0.25}
    assert report["targets"][0] == {"name": "training coverage rises every round", "met": None,
                                    "detail": "coverage %: round 1 40.0"}
    assert "- greedy pass@1 mean rises >= 15 points from round 0: met (round 0 30.0 -> round 1 45.0: +15.0)" \
        in markdown
    assert "Targets:" not in evolve_report.report_markdown(rows)  # the library sets no targets
    assert (tmp_path / "report.md").read_text().startswith("# Self-evolution report")
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    assert f"\nRan on {runner.machine()}.\n" in markdown and report["rounds"][1]["machines"] == {
        "extract": runner.machine(), "evaluate": runner.machine(), "ppm": runner.machine()}


def test_a_run_over_several_machines_says_which_rounds_ran_where():
    rows = [dict(report_row(0, None, (50, 20, 0, 0)), machines={"policy": "A, 2 cores", "evaluate": "A, 2 cores"}),
            dict(report_row(1, 0.5, (60, 30, 10, 5)),
                 machines={"search": "A, 2 cores", "policy": "B, 16 cores", "evaluate": "B, 16 cores"})]
    markdown = evolve_report.report_markdown(rows)
    assert ("\nRan on several machines (round, stages: machine):\n\n- round 0 policy, evaluate: A, 2 cores\n"
            "- round 1 search: A, 2 cores\n- round 1 policy, evaluate: B, 16 cores\n") in markdown
    assert "Ran on" not in evolve_report.report_markdown([report_row(0, None, (50, 20, 0, 0))])  # older manifests


def test_wilson_intervals():
    low, high = evolve_report.interval(50.0, 100)
    assert (round(low, 1), round(high, 1)) == (40.4, 59.6)
    assert evolve_report.interval(None, 100) is None and evolve_report.interval(50.0, 0) is None


def report_row(r, coverage, greedy, mcts=None, ppm=None, pairs=None, seconds=None):
    """A `round_rows` row; greedy / MCTS accuracy (%) on level1..level4."""
    accuracy = {"greedy": dict(zip(("level1", "level2", "level3", "level4"), greedy))}
    if mcts:
        accuracy["mcts"] = dict(zip(("level1", "level2", "level3", "level4"), mcts))
    return {"round": r, "coverage": None, "coverage_all": coverage, "sft_records": None, "ppm_pairs": None,
            "accuracy": accuracy, "ppm_heldout_accuracy": ppm, "ppm_heldout_pairs_scored": pairs,
            "seconds": seconds or {}}


def test_targets_say_which_are_met_and_by_how_much():
    missed = [report_row(0, None, (60, 30, 10, 0), seconds={"policy": 300}),  # greedy mean 25
              report_row(1, 0.40, (70, 40, 15, 0), (80, 50, 20, 5), 0.62, 100),  # means 31.25 / 38.75
              report_row(2, 0.50, (75, 45, 20, 5), (74, 44, 19, 4), 0.70, 150),  # 36.25 / 35.25
              report_row(3, 0.45, (80, 50, 22, 0), (85, 55, 30, 10), 0.66, 250, {"search": 1000})]  # 38 / 45
    goals = dataclasses.replace(GOALS, best_of_n_over_majority=False)
    assert [(t.name, t.met, t.detail) for t in evolve_report.targets(missed, goals)] == [
        ("training coverage rises every round", False,
         "coverage %: round 1 40.0, round 2 50.0, round 3 45.0; no rise in round 3"),
        ("greedy pass@1 mean rises >= 15 points from round 0", False,
         "round 0 25.0 -> round 3 38.0: +13.0, 2.0 short"),
        ("greedy pass@1 rises >= 10 points on each of the 2 test sets hardest for round 0", False,
         "level4 0.0 -> 0.0 (+0.0); level3 10.0 -> 22.0 (+12.0)"),
        ("MCTS + PPM beats greedy by >= 3 points on the same problems in round 1 and later", False,
         "MCTS - greedy points: round 1 +7.5, round 2 -1.0, round 3 +7.0; short in round 2"),
        ("the last round's PPM scores >= 0.70 on >= 200 held-out pairs", False, "round 3: 0.66 on 250 pairs"),
        ("all stages take <= 20 minutes", False, "21.7 minutes over rounds 0-3"),
    ]
    met = [report_row(0, None, (50, 20, 0, 0)),  # 17.5
           report_row(1, 0.5, (60, 30, 10, 5), (70, 40, 20, 11), 0.6),  # 26.25 / 35.25
           report_row(2, 0.7, (80, 50, 20, 10), (85, 60, 30, 15), 0.7, 200)]  # 40 / 47.5
    assert [(t.met, t.detail) for t in evolve_report.targets(met, goals)] == [
        (True, "coverage %: round 1 50.0, round 2 70.0"),
        (True, "round 0 17.5 -> round 2 40.0: +22.5"),
        (True, "level3 0.0 -> 20.0 (+20.0); level4 0.0 -> 10.0 (+10.0)"),
        (True, "MCTS - greedy points: round 1 +9.0, round 2 +7.5"),
        (True, "round 2: 0.70 on 200 pairs"),
        (True, "0.0 minutes over rounds 0-2"),
    ]
    bootstrap_only = evolve_report.targets(met[:1], goals)
    assert [t.met for t in bootstrap_only] == [None, None, None, None, None, True]
    assert evolve_report.targets(met, Targets()) == []  # nothing asked, nothing checked
    markdown = evolve_report.report_markdown(missed, goals)
    assert ("Targets:\n\n- training coverage rises every round: not met (coverage %: round 1 40.0, "
            "round 2 50.0, round 3 45.0; no rise in round 3)\n") in markdown


def test_a_run_with_a_resumed_stage_does_not_claim_its_time():
    """A killed try leaves no end time, so a resumed stage's seconds undercount the run."""
    goals = Targets(minutes=20)
    rows = [report_row(0, None, (50, 20, 0, 0), seconds={"policy": 300}),
            dict(report_row(1, 0.5, (60, 30, 10, 5), seconds={"search": 600}), resumed=["search"])]
    (within,) = evolve_report.targets(rows, goals)
    assert (within.met, within.detail) == (
        None, "15.0 minutes over rounds 0-1 counted; round 1 search resumed after a kill, earlier tries not timed")
    rows[1]["seconds"] = {"search": 1200}
    (over,) = evolve_report.targets(rows, goals)
    assert over.met is False and over.detail.startswith("25.0 minutes over rounds 0-1 counted; round 1 search")


def test_best_of_n_is_compared_with_the_majority_vote_of_its_samples():
    rows = [report_row(0, None, (50, 20, 0, 0)), report_row(1, 0.5, (60, 30, 10, 5)), report_row(2, 0.6, (60, 30, 10, 5))]
    for row, best, vote in ((rows[1], 30.0, 40.0), (rows[2], 50.0, 40.0)):
        row["accuracy"]["best_of_n"], row["accuracy"][evaluate.MAJORITY] = {"level1": best}, {"level1": vote}
    goals = Targets(best_of_n_over_majority=True, search_from_round=2)
    assert [(t.met, t.detail) for t in evolve_report.targets(rows, goals)] == [
        (True, "best-of-n - majority points: round 2 +10.0")]


def test_mcts_is_compared_with_greedy_on_the_problems_it_ran_on():
    rows = [report_row(0, None, (50, 20, 0, 0)), report_row(1, 0.5, (60, 30, 10, 5), (70, 40, 20, 10), 0.6)]
    rows[1]["accuracy"][evaluate.SUBSET_GREEDY] = dict(zip(("level1", "level2", "level3", "level4"), (80, 50, 30, 10)))
    assert evolve_report.targets(rows, Targets(search_margin=0))[0].detail == \
        "MCTS - greedy points: round 1 -7.5; short in round 1"
    assert "| 35.0 | 42.5 |" in evolve_report.report_markdown(rows)
