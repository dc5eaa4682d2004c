"""A problem longer than the policy's context (issue: `sample: prompt 2 has 334 tokens`): with a
tiny model, the real sampler, search and greedy evaluation finish and count it, as the original's
vLLM (which ignores an over-long prompt with an empty, "length"-finished output) lets them."""

from __future__ import annotations

from flax import nnx
from test_search_e2e import tiny_tokenizer

from rstar_jax import steps as sf
from rstar_jax.config import GREEDY_STOP, SEARCH_STOP, ModelConfig, SamplerConfig, SamplingConfig, SearchConfig
from rstar_jax.data.problems import Problem
from rstar_jax.evaluation.solutions import CONTEXT_FULL, rstar_solutions
from rstar_jax.inference.sampler import Sampler
from rstar_jax.models.decoder import Decoder
from rstar_jax.search.driver import run_mcts
from rstar_jax.search.tree import NodeKind
from rstar_jax.verify.executor import ExecResult

MAX_LEN = 64  # the short problem's prompt (46 tokens) fits, with room for a few steps
SHORT = Problem(0, "What is 12 + 30?", "42", "toy")
LONG = Problem(1, "What is 12 + 30? " * 20, "42", "toy")  # ~200 tokens


class NoCode:
    def run(self, programs):
        return [ExecResult("") for _ in programs]


def tiny_sampler() -> Sampler:
    tokenizer = tiny_tokenizer()
    config = ModelConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=MAX_LEN,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return Sampler(Decoder(config, rngs=nnx.Rngs(0)), tokenizer,
                   SamplerConfig(max_batch=8, max_len=MAX_LEN, chunk_tokens=8))


def test_search_and_greedy_evaluation_finish_over_a_problem_longer_than_the_context():
    sampler = tiny_sampler()
    search = SearchConfig.data_generation(3, num_rollouts=2, num_candidates=2, max_depth=4, use_ppm=False, max_nodes=64,
                                          sampling=SamplingConfig(max_new_tokens=8, stop=SEARCH_STOP))
    stats: dict[str, float] = {}
    result = run_mcts([SHORT, LONG], sampler, None, search, NoCode(), progress=False, stats=stats)
    # the long problem's root gets one TOO_DEEP child (TOO_MANY_STEPS) and its tree ends
    assert result.arrays["kind"][1, : result.num_nodes(1)].tolist() == [NodeKind.STEP, NodeKind.TOO_DEEP]
    assert result.nodes[1][1].answer == sf.TOO_MANY_STEPS
    assert result.num_nodes(0) > 1 and stats["context_full"] >= 1

    greedy = SamplingConfig(temperature=0.0, max_new_tokens=8, stop=GREEDY_STOP)
    solutions = rstar_solutions([SHORT.question, LONG.question], sampler, NoCode(), greedy, num_samples=1,
                                max_depth=3)
    assert solutions[1][0].finish == CONTEXT_FULL and solutions[1][0].steps == ()
    assert solutions[0][0].finish != CONTEXT_FULL or solutions[0][0].steps  # the short one got steps
