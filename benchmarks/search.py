"""Expanded nodes/s of MCTS with the prefix pools off (the anchor) and on (ours).

A search sends every expansion's whole path (question and every step so far) to the sampler,
and in a PPM-augmented search every new node's text to the PPM scorer. Without the pools each
prompt is prefilled, and each text run, from scratch; with them, only what the pool's closest
prompt (usually the parent's) does not hold. Both run the same search in one process: the real
sampler on a random-weight model, each completion made a code step (an untrained model rarely
ends a step itself) and, at `depth` steps, an answer, so trees grow to a realistic depth; code is
not executed (the executor is not what is measured). The trees must come out the same. Prefill
tokens per expansion are given over all expansions and below the roots (the first expansion of
a tree prefills its question and template whole).

Shapes: "tiny", the CPU default's search (experiments/tiny_cpu.gin: its policy, 64 trees, 4
rollouts x 4 candidates, 512-token context; steps of 20 tokens, about the curriculum's, and 4 of
them); "tiny_ppm", the same PPM-augmented as in the default's rounds 3 and 4 (a PPM on the
policy's weights with rStar's near-zero value head, so the trees grow as without it, read as the
default reads it: the mean over a step's tokens); "0.5b", Qwen2.5-0.5B's shape with a 512-token
prompt (the round-1 few-shot prompt is longer) and 48-token steps, 6 deep (on CPU with `--layers
2`, the default, to fit in minutes). After a warm-up search of each (compiles), the two run in
alternation `--repeats` times; the ratio is the median of the paired ratios. Prints one JSON line.

    python benchmarks/search.py [--shapes tiny,tiny_ppm,0.5b] [--repeats 2] [--layers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from rstar_jax import steps as sf
from rstar_jax.config import (SEARCH_STOP, ModelConfig, PPMConfig, SamplerConfig, SamplingConfig, ScorerConfig,
                              SearchConfig)
from rstar_jax.data.problems import Problem
from rstar_jax.inference.sampler import Sampler
from rstar_jax.inference.scorer import PPMScorer
from rstar_jax.models.decoder import Decoder
from rstar_jax.models.ppm import ProcessRewardModel
from rstar_jax.parallel.hosts import machine
from rstar_jax.search.driver import run_mcts
from rstar_jax.verify.executor import ExecResult

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from sampler import CONFIGS, word_tokenizer  # noqa: E402  (benchmarks/sampler.py)


@dataclasses.dataclass(frozen=True)
class Shape:
    model: ModelConfig
    trees: int
    rollouts: int
    candidates: int
    max_len: int
    question_tokens: int
    step_tokens: int
    depth: int  # steps before the answer
    max_batch: int
    ppm_readout: str | None = None  # PPM-augmented: every new step scored by a PPM of this readout


SHAPES = {
    "tiny": Shape(dataclasses.replace(CONFIGS["tiny"], vocab_size=800), trees=64, rollouts=4, candidates=4,
                  max_len=512, question_tokens=40, step_tokens=20, depth=4, max_batch=64),
    "tiny_ppm": Shape(dataclasses.replace(CONFIGS["tiny"], vocab_size=800), trees=64, rollouts=4, candidates=4,
                      max_len=512, question_tokens=40, step_tokens=20, depth=4, max_batch=64,
                      ppm_readout="step_mean"),
    "0.5b": Shape(CONFIGS["0.5b"], trees=4, rollouts=2, candidates=4, max_len=1024, question_tokens=512,
                  step_tokens=48, depth=6, max_batch=16),
}


class StepsThenAnswer:
    """The sampler's completions as code steps, and as an answer once a path has `depth` steps."""

    def __init__(self, sampler: Sampler, depth: int):
        self.sampler, self.depth = sampler, depth
        self.prompts = self.generated = self.completions = 0
        self.roots = None  # (prompts, prefilled tokens) of the first call: every tree's root

    def sample(self, prompts, num_samples, sampling, *, seed, streams):
        out = self.sampler.sample(prompts, num_samples, sampling, seed=seed, streams=streams)
        self.prompts += len(prompts)
        self.roots = self.roots or (self.prompts, self.sampler.counts["prefill_tokens"])
        for prompt, row in zip(prompts, out):
            self.generated += sum(len(c.token_ids) for c in row)
            self.completions += len(row)
            answer = prompt.count(sf.STEP_END) + 1 >= self.depth
            end, stop = ((f" {sf.ANSWER}\\boxed{{1}}{sf.ANSWER_END}", sf.ANSWER_END) if answer
                         else (f" {sf.STEP_END}", sf.STEP_END))
            row[:] = [c if c.stop_string else dataclasses.replace(c, text=c.text + end, stop_string=stop)
                      for c in row]
        return out


class NoCode:
    def run(self, programs):
        return [ExecResult("") for _ in programs]


