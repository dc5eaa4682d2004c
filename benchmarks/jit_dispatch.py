"""Host time per jitted call with a model's structure as the static argument: a plain nnx
GraphDef (the anchor: jit hashes it on every call and compares it with the cached one, each
walking every node) against `inference.static_graph.StaticGraph.of` (ours: hashed once, one
instance per structure). As in the search, the program is compiled with the structure split from
one model (the last round's sampler) and called with that of another. Every decode chunk, refill
and PPM scoring batch pays this on the host before its work is dispatched.

    python benchmarks/jit_dispatch.py [--configs tiny,0.5b] [--calls 200] [--repeats 5]

Prints one JSON line: per model shape, milliseconds per call (best of the repeats) and the ratio.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

from rstar_jax.inference.static_graph import StaticGraph
from rstar_jax.models.decoder import Decoder
from rstar_jax.parallel.hosts import machine

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from sampler import CONFIGS  # noqa: E402  (benchmarks/sampler.py)


@functools.partial(jax.jit, static_argnums=0)
def _step(graph, x):
    return x + 1


def ms_per_call(compiled_with, graph, calls: int, repeats: int) -> float:
    x = jnp.zeros(4)
    _step(compiled_with, x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            _step(graph, x)
        best = min(best, (time.perf_counter() - start) / calls)
    jax.block_until_ready(_step(graph, x))
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tiny,0.5b")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = []
    for name in args.configs.split(","):
        compiled_with, called_with = (
            nnx.split(nnx.eval_shape(lambda: Decoder(CONFIGS[name], rngs=nnx.Rngs(0))))[0] for _ in range(2))
        anchor = ms_per_call(compiled_with, called_with, args.calls, args.repeats)
        programs = _step._cache_size()
        ours = ms_per_call(StaticGraph.of(compiled_with), StaticGraph.of(called_with), args.calls, args.repeats)
        assert _step._cache_size() == programs + 1  # the call found the program compiled for the other split
        results.append({"config": name, "layers": CONFIGS[name].num_hidden_layers,
                        "anchor_graphdef_ms": round(anchor, 4), "ours_static_graph_ms": round(ours, 4),
                        "ratio": round(anchor / ours, 1)})
    print(json.dumps({"benchmark": "jit_dispatch", "backend": jax.default_backend(), "machine": machine(),
                      "results": results}))


if __name__ == "__main__":
    main()
