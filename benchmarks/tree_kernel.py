"""Tree work alone: our select + expand + backup against mctx's `muzero_policy`, same B and sims.

One simulation = select a leaf in each of the B trees, expand it with K fake candidates (random
answers, code errors, PPM values, drawn before the timed search), back up. The whole search runs
under one `jax.jit` (a `lax.fori_loop`), as does mctx's with a trivial recurrent function, so both
numbers are tree bookkeeping only. Simulations fill the tree: sims = (N - 1) // K.

    pip install mctx   # the anchor; not a dependency of rstar_jax
    python benchmarks/tree_kernel.py [--batch 16 256] [--nodes 256 4096] [--children 4 12]

Prints one JSON line: per (B, N, K) our simulations/s, mctx's, and ours / mctx. `--trace DIR`
also writes a profiler trace (Perfetto JSON) of one more search of each side per grid point.

    python benchmarks/tree_kernel.py --search [--problems 32]

instead runs a real MCTS (tiny random policy and PPM, the real sampler, scorer, executor and
grader, curriculum problems) and prints the share of its wall time spent in the tree kernels.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import random
import time

import jax
import jax.numpy as jnp

try:  # the anchor; without it ours runs alone
    import mctx
except ImportError:
    mctx = None

from rstar_jax.parallel.hosts import machine
from rstar_jax.search import kernels
from rstar_jax.search.tree import NodeKind, Tree


@functools.partial(jax.jit, static_argnames=("batch", "children", "sims"))
def fake_candidates(key, *, batch: int, children: int, sims: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Every simulation's candidates, drawn before the timed search: kind draws, rewards and PPM
    values, each float32[sims, B, 1, K]. (Drawn inside the loop, they took more than a quarter of
    our time at B=16 N=256, work mctx's trivial recurrent function does not do.)"""
    k_kind, k_reward, k_ppm = jax.random.split(key, 3)
    shape = (sims, batch, 1, children)
    rewards = jnp.where(jax.random.bernoulli(k_reward, 0.5, shape), 1.0, -1.0)
    return jax.random.uniform(k_kind, shape), rewards, jax.random.uniform(k_ppm, shape, minval=-1, maxval=1)


@functools.partial(jax.jit, static_argnames=("nodes",))
def ours(draws: tuple[jax.Array, jax.Array, jax.Array], *, nodes: int) -> Tree:
    sims, batch, _, children = draws[0].shape
    roots = jnp.zeros((batch, 1), jnp.int32)

    def simulate(i, tree):
        u, rewards, ppm = (d[i] for d in draws)
        tree, leaves = kernels.select(tree, roots)
        step_kind = jnp.where(u < 0.1, NodeKind.ANSWER, NodeKind.STEP).astype(jnp.int8)
        tree, ids, _ = kernels.expand(tree, leaves, jnp.ones_like(u, bool), step_kind, u > 0.9, jnp.ones_like(u),
                                      max_depth=16, errors_threshold=1)
        return kernels.backup(tree, leaves, ids, rewards, ppm)

    return jax.lax.fori_loop(0, sims, simulate, Tree.init(batch, nodes, children))


@functools.partial(jax.jit, static_argnames=("batch", "children", "sims"))
def anchor(key, *, batch: int, children: int, sims: int):
    def recurrent_fn(params, rng, action, embedding):
        del params, rng, action
        out = mctx.RecurrentFnOutput(reward=jnp.zeros(batch), discount=jnp.ones(batch),
                                     prior_logits=jnp.zeros((batch, children)), value=jnp.zeros(batch))
        return out, embedding

    root = mctx.RootFnOutput(prior_logits=jnp.zeros((batch, children)), value=jnp.zeros(batch),
                             embedding=jnp.zeros(batch))
    return mctx.muzero_policy((), key, root, recurrent_fn, num_simulations=sims).action