def searcher(shape: Shape, model: Decoder, tokenizer, pool_rows: int):
    """A function running the shape's search once; returns (seconds, stats, result)."""
    rng = random.Random(0)
    problems = [Problem(i, " ".join(f"t{rng.randrange(1, 800)}" for _ in range(shape.question_tokens)), "1", "toy")
                for i in range(shape.trees)]
    config = SearchConfig.data_generation(
        2, num_rollouts=shape.rollouts, num_candidates=shape.candidates, max_depth=shape.depth + 1,
        use_ppm=shape.ppm_readout is not None, batch_size=shape.trees,
        sampling=SamplingConfig(temperature=0.8, max_new_tokens=shape.step_tokens, stop=SEARCH_STOP))
    sampler_config = SamplerConfig(max_batch=shape.max_batch, max_len=shape.max_len, chunk_tokens=16,
                                   prefix_cache_rows=pool_rows)
    scorer_config = ScorerConfig(max_batch=shape.max_batch, max_len=shape.max_len, prefix_cache_rows=pool_rows)
    ppm = (ProcessRewardModel(model.config, PPMConfig(readout=shape.ppm_readout), rngs=nnx.Rngs(1), backbone=model)
           if shape.ppm_readout is not None else None)

    def run():
        sampler = Sampler(model, tokenizer, sampler_config)  # fresh (empty) pools per search
        scorer = PPMScorer(ppm, tokenizer, scorer_config) if ppm is not None else None
        policy = StepsThenAnswer(sampler, shape.depth)
        start = time.perf_counter()
        result = run_mcts(problems, policy, scorer, config, NoCode(), progress=False)
        seconds = time.perf_counter() - start
        expanded = int(result.arrays["node_count"].sum()) - len(problems)
        below_root = ((sampler.counts["prefill_tokens"] - policy.roots[1]) / max(policy.prompts - policy.roots[0], 1))
        return seconds, dict(expanded=expanded, prompts=policy.prompts, below_root=below_root,
                             generated_per_completion=policy.generated / max(policy.completions, 1),
                             scored_tokens=scorer.counts["prefill_tokens"] if scorer else 0,
                             **sampler.counts), result

    return run


def alternate(runs: dict[str, Callable[[], tuple]], repeats: int) -> tuple[dict[str, tuple], dict[str, list[float]]]:
    """Each run once (a warm-up: compiles), then all in turn `repeats` times. Returns each run's
    last result and the seconds of its timed runs (a result's first entry)."""
    last = {key: run() for key, run in runs.items()}
    seconds = {key: [] for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            last[key] = run()
            seconds[key].append(last[key][0])
    return last, seconds


def run_shapes(benchmark: str, description: str, shapes: dict, measure: Callable[..., dict], repeats: int) -> None:
    """The command line of a benchmark over `shapes` (the 0.5b one cut to `--layers`): one JSON
    line per shape on stderr as it finishes, then the whole on stdout."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--shapes", default=",".join(shapes))
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--layers", type=int, default=2, help="the 0.5b shape's layers (0: all 24)")
    args = parser.parse_args()
    results = []
    for name in args.shapes.split(","):
        shape = shapes[name]
        if name == "0.5b" and args.layers:
            shape = dataclasses.replace(shape, model=dataclasses.replace(shape.model, num_hidden_layers=args.layers))
        results.append(measure(name, shape, args.repeats))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # progress
    print(json.dumps({"benchmark": benchmark, "backend": jax.default_backend(), "machine": machine(),
                      "results": results}))


def measure(name: str, shape: Shape, repeats: int) -> dict:
    # Large random weights: peaked next-token distributions, as a trained model's. Near-uniform
    # ones over 150k tokens let float noise (prefix prefilled apart or together) move a sample.
    model = Decoder(dataclasses.replace(shape.model, initializer_range=0.3), rngs=nnx.Rngs(0))
    tokenizer = word_tokenizer(shape.model.vocab_size)
    runs = {"off": searcher(shape, model, tokenizer, 0),
            "on": searcher(shape, model, tokenizer, 4 * shape.max_batch)}
    last, seconds = alternate(runs, repeats)
    same = all(np.allclose(last["on"][2].arrays[k], a, rtol=1e-5, atol=1e-6, equal_nan=True)
               for k, a in last["off"][2].arrays.items())
    stats = {key: last[key][1] for key in runs}
    per_s = {key: stats[key]["expanded"] / min(seconds[key]) for key in runs}
    prefill = {key: stats[key]["prefill_tokens"] / stats[key]["prompts"] for key in runs}
    below_root = {key: stats[key]["below_root"] for key in runs}
    return {"shape": name, "layers": shape.model.num_hidden_layers, "trees": shape.trees,
            "expanded_nodes": stats["on"]["expanded"], "same_trees": bool(same),
            "anchor_nodes_per_s": round(per_s["off"], 2), "ours_nodes_per_s": round(per_s["on"], 2),
            "ratio": round(float(np.median(np.array(seconds["off"]) / np.array(seconds["on"]))), 2),
            "prefill_tokens_per_expansion": {key: round(v, 1) for key, v in prefill.items()},
            "below_the_roots": {key: round(v, 1) for key, v in below_root.items()},
            "step_tokens": round(stats["on"]["generated_per_completion"], 1),
            **({"scored_tokens_per_expansion": {key: round(stats[key]["scored_tokens"] / stats[key]["expanded"], 1)
                                                for key in runs}} if shape.ppm_readout is not None else {}),
            "seconds": {key: [round(s, 2) for s in v] for key, v in seconds.items()}}


def main() -> None:
    run_shapes("search", __doc__, SHAPES, measure, repeats=2)


if __name__ == "__main__":
    main()
