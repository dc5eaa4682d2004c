"""Checkpoints with rope scaling go through the jitted sampler, the PPM scorer and the search: a
tiny Llama-3.1-shaped model (llama3 scaling, several EOS ids) and a Qwen2.5-shaped one (YaRN)
decode greedily as HF `generate` does."""

import types

import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from rstar_jax.config import SEARCH_STOP, SamplerConfig, SamplingConfig, ScorerConfig, SearchConfig
from rstar_jax.data.problems import Problem
from rstar_jax.inference.sampler import Sampler
from rstar_jax.inference.scorer import PPMScorer
from rstar_jax.models.hf import load_hf
from rstar_jax.models.ppm import ProcessRewardModel
from rstar_jax.search.driver import run_mcts
from rstar_jax import steps as sf

PROMPTS = ["<|user|>:\nWhat is 12 + 30?\n\n<|assistant|>:", "the quick brown fox", "héllo", "print(x)"]


def hf_config(kind: str, tokenizer) -> transformers.PretrainedConfig:
    shape = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.3,
                 pad_token_id=tokenizer.pad_token_id)
    if kind == "llama3":
        eos = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(sf.ANSWER_END)]
        return transformers.LlamaConfig(
            **shape, rope_theta=500000.0, eos_token_id=eos, bos_token_id=None,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 16})
    return transformers.Qwen2Config(
        **shape, rope_theta=10000.0, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16})


@pytest.fixture(scope="module", params=["llama3", "yarn"])
def scaled(request, tmp_path_factory, bpe_tokenizer):
    """(kind, HF torch model, our Decoder, tokenizer) of a tiny random checkpoint with rope scaling."""
    torch.manual_seed(0)
    hf_model = transformers.AutoModelForCausalLM.from_config(hf_config(request.param, bpe_tokenizer)).eval()
    path = tmp_path_factory.mktemp(f"rope_{request.param}")
    hf_model.save_pretrained(path)
    bpe_tokenizer.save_pretrained(path)
    model, tokenizer = load_hf(path)
    return request.param, hf_model, model, tokenizer


def test_greedy_equals_hf_generate(scaled):
    kind, hf_model, model, tokenizer = scaled
    assert model.config.rope_scaling.rope_type == kind
    eos = sorted({tokenizer.eos_token_id, *np.atleast_1d(model.config.eos_token_id).tolist()})
    sampler = Sampler(model, tokenizer, SamplerConfig(max_batch=8, max_len=64, chunk_tokens=8))
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        out = hf_model.generate(**batch, max_new_tokens=32, do_sample=False, eos_token_id=eos,
                                pad_token_id=tokenizer.pad_token_id)
    ours = sampler.sample(PROMPTS, 1, SamplingConfig(temperature=0.0, max_new_tokens=32))
    for row, [got] in zip(out[:, batch["input_ids"].shape[1]:].tolist(), ours):
        end = next((i for i, t in enumerate(row) if t in eos), None)
        expected = row if end is None else row[: end + 1]
        assert got.token_ids == expected
        assert got.finish_reason == ("length" if end is None else "eos")


class NullExecutor:
    def run(self, programs):
        return [types.SimpleNamespace(output="7", error=None, timed_out=False) for _ in programs]


@pytest.mark.slow  # compiles the sampler, the scorer and the tree kernels
def test_scorer_and_search_run(scaled):
    _, _, model, tokenizer = scaled
    ppm = ProcessRewardModel(model.config, rngs=nnx.Rngs(1))
    scorer = PPMScorer(ppm, tokenizer, ScorerConfig(max_batch=8, max_len=64, min_bucket=16))
    raw, values = scorer.score(PROMPTS)
    assert raw.shape == (4,) and np.isfinite(values).all()
    sampler = Sampler(model, tokenizer, SamplerConfig(max_batch=8, max_len=64, chunk_tokens=8))
    search = SearchConfig.evaluation(num_rollouts=2, num_candidates=2, max_depth=2,
                                     sampling=SamplingConfig(max_new_tokens=8, stop=SEARCH_STOP))
    result = run_mcts([Problem(0, "What is 3 + 4?", "7", "toy")], sampler, scorer, search, NullExecutor(),
                      progress=False)
    assert result.num_nodes(0) > 1
