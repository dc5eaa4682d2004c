"""Batched PPM scoring of partial trajectories: raw scores and search values tanh(raw / scale).

Texts are sorted by length and scored in bucketed batches (rows and length padded to powers of
two), so a long run compiles a bounded number of programs.

Long inputs keep their end. The original keeps the first 4095 tokens and so scores a long
trajectory without its latest steps (spec §5); the step being valued is the last one, so here a
text longer than `max_len` tokens keeps its prompt (the question, up to the end of the
`<|assistant|>: ...` header; at most half of `max_len`) and the end of its solution, dropping
tokens from the start of the solution.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from rstar_jax.config import ScorerConfig
from rstar_jax.inference.static_graph import StaticGraph
from rstar_jax.models.ppm import ProcessRewardModel, search_value
from rstar_jax.models.tokenizer import encode
from rstar_jax.parallel import rules, sharding
from rstar_jax.parallel.rules import Rules
from rstar_jax import steps as sf
from rstar_jax.shapes import bucket

log = logging.getLogger(__name__)

# The end of the prompt header shared by the policy and SFT templates ("<|assistant|>: Let's think
# step by step and solve the problem with code."): where the solution part of a text starts.
PROMPT_END = sf.sft_prompt("").split("\n")[-1]


@functools.partial(jax.jit, static_argnums=0)
def _raw_scores(graph: StaticGraph, state: nnx.State, tokens_bt: jax.Array,
                mask_bt: jax.Array) -> jax.Array:
    ppm = nnx.merge(graph.graphdef, state)
    positions_bt = jnp.broadcast_to(jnp.arange(tokens_bt.shape[1], dtype=jnp.int32),
                                    tokens_bt.shape)
    return ppm(tokens_bt, positions_bt, mask_bt, deterministic=True)


class PPMScorer:
    """Scores texts with a `ProcessRewardModel`, on one device or a mesh (batch split over the
    data axes, parameters over 'tensor' by `rules`, default `parallel.rules.DECODE_RULES`)."""

    def __init__(self, ppm: ProcessRewardModel, tokenizer: PreTrainedTokenizerBase,
                 config: ScorerConfig = ScorerConfig(), mesh: Mesh | None = None,
                 prompt_end: str = PROMPT_END, rules: Rules = rules.DECODE_RULES):
        self.tokenizer = tokenizer
        self.config = config
        self.mesh = mesh
        self.prompt_end = prompt_end
        self.rules = rules
        graphdef, self._state = sharding.split_placed(ppm, mesh, self.rules)
        self._graph = StaticGraph.of(graphdef)
        # Ways the rows split over the mesh: batches are padded to a multiple of it.
        self._row_shards = 1 if mesh is None else mesh.size // sharding.batch_sharding(
            mesh, self.rules, 1).shard_shape((mesh.size,))[0]

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` (`models.tokenizer.encode`: the rule PPM training follows), cut to
        `max_len` by dropping the start of the solution if needed."""
        (ids,), (offsets,) = encode(self.tokenizer, [text], offsets=True)
        max_len = self.config.max_len
        if len(ids) <= max_len:
            return ids
        split = text.find(self.prompt_end)
        split = 0 if split < 0 else split + len(self.prompt_end)
        head = sum(1 for start, _ in offsets if start < split)
        head = min(head, max_len // 2)
        return ids[:head] + ids[len(ids) - (max_len - head):]

    def score(self, texts: Sequence[str], *,
              progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(raw scores, search values tanh(raw / value_scale)), float32 [len(texts)], in order."""
        ids = [self.tokenize(t) for t in texts]
        if cut := sum(len(i) == self.config.max_len for i in ids):
            log.warning("PPM scorer: %d of %d texts reach max_len=%d tokens (longer ones lost the "
                        "start of their solution)", cut, len(texts), self.config.max_len)
        raw = np.zeros(len(texts), np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        size = 1 << (self.config.max_batch.bit_length() - 1)
        for start in tqdm(range(0, len(order), size), desc="score", disable=not progress):
            batch = order[start: start + size]
            width = bucket(max(len(ids[i]) for i in batch), self.config.min_bucket)
            rows = -(-bucket(len(batch)) // self._row_shards) * self._row_shards
            tokens = np.zeros((rows, width), np.int32)
            mask = np.zeros(tokens.shape, bool)
            for row, i in enumerate(batch):
                tokens[row, : len(ids[i])], mask[row, : len(ids[i])] = ids[i], True
            mask[len(batch):, 0] = True  # padding rows score a single pad token
            raw[batch] = jax.device_get(
                _raw_scores(self._graph, self._state, *self._place(tokens, mask)))[: len(batch)]
        return raw, search_value(raw, self.config.value_scale)

    def _place(self, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
        if self.mesh is None:
            return tuple(jnp.asarray(a) for a in arrays)
        rows = lambda a: sharding.batch_sharding(self.mesh, self.rules, a.ndim)
        return tuple(jax.device_put(a, rows(a)) for a in arrays)
