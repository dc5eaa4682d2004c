"""`evaluate` end to end on a tiny random policy and PPM saved as HF directories: loading, the
jitted sampler and scorer, the executor, grading, resumable results and the summary."""

import json
import os

import pytest
import transformers
from flax import nnx
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from rstar_jax.config import (GREEDY_STOP, SEARCH_STOP, EvalConfig, ModelConfig, SamplerConfig, SamplingConfig,
                              ScorerConfig, SearchConfig)
from rstar_jax.data.problems import load_problem_set
from rstar_jax.evaluation.run import evaluate
from rstar_jax.models.decoder import Decoder
from rstar_jax.models.hf import save_hf, save_ppm_hf
from rstar_jax.models.ppm import ProcessRewardModel
from rstar_jax import steps as sf

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "eval_data_sample")
SETS = ("GSM8K_test.json", "amc23_test.json")
EOS = "<|endoftext|>"


@pytest.fixture(scope="module")
def problems_dir(tmp_path_factory):
    """Two problems of two real sets."""
    directory = tmp_path_factory.mktemp("problems")
    for name in SETS:
        records = json.load(open(os.path.join(FIXTURES, name)))[:2]
        (directory / name).write_text(json.dumps(records))
    return str(directory)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, problems_dir):
    """(policy dir, PPM dir): a random 1-layer Qwen2-style decoder with a byte-level BPE tokenizer."""
    texts = [p.question for name in SETS for p in load_problem_set(os.path.join(problems_dir, name))]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=512, special_tokens=[EOS, *sf.SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)
    config = ModelConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    policy_dir, ppm_dir = tmp_path_factory.mktemp("policy"), tmp_path_factory.mktemp("ppm")
    save_hf(Decoder(config, rngs=nnx.Rngs(0)), tokenizer, policy_dir)
    save_ppm_hf(ProcessRewardModel(config, rngs=nnx.Rngs(1)), tokenizer, ppm_dir)
    return str(policy_dir), str(ppm_dir)


@pytest.mark.slow  # about a minute of jit compilation on 2 CPU cores
def test_greedy_and_mcts_evaluation_of_a_tiny_model(tmp_path, problems_dir, model_dirs):
    policy_dir, ppm_dir = model_dirs
    config = EvalConfig(methods=("greedy", "mcts"), sampling=SamplingConfig(max_new_tokens=24, stop=GREEDY_STOP),
                        num_runs=2, ks=(1, 2), grade_workers=0, exec_workers=1)
    search = SearchConfig.evaluation(num_rollouts=2, num_candidates=2, max_depth=3, max_nodes=64,
                                     sampling=SamplingConfig(max_new_tokens=12, stop=SEARCH_STOP))
    kwargs = dict(problems=problems_dir, policy_path=policy_dir, ppm_path=ppm_dir, config=config, search=search,
                  sampler=SamplerConfig(max_batch=8, max_len=1024, chunk_tokens=8),
                  scorer=ScorerConfig(max_batch=8, max_len=1024))
    rows = evaluate(str(tmp_path), **kwargs)
    assert [(r["set"], r["method"], r["problems"]) for r in rows] == [
        ("GSM8K_test", "greedy", 2), ("amc23_test", "greedy", 2), ("GSM8K_test", "mcts", 2), ("amc23_test", "mcts", 2)]
    assert rows[0]["headline"] == "pass@1" and rows[0]["paper"] == 89.7
    assert rows[2]["headline"] == "top4_maj@2" and rows[2]["paper"] is None  # GSM8K is not in Table 1
    for row in rows:
        with open(tmp_path / row["set"] / row["method"] / "predictions.jsonl") as f:
            records = [json.loads(line) for line in f]
        runs = 1 if row["method"] == "greedy" else 2
        assert [len(r["candidates"]) for r in records] == [runs, runs]
        for cand in (c for r in records for c in r["candidates"]):
            assert cand["finish"] in ("answer", "no_answer", "too_many_steps", "eos", "length", "stop")
            assert cand["correct"] in (True, False) and (cand["answer"] is not None or not cand["correct"])
            assert cand["steps"] or row["method"] == "mcts"
    assert (tmp_path / "summary.md").read_text().count("\n") == 2 + len(rows)
    # A second call finds every problem done and only re-reports.
    assert evaluate(str(tmp_path), **kwargs) == rows
