"""PPM scoring of a search's new nodes with the scorer's prefix pool off (the anchor) and on (ours).

A PPM-augmented search scores every new node, whose text is its parent's plus one step. Without
the pool each text runs from scratch; with it, only past the prefix a pool row holds (usually the
parent's). Both score the same texts in one process, in calls shaped like a search's: each call
scores `candidates` children of one node of the last call in each of `trees` trees, `depth` calls
deep, on a random-weight PPM. The scores must agree (to float rounding).

Shapes: "tiny", the CPU default's (experiments/tiny_cpu.gin: its model and PPM readout, the mean
over a step's tokens; 64 trees x 4 candidates, 512-token context, steps of 30 tokens, 8 deep);
"0.5b", Qwen2.5-0.5B's shape with the paper's readout (the last token), a 512-token prompt and
48-token steps, 6 deep (on CPU with `--layers 2`, the default). After a warm-up of each
(compiles), the two run in alternation `--repeats` times; the ratio is the median of the paired
ratios. Prints one JSON line.

    python benchmarks/scorer.py [--shapes tiny,0.5b] [--repeats 3] [--layers 2]
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time

import numpy as np
from flax import nnx

from rstar_jax.config import ModelConfig, PPMConfig, ScorerConfig
from rstar_jax.inference.scorer import PPMScorer
from rstar_jax.models.decoder import Decoder
from rstar_jax.models.ppm import ProcessRewardModel

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from sampler import CONFIGS, word_tokenizer  # noqa: E402  (benchmarks/sampler.py)
from search import alternate, run_shapes  # noqa: E402  (benchmarks/search.py)


@dataclasses.dataclass(frozen=True)
class Shape:
    model: ModelConfig
    trees: int
    candidates: int
    max_len: int
    question_tokens: int
    step_tokens: int
    depth: int
    max_batch: int
    readout: str = "last"  # PPMConfig.readout


SHAPES = {
    "tiny": Shape(dataclasses.replace(CONFIGS["tiny"], vocab_size=800), trees=64, candidates=4, max_len=512,
                  question_tokens=80, step_tokens=30, depth=8, max_batch=64, readout="step_mean"),
    "0.5b": Shape(CONFIGS["0.5b"], trees=4, candidates=4, max_len=1024, question_tokens=512, step_tokens=48,
                  depth=6, max_batch=16),
}


def search_calls(shape: Shape) -> list[tuple[list[str], list[int]]]:
    """The texts of each scoring call and where their steps start: every tree's `candidates`
    children of one of the last call's texts of that tree (its first: where the search would
    descend)."""
    rng = random.Random(0)
    words = lambda n: " ".join(f"t{rng.randrange(1, shape.model.vocab_size)}" for _ in range(n))
    nodes = [words(shape.question_tokens) for _ in range(shape.trees)]
    calls = []
    for _ in range(shape.depth):
        children = [[f"{node} {words(shape.step_tokens)}" for _ in range(shape.candidates)] for node in nodes]
        calls.append(([text for texts in children for text in texts],
                      [len(node) for node in nodes for _ in range(shape.candidates)]))
        nodes = [texts[0] for texts in children]
    return calls


def measure(name: str, shape: Shape, repeats: int) -> dict:
    model = Decoder(shape.model, rngs=nnx.Rngs(0))
    ppm = ProcessRewardModel(shape.model, PPMConfig(readout=shape.readout), rngs=nnx.Rngs(1), backbone=model)
    tokenizer = word_tokenizer(shape.model.vocab_size)
    calls = search_calls(shape)

    def scorer(pool_rows: int):
        def run():
            scorer = PPMScorer(ppm, tokenizer, ScorerConfig(max_batch=shape.max_batch, max_len=shape.max_len,
                                                            prefix_cache_rows=pool_rows))  # an empty pool
            start = time.perf_counter()
            raw = np.concatenate([scorer.score(texts, starts)[0] for texts, starts in calls])
            return time.perf_counter() - start, scorer.counts, raw
        return run

    runs = {"off": scorer(0), "on": scorer(4 * shape.max_batch)}
    last, seconds = alternate(runs, repeats)
    texts = sum(len(texts) for texts, _ in calls)
    return {"shape": name, "layers": shape.model.num_hidden_layers, "texts": texts,
            "same_scores": bool(np.allclose(last["on"][2], last["off"][2], rtol=1e-4, atol=1e-4)),
            "anchor_texts_per_s": round(texts / min(seconds["off"]), 1),
            "ours_texts_per_s": round(texts / min(seconds["on"]), 1),
            "ratio": round(float(np.median(np.array(seconds["off"]) / np.array(seconds["on"]))), 2),
            "tokens_run_per_text": {key: round(last[key][1]["prefill_tokens"] / texts, 1) for key in runs},
            "step_tokens": shape.step_tokens, "readout": shape.readout,
            "seconds": {key: [round(s, 2) for s in v] for key, v in seconds.items()}}


def main() -> None:
    run_shapes("scorer", __doc__, SHAPES, measure, repeats=3)


if __name__ == "__main__":
    main()
