"""MCTS with the real sampler: the prefix pool changes no tree, and prefills about one step per
expansion instead of the whole path."""

from __future__ import annotations

import dataclasses

import numpy as np
from flax import nnx
from test_context_full_e2e import NoCode
from test_search_e2e import tiny_tokenizer

from rstar_jax import steps as sf
from rstar_jax.config import SEARCH_STOP, ModelConfig, SamplerConfig, SamplingConfig, SearchConfig
from rstar_jax.data.problems import Problem
from rstar_jax.inference.sampler import Sampler
from rstar_jax.models.decoder import Decoder
from rstar_jax.search.driver import run_mcts

PROBLEMS = [Problem(i, f"What is {i} + {2 * i}?", str(3 * i), "toy") for i in range(4)]
STEP_TOKENS = 6


class Steps:
    """The sampler's completions as code steps: an untrained model rarely ends a step itself, and
    trees must grow for prefixes to be reused."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler

    def sample(self, prompts, num_samples, sampling, *, seed, streams):
        completions = self.sampler.sample(prompts, num_samples, sampling, seed=seed, streams=streams)
        as_step = lambda c: c if c.stop_string else dataclasses.replace(
            c, text=c.text + sf.STEP_END, stop_string=sf.STEP_END)
        return [[as_step(c) for c in row] for row in completions]


def search(prefix_cache_rows: int):
    tokenizer = tiny_tokenizer()
    model = Decoder(ModelConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id),
                    rngs=nnx.Rngs(0))
    sampler = Sampler(model, tokenizer, SamplerConfig(max_batch=16, max_len=256, chunk_tokens=8,
                                                      prefix_cache_rows=prefix_cache_rows))
    config = SearchConfig.data_generation(
        2, num_rollouts=4, num_candidates=3, max_depth=5, use_ppm=False, batch_size=4,
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=STEP_TOKENS, stop=SEARCH_STOP))
    result = run_mcts(PROBLEMS, Steps(sampler), None, config, NoCode(), progress=False)
    return result, sampler.counts


def test_trees_are_the_same_with_reuse_on_and_off():
    (plain, plain_counts), (pooled, counts) = search(0), search(32)
    for name, array in plain.arrays.items():  # priors and values up to float noise
        np.testing.assert_allclose(pooled.arrays[name], array, rtol=1e-5, atol=1e-6, err_msg=name)
    assert [[n.text for n in tree] for tree in pooled.nodes] == [[n.text for n in tree] for tree in plain.nodes]
    expansions = sum(plain.num_nodes(b) for b in range(len(plain))) - len(plain)
    assert plain.arrays["depth"].max() >= 3 and expansions > 20
    assert counts["prefill_tokens"] + counts["reused_tokens"] == plain_counts["prefill_tokens"]
    # Whole paths without the pool; about one step (and its stop string) per prompt with it.
    assert counts["prefill_tokens"] < plain_counts["prefill_tokens"] / 3
