"""The PPM stage with real (tiny, untrained) models.
"""

import dataclasses
import os

import pytest

from rstar_jax.evolve import evaluate, extract, models
from rstar_jax.evolve import search as evolve_search
from rstar_jax.config import EvolveConfig, PPMConfig, RoundConfig, SearchConfig
from rstar_jax.models.hf import saved_readout
from rstar_jax.data import records
from stand_ins import StandInSearch, problems


def tiny_ppm_stage(tmp_path):
    """Pairs from a stand-in search (ppm.json, ppm_heldout.json), a tiny untrained policy, and the
    EvolveConfig that trains a PPM from it in two steps: (config, policy directory)."""
    from rstar_jax.config import ModelConfig, TrainConfig

    sets = {"level1": problems(6)}
    evolve_search.search_round(str(tmp_path), sets, RoundConfig(SearchConfig(num_rollouts=4), ()),
                        StandInSearch(), seed=0, chunk=4)
    extract.extract_round(str(tmp_path), sets, EvolveConfig(ppm_heldout_fraction=0.5), None)
    pairs = records.read_pairs(str(tmp_path / "ppm.json"))
    tokenizer = models.train_tokenizer(str(tmp_path / "tokenizer"),
                                       [p.prompt + p.pos + p.neg for p in pairs] * 4, 400)
    train = TrainConfig(learning_rate=1e-3, batch_size=2, max_steps=2, max_length=256,
                        compute_dtype="float32", checkpoint_every=2)
    config = EvolveConfig(model=ModelConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1,
                                            tie_word_embeddings=True),
                          ppm_train=train, exec_workers=1)
    return config, models.init_policy(str(tmp_path / "init"), tokenizer, config)


@pytest.mark.slow
@pytest.mark.parametrize("readout", ["last", "step_mean"])
def test_ppm_stage_trains_on_pairs_and_scores_held_out_pairs(tmp_path, readout):
    """The PPM path with real (tiny, untrained) models: train from the policy with the run's
    readout, which the saved PPM keeps and the scorer of its pairs uses."""
    config, policy = tiny_ppm_stage(tmp_path)
    config = dataclasses.replace(config, ppm=PPMConfig(readout=readout))
    ppm = models.train_reward_model(str(tmp_path / "ppm"), policy, str(tmp_path / "ppm.json"), config, None,
                                    config.ppm_train)
    assert os.path.exists(os.path.join(ppm, "value_head.safetensors")) and saved_readout(ppm) == readout
    heldout = records.read_pairs(str(tmp_path / "ppm_heldout.json"))
    with models.model_stack(config, policy, ppm) as stack:
        assert stack.ppm.readout == readout
        right = evaluate.ranked_right(stack.ppm, heldout)
    assert right.shape == (len(heldout),) and right.dtype == bool
    by_kind = evaluate.accuracy_by_kind(heldout, right)
    assert sum(n for _, n in by_kind.values()) == len(heldout)
    assert sum(share * n for share, n in by_kind.values()) == pytest.approx(right.sum())


@pytest.mark.slow
def test_ppm_base_previous_continues_from_the_previous_rounds_ppm(tmp_path):
    """With ppm_base "previous" the round's PPM starts from the previous round's (at rate 0 it comes
    out as it went in); with "policy" it starts from the policy and a fresh value head."""
    from safetensors.numpy import load_file

    config, policy = tiny_ppm_stage(tmp_path)
    pairs = str(tmp_path / "ppm.json")
    previous = models.train_reward_model(str(tmp_path / "r1"), policy, pairs, config, None, config.ppm_train)
    frozen = dataclasses.replace(config.ppm_train, learning_rate=0.0)
    weights = lambda ppm: {name: tensor for file in ("model.safetensors", "value_head.safetensors")
                           for name, tensor in load_file(os.path.join(ppm, file)).items()}
    continued = models.train_reward_model(str(tmp_path / "r2"), policy, pairs, dataclasses.replace(
        config, ppm_base="previous"), previous, frozen)
    fresh = models.train_reward_model(str(tmp_path / "r2_policy"), policy, pairs, config, previous, frozen)
    before, after = weights(previous), weights(continued)
    assert before.keys() == after.keys()
    assert all((before[name] == after[name]).all() for name in before)
    assert not (weights(fresh)["summary.weight"] == before["summary.weight"]).all()


def test_the_recital_stage_trains_the_init_on_plain_text_and_needs_recitals(tmp_path):
    """The recital stage with a real (tiny) model: plain-text SFT from the init, exported as HF."""
    from rstar_jax.config import ModelConfig, TrainConfig
    from rstar_jax.evolve.problems import recital_records
    from rstar_jax.data.problems import Problem

    sets = {"level1": [Problem(i, f"(1) Tom has {i + 2} apples. (2) Tom buys {i} more apples. "
                                 "How many apples does Tom have now?", str(2 * i + 2), "level1")
                       for i in range(4)]}
    recitals = recital_records(sets, seed=0)
    assert len(recitals) == 4
    tokenizer = models.train_tokenizer(str(tmp_path / "tokenizer"),
                                       [r.query + r.response for r in recitals] * 8, 400)
    config = EvolveConfig(model=ModelConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1,
                                            tie_word_embeddings=True),
                          recital_train=TrainConfig(learning_rate=1e-3, batch_size=2, max_steps=2, max_length=128,
                                                    compute_dtype="float32", checkpoint_every=2))
    init = models.init_policy(str(tmp_path / "init"), tokenizer, config)
    recited = models.train_recital(str(tmp_path / "recital"), init, recitals, config)
    assert os.path.exists(os.path.join(recited, "model.safetensors"))
    assert len(records.read_sft(str(tmp_path / "recital" / "recitals.json"))) == 4
    with pytest.raises(ValueError, match="nothing to recite"):
        models.train_recital(str(tmp_path / "none"), init, [], config)

    # a round's policy: chat SFT records and plain-text recitals in one run
    sft_file = str(tmp_path / "sft.json")
    records.write_records(sft_file, [records.SFTRecord(p.question, f"x = {p.answer}\n") for p in sets["level1"]])
    policy = models.train_policy(str(tmp_path / "round1"), recited, sft_file, config, config.recital_train,
                                 recitals[:2])
    assert os.path.exists(os.path.join(policy, "model.safetensors"))
    assert records.read_sft(str(tmp_path / "round1" / "recitals.json")) == recitals[:2]
    with pytest.raises(ValueError, match="no SFT records"):
        models.train_policy(str(tmp_path / "empty"), recited, None, config, config.recital_train)
