"""Extraction: SFT records, PPM pairs held out by problem, coverage, and pools across rounds.
"""

import dataclasses

import pytest

from rstar_jax.evolve import extract
from rstar_jax.evolve import search as evolve_search
from rstar_jax.config import EvolveConfig, RoundConfig, SearchConfig
from rstar_jax.data import records
from stand_ins import StandInSearch, problems


def test_extract_writes_records_and_coverage(tmp_path):
    sets = {"level1": problems(6), "level2": problems(3, "level2")}
    evolve_search.search_round(str(tmp_path), sets, RoundConfig(SearchConfig(num_rollouts=4), ()),
                        StandInSearch(), seed=0, chunk=4)
    seed_file = tmp_path / "seed.json"
    records.write_records(str(seed_file), [records.SFTRecord("seed question", "seed answer")])
    config = EvolveConfig(ppm_heldout_fraction=0.5)
    result = extract.extract_round(str(tmp_path), sets, config, str(seed_file))
    # with 4 rollouts only problems 0 and 3 (index % 3 == 0) are solved
    assert result["coverage"] == {"level1": 2 / 6, "level2": 1 / 3}
    assert result["coverage_all"] == pytest.approx(3 / 9)
    # {code steps: [correct, all]}: a code error (0 steps), a wrong answer and, if solved, a right one
    assert result["search_steps"] == {"level1": {"0": [0, 6], "1": [2, 8]}, "level2": {"0": [0, 3], "1": [1, 4]}}
    # held out by problem: no problem has pairs on both sides or an SFT record, and the draw is the
    # same every round
    held_questions = {p.question for name, ps in sets.items() for p in ps if extract.is_held_out(name, p.index, 0.5)}
    solved = ["Question 0 of level1?", "Question 3 of level1?", "Question 0 of level2?"]
    assert 0 < len(held_questions & set(solved)) < len(solved)  # the check below sees both kinds
    sft = records.read_sft(str(tmp_path / "sft.json"))
    assert [r.query for r in sft] == ["seed question"] + [q for q in solved if q not in held_questions]
    train = records.read_pairs(str(tmp_path / "ppm.json"))
    held = records.read_pairs(str(tmp_path / "ppm_heldout.json"))
    # per solved tree: one step pair (right vs wrong answer) and two final-answer pairs
    assert len(train) + len(held) == 3 * 3 and held and train
    assert all(pair.prompt.split("\n")[1] in held_questions for pair in held)
    assert not any(pair.prompt.split("\n")[1] in held_questions for pair in train)
    assert result["ppm_pairs"] == len(train) and result["sft_records"] == len(sft)
    assert records.read_pairs(str(tmp_path / extract.PPM_TRAIN)) == train  # round 1: the pool is its own pairs
    assert result["sft_operations"] == result["sft_comments"] == {"level1": {}, "level2": {}}  # no story to read


def test_the_sft_records_steps_are_counted_by_operation(tmp_path):
    """On curriculum stories each set's SFT records are graded step by step: the stand-in's one step
    (`x = <index>`) is the story's opening done wrong, and its add step is missing."""
    story = "(1) Mia has 3 apples. (2) Mia buys 2 more apples. How many apples does Mia have now?"
    sets = {"level1": [dataclasses.replace(p, question=story) for p in problems(6)]}
    evolve_search.search_round(str(tmp_path), sets, RoundConfig(SearchConfig(num_rollouts=4), ()),
                               StandInSearch(), seed=0, chunk=4)
    result = extract.extract_round(str(tmp_path), sets, EvolveConfig(), None)
    assert result["sft_records"] == 2  # problems 0 and 3, one right answer each
    assert result["sft_operations"] == result["sft_comments"] == {"level1": {"start": [0, 2], "add": [0, 2]}}