def best_time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def search_share(num_problems: int) -> dict:
    """Kernel share of the wall time of a tiny-model MCTS (rounds 3-4 settings, fewer rollouts),
    after compilation."""
    from flax import nnx

    from rstar_jax.config import SEARCH_STOP, ModelConfig, SamplerConfig, SamplingConfig, ScorerConfig, SearchConfig
    from rstar_jax.data import curriculum
    from rstar_jax.data.problems import Problem
    from rstar_jax.inference.sampler import Sampler
    from rstar_jax.inference.scorer import PPMScorer
    from rstar_jax.models.decoder import Decoder
    from rstar_jax.models.ppm import ProcessRewardModel
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from rstar_jax import steps as sf
    from rstar_jax.search.driver import run_mcts
    from rstar_jax.verify.executor import Executor

    rng = random.Random(0)
    generated = [curriculum.generate_problem(rng, 2) for _ in range(num_problems)]
    problems = [Problem(i, p.question, str(p.answer), "curriculum") for i, p in enumerate(generated)]
    bpe = Tokenizer(models.BPE())  # byte-level BPE, like Qwen2's
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        [sf.policy_prompt(p.question, p.response) for p in generated],
        trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>", *sf.SPECIAL_TOKENS],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>",
                                                     pad_token="<|endoftext|>")
    model_config = ModelConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    sampler = Sampler(Decoder(model_config, rngs=nnx.Rngs(0)), tokenizer, SamplerConfig(max_batch=128, max_len=1024))
    scorer = PPMScorer(ProcessRewardModel(model_config, rngs=nnx.Rngs(1)), tokenizer,
                       ScorerConfig(max_batch=128, max_len=1024))
    config = SearchConfig.data_generation(3, num_rollouts=4, num_candidates=8, batch_size=num_problems,
                                          sampling=SamplingConfig(max_new_tokens=32, stop=SEARCH_STOP))
    with Executor(num_workers=4, timeout_s=10.0) as executor:
        for _ in range(2):  # the first run compiles; report the second
            stats: dict[str, float] = {}
            result = run_mcts(problems, sampler, scorer, config, executor, progress=False, stats=stats)
    nodes = sum(result.num_nodes(b) for b in range(len(result)))
    return {"benchmark": "tree_kernel_search_share", "device": str(jax.devices()[0].device_kind),
            "problems": num_problems, "nodes": nodes, "phases": stats["phases"],
            "wall_s": round(stats["wall_s"], 2), "kernel_s": round(stats["kernel_s"], 3),
            "kernel_share": round(stats["kernel_s"] / stats["wall_s"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--nodes", type=int, nargs="+", default=[256, 4096])
    parser.add_argument("--children", type=int, nargs="+", default=[4, 12])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--search", action="store_true", help="kernel share of a tiny-model MCTS instead")
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--trace", default="", help="also write a profiler trace (Perfetto JSON) of one more "
                                                     "search of each side per grid point under this folder")
    args = parser.parse_args()
    if args.search:
        print(json.dumps(search_share(args.problems)))
        return
    key = jax.random.key(0)
    rows = []
    for b, n, k in itertools.product(args.batch, args.nodes, args.children):
        sims = (n - 1) // k
        draws = jax.block_until_ready(fake_candidates(key, batch=b, children=k, sims=sims))
        t_ours = best_time(lambda: ours(draws, nodes=n), args.repeats)
        rows.append({"B": b, "N": n, "K": k, "sims": sims, "ours_sims_per_s": round(b * sims / t_ours, 1)})
        if mctx is not None:
            t_mctx = best_time(lambda: anchor(key, batch=b, children=k, sims=sims), args.repeats)
            rows[-1].update(mctx_sims_per_s=round(b * sims / t_mctx, 1), ratio=round(t_mctx / t_ours, 3))
        if args.trace:  # compiled and warm by now: the trace holds one search's kernels and gaps only
            with jax.profiler.trace(f"{args.trace}/B{b}_N{n}_K{k}", create_perfetto_trace=True):
                jax.block_until_ready(ours(draws, nodes=n))
                if mctx is not None:
                    jax.block_until_ready(anchor(key, batch=b, children=k, sims=sims))
    print(json.dumps({"benchmark": "tree_kernel", "device": str(jax.devices()[0].device_kind), "machine": machine(),
                      "anchor": f"mctx {mctx.__version__} muzero_policy" if mctx else "mctx not installed",
                      "results": rows}))


if __name__ == "__main__":
    main()
