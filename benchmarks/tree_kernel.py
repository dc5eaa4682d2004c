"""Tree work alone: our select + expand + backup against mctx's `muzero_policy`, same B and sims.

One simulation = select a leaf in each of the B trees, expand it with K candidates from a fake
on-device generator (random answers, code errors, PPM values), back up. The whole search runs
under one `jax.jit` (a `lax.fori_loop`), as does mctx's with a trivial recurrent function, so both
numbers are tree bookkeeping only. Simulations fill the tree: sims = (N - 1) // K.

    pip install mctx   # the anchor; not a dependency of rstar_jax
    python benchmarks/tree_kernel.py [--batch 16 256] [--nodes 256 4096] [--children 4 12]

Prints one JSON line: per (B, N, K) our simulations/s, mctx's, and ours / mctx.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import time

import jax
import jax.numpy as jnp
import mctx

from rstar_jax.search import kernels
from rstar_jax.search.tree import NodeKind, Tree


@functools.partial(jax.jit, static_argnames=("batch", "nodes", "children", "sims"))
def ours(key, *, batch: int, nodes: int, children: int, sims: int) -> Tree:
    roots = jnp.zeros((batch, 1), jnp.int32)

    def simulate(i, tree):
        k_kind, k_reward, k_ppm = jax.random.split(jax.random.fold_in(key, i), 3)
        tree, leaves = kernels.select(tree, roots)
        u = jax.random.uniform(k_kind, (batch, 1, children))
        step_kind = jnp.where(u < 0.1, NodeKind.ANSWER, NodeKind.STEP).astype(jnp.int8)
        tree, ids, _ = kernels.expand(tree, leaves, jnp.ones_like(u, bool), step_kind, u > 0.9, jnp.ones_like(u),
                                      max_depth=16, errors_threshold=1)
        rewards = jnp.where(jax.random.bernoulli(k_reward, 0.5, u.shape), 1.0, -1.0)
        ppm = jax.random.uniform(k_ppm, u.shape, minval=-1, maxval=1)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--nodes", type=int, nargs="+", default=[256, 4096])
    parser.add_argument("--children", type=int, nargs="+", default=[4, 12])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    key = jax.random.key(0)
    rows = []
    for b, n, k in itertools.product(args.batch, args.nodes, args.children):
        sims = (n - 1) // k
        t_ours = best_time(lambda: ours(key, batch=b, nodes=n, children=k, sims=sims), args.repeats)
        t_mctx = best_time(lambda: anchor(key, batch=b, children=k, sims=sims), args.repeats)
        rows.append({"B": b, "N": n, "K": k, "sims": sims,
                     "ours_sims_per_s": round(b * sims / t_ours, 1), "mctx_sims_per_s": round(b * sims / t_mctx, 1),
                     "ratio": round(t_mctx / t_ours, 3)})
    print(json.dumps({"benchmark": "tree_kernel", "device": str(jax.devices()[0].device_kind),
                      "anchor": f"mctx {mctx.__version__} muzero_policy", "results": rows}))


if __name__ == "__main__":
    main()
