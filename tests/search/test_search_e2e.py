"""End to end: MCTS with a tiny random policy and PPM, the real sampler, scorer, executor, grader.

The model is untrained, so this checks the pipeline runs and leaves consistent trees, not accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest
import transformers
from fake_search import check_consistent
from flax import nnx
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from rstar_jax.config import SEARCH_STOP, ModelConfig, SamplerConfig, SamplingConfig, ScorerConfig, SearchConfig
from rstar_jax.data.problems import Problem
from rstar_jax.inference.sampler import Sampler
from rstar_jax.inference.scorer import PPMScorer
from rstar_jax.models.decoder import Decoder
from rstar_jax.models.ppm import ProcessRewardModel
from rstar_jax.search import io
from rstar_jax import steps as sf
from rstar_jax.search.driver import run_mcts
from rstar_jax.verify.executor import Executor

SOLUTION = ("<code>\nx = 12 + 30\n<end_of_step>\nprint(x)\n<end_of_code>\n<output>42<end_of_output>\n"
            "<answer>The answer is \\boxed{42}.<end_of_answer>")
PROBLEMS = [Problem(0, "What is 12 + 30?", "42", "toy"), Problem(1, "What is 2 + 2?", "4", "toy")]


def tiny_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """Byte-level BPE over a few rStar-format lines, rStar's special tokens atomic."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", *sf.SPECIAL_TOKENS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([sf.policy_prompt(p.question, SOLUTION) for p in PROBLEMS] * 10, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                                pad_token="<|endoftext|>")


@pytest.mark.slow
def test_mcts_with_a_tiny_model(tmp_path):
    tokenizer = tiny_tokenizer()
    config = ModelConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    policy = Decoder(config, rngs=nnx.Rngs(0))
    ppm = ProcessRewardModel(config, rngs=nnx.Rngs(1))
    sampler = Sampler(policy, tokenizer, SamplerConfig(max_batch=16, max_len=512, chunk_tokens=8))
    scorer = PPMScorer(ppm, tokenizer, ScorerConfig(max_batch=16, max_len=512, min_bucket=64))
    search = SearchConfig.data_generation(3, num_rollouts=3, num_candidates=4, max_depth=3, max_nodes=64,
                                          sampling=SamplingConfig(max_new_tokens=12, stop=SEARCH_STOP))
    stats: dict[str, float] = {}
    with Executor(num_workers=2, timeout_s=5.0) as executor:
        result = run_mcts(PROBLEMS, sampler, scorer, search, executor, progress=False, stats=stats)
    tree = result.device_tree()
    for b in range(len(PROBLEMS)):
        check_consistent(tree, b)
        assert result.num_nodes(b) > 1
        steps = [rec.text for rec in result.nodes[b][1:]]
        assert all(steps)
        ppm_values = result.arrays["ppm_value"][b, : result.num_nodes(b)]
        assert np.all(np.abs(ppm_values[~np.isnan(ppm_values)]) < 1)
    assert stats["phases"] > 0 and 0 < stats["kernel_s"] < stats["wall_s"]
    io.save(result, str(tmp_path / "search"))
    assert io.load(str(tmp_path / "search")).nodes == result.nodes