def test_the_ppm_pools_join_the_pairs_of_earlier_rounds(tmp_path):
    sets = {"level1": problems(6)}
    rounds = [tmp_path / "round1", tmp_path / "round2"]
    results = []
    for k, round_dir in enumerate(rounds):
        evolve_search.search_round(str(round_dir), sets, RoundConfig(SearchConfig(num_rollouts=4), ()),
                            StandInSearch(), seed=k, chunk=4)
        results.append(extract.extract_round(str(round_dir), sets, EvolveConfig(ppm_heldout_fraction=0.5),
                                            None, [str(d) for d in rounds[:k]]))
    for pool, own in ((extract.PPM_TRAIN, "ppm.json"), (extract.PPM_HELDOUT, "ppm_heldout.json")):
        assert (records.read_pairs(str(rounds[1] / pool))
                == records.read_pairs(str(rounds[0] / own)) + records.read_pairs(str(rounds[1] / own)))
    assert results[1]["ppm_train_pairs"] == results[0]["ppm_pairs"] + results[1]["ppm_pairs"]
    assert results[1]["ppm_heldout_pool_pairs"] == results[0]["ppm_heldout_pairs"] + results[1]["ppm_heldout_pairs"]


def test_the_sft_set_joins_the_search_records_of_earlier_rounds(tmp_path):
    """sft_rounds: round 2's sft.json is the seed replay, round 1's search records, then its own;
    each round keeps its own records apart (sft_search.json), so the pool never counts one twice."""
    sets = {"level1": problems(6)}
    seed_file = tmp_path / "seed.json"
    records.write_records(str(seed_file), [records.SFTRecord("q", "seed response")])
    rounds = [tmp_path / "round1", tmp_path / "round2"]
    own = []
    for k, round_dir in enumerate(rounds):
        evolve_search.search_round(str(round_dir), sets, RoundConfig(SearchConfig(num_rollouts=4), ()),
                                   StandInSearch(), seed=k, chunk=4)
        extract.extract_round(str(round_dir), sets, EvolveConfig(), str(seed_file), (),
                              [str(d) for d in rounds[:k]])
        own.append(records.read_sft(str(round_dir / extract.SFT_OWN)))
    assert own[0] and own[1]
    replay = [records.SFTRecord("q", "seed response")]
    assert records.read_sft(str(rounds[0] / extract.SFT_TRAIN)) == replay + own[0]
    assert records.read_sft(str(rounds[1] / extract.SFT_TRAIN)) == replay + own[0] + own[1]


def test_held_out_sets_give_held_out_pairs_only(tmp_path):
    """Problems searched beside the training sets (`heldout_sets`) give held-out pairs, no SFT record
    and no coverage; the training sets' records are those of a run without them."""
    sets, held = {"level1": problems(6)}, {"heldout_level1": problems(3, "heldout_level1")}
    alone, beside = tmp_path / "alone", tmp_path / "beside"
    for round_dir, searched in ((alone, sets), (beside, {**sets, **held})):
        evolve_search.search_round(str(round_dir), searched, RoundConfig(SearchConfig(num_rollouts=4), ()),
                                   StandInSearch(), seed=0, chunk=4)
    without = extract.extract_round(str(alone), sets, EvolveConfig(ppm_heldout_fraction=0), None)
    result = extract.extract_round(str(beside), sets, EvolveConfig(ppm_heldout_fraction=0), None, heldout_sets=held)
    assert result["coverage"] == without["coverage"] == {"level1": 2 / 6}
    assert records.read_sft(str(beside / extract.SFT_TRAIN)) == records.read_sft(str(alone / extract.SFT_TRAIN))
    assert records.read_pairs(str(beside / "ppm.json")) == records.read_pairs(str(alone / "ppm.json"))
    assert records.read_pairs(str(alone / "ppm_heldout.json")) == []
    held_pairs = records.read_pairs(str(beside / "ppm_heldout.json"))
    # problem 0 of the held-out set is solved: one step pair and two final-answer pairs
    assert len(held_pairs) == 3 and all("of heldout_level1?" in pair.prompt for pair in held_pairs)
    assert result["ppm_heldout_pairs"] == 3 and result["ppm_pairs"] == without["ppm_pairs"]
