"""Batched PPM scoring of partial trajectories: raw scores and search values tanh(raw / scale).

Texts are sorted by length and scored in bucketed batches (rows and length padded to powers of
two), so a long run compiles a bounded number of programs.

A search scores every new node, and a node's text is its parent's plus one step. With a prefix
pool (`ScorerConfig.prefix_cache_rows`), the scorer keeps the PPM's KV cache of recently scored
texts in device rows, indexed on the host like the sampler's (`prefix_cache.PrefixIndex`): a text
runs only past the longest prefix a row holds, so a child prefills its step, not its whole path
(the tokens a score reads always run: its last, or with the "step_mean" readout its step's). Scores
with and without the pool agree to float rounding.

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
from rstar_jax.inference import decode
from rstar_jax.inference.prefix_cache import Placement, PrefixIndex, pack_suffixes
from rstar_jax.inference.static_graph import StaticGraph
from rstar_jax.models.decoder import KVCache, init_cache
from rstar_jax.models.ppm import ProcessRewardModel, search_value
from rstar_jax.models.tokenizer import encode
from rstar_jax.parallel import rules, sharding
from rstar_jax.parallel.rules import Rules, hashable
from rstar_jax import steps as sf
from rstar_jax.shapes import bucket

log = logging.getLogger(__name__)

# The end of the prompt template's header ("<|assistant|>: Let's think step by step and solve the
# problem with code."): where the solution part of a text starts.
PROMPT_END = sf.policy_prompt("").split("\n")[-1]


@functools.partial(jax.jit, static_argnums=0)
def _raw_scores(graph: StaticGraph, state: nnx.State, tokens_bt: jax.Array, mask_bt: jax.Array,
                step_bt: jax.Array) -> jax.Array:
    ppm = nnx.merge(graph.graphdef, state)
    positions_bt = jnp.broadcast_to(jnp.arange(tokens_bt.shape[1], dtype=jnp.int32),
                                    tokens_bt.shape)
    return ppm(tokens_bt, positions_bt, mask_bt, step_bt, deterministic=True)


@functools.partial(jax.jit, static_argnums=(0, 9), donate_argnums=2)
def _pooled_raw_scores(graph: StaticGraph, state: nnx.State, pool: KVCache, tokens_pt: jax.Array,
                       mask_pt: jax.Array, step_pt: jax.Array, start_p: jax.Array, source_p: jax.Array,
                       dest_p: jax.Array, view_len: int) -> tuple[jax.Array, KVCache]:
    """Raw scores of texts run past the first `start_p` tokens of pool rows `source_p`; each text's
    cache is stored in pool row `dest_p` (see `decode.prefill`)."""
    ppm = nnx.merge(graph.graphdef, state)
    h_ptd, _, pool = decode.prefill(ppm.backbone, pool, tokens_pt, mask_pt, start_p, source_p, dest_p,
                                    view_len, pool.k[0].dtype)
    return ppm.score_hidden(h_ptd, mask_pt, step_pt), pool


class PPMScorer:
    """Scores texts with a `ProcessRewardModel`, on one device or a mesh (batch split over the
    data axes, parameters over 'tensor' by `rules`, default `parallel.rules.DECODE_RULES`).
    `counts` sums the text tokens run and those reused from the prefix pool."""

    def __init__(self, ppm: ProcessRewardModel, tokenizer: PreTrainedTokenizerBase,
                 config: ScorerConfig = ScorerConfig(), mesh: Mesh | None = None,
                 prompt_end: str = PROMPT_END, rules: Rules = rules.DECODE_RULES):
        self.tokenizer = tokenizer
        self.config = config
        self.mesh = mesh
        self.prompt_end = prompt_end
        self.rules = hashable(rules)  # the compiled pool maker is cached by it
        self._model_config = ppm.backbone.config
        self.readout = ppm.ppm_config.readout
        graphdef, self._state = sharding.split_placed(ppm, mesh, self.rules)
        self._graph = StaticGraph.of(graphdef)
        # Ways the rows split over the mesh: batches are padded to a multiple of it.
        self._row_shards = 1 if mesh is None else mesh.size // sharding.batch_sharding(
            mesh, self.rules, 1).shard_shape((mesh.size,))[0]
        self._max_rows = 1 << (config.max_batch.bit_length() - 1)  # texts per forward
        if config.prefix_cache_rows and config.prefix_cache_rows < self._max_rows:
            raise ValueError(f"ScorerConfig.prefix_cache_rows={config.prefix_cache_rows}: need 0 (off) or "
                             f">= max_batch rounded down to a power of two ({self._max_rows})")
        self.forget_prefixes()
        self.counts = {"prefill_tokens": 0, "reused_tokens": 0}

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` (`models.tokenizer.encode`: the rule PPM training follows), cut to
        `max_len` by dropping the start of the solution if needed."""
        return self._encode(text, len(text))[0]

    def score(self, texts: Sequence[str], step_starts: Sequence[int] | None = None, *,
              progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(raw scores, search values tanh(raw / value_scale)), float32 [len(texts)], in order.

        Each text ends with the step it scores; `step_starts[i]` is where in `texts[i]` that step
        begins, which the PPM's "step_mean" readout needs (the "last" readout reads the last token).
        """
        if step_starts is None:
            if self.readout != "last":
                raise ValueError(f"a PPM with readout {self.readout!r} scores steps: pass step_starts")
            step_starts = [len(t) for t in texts]
        rows = [self._encode(t, start) for t, start in zip(texts, step_starts, strict=True)]
        if cut := sum(len(ids) == self.config.max_len for ids, _ in rows):
            log.warning("PPM scorer: %d of %d texts reach max_len=%d tokens (longer ones lost the "
                        "start of their solution)", cut, len(texts), self.config.max_len)
        raw = np.zeros(len(texts), np.float32)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        for start in tqdm(range(0, len(order), self._max_rows), desc="score", disable=not progress):
            batch = order[start: start + self._max_rows]
            raw[batch] = self._score_batch([rows[i] for i in batch])
        return raw, search_value(raw, self.config.value_scale)

    def _encode(self, text: str, step_start: int) -> tuple[list[int], int]:
        """`text`'s token ids (cut as `tokenize` says) and how many of the last ones the score reads:
        the last token ("last" readout), or those of the step from `step_start` on (at least one)."""
        if not 0 <= step_start <= len(text):
            raise ValueError(f"step start {step_start} is outside its text of {len(text)} characters")
        (ids,), (offsets,) = encode(self.tokenizer, [text], offsets=True)
        # A token that spans the step's start counts as the step's (training tokenizes it apart).
        read = 1 if self.readout == "last" else max(1, sum(1 for _, end in offsets if end > step_start))
        max_len = self.config.max_len
        if len(ids) > max_len:
            split = text.find(self.prompt_end)
            split = 0 if split < 0 else split + len(self.prompt_end)
            head = min(sum(1 for start, _ in offsets if start < split), max_len // 2)
            ids = ids[:head] + ids[len(ids) - (max_len - head):]
            read = min(read, max_len - head)  # what is left of a step longer than the kept end
        return ids, min(read, len(ids))

    def _score_batch(self, rows: list[tuple[list[int], int]]) -> np.ndarray:
        """Raw scores of one batch of (token ids, tokens read) rows: one forward, past what the pool
        (if any) holds."""
        token_rows = [ids for ids, _ in rows]
        padded_rows = -(-bucket(len(rows)) // self._row_shards) * self._row_shards
        if self._prefix_index is None:
            placed = [Placement(0, 0, 0)] * len(rows)
        else:  # the tokens a score reads are never reused: their hidden states are the score
            placed = self._prefix_index.place(token_rows, [len(ids) - read for ids, read in rows])
            if self._pool is None:
                self._pool = decode.on_device(init_cache, self._model_config, self.config.prefix_cache_rows,
                                              self.config.max_len, self.mesh, self.rules)()
        packed = pack_suffixes(token_rows, placed, padded_rows, self.config.min_bucket, self.config.max_len,
                               self.config.prefix_cache_rows)
        self.counts["prefill_tokens"] += int(packed.mask.sum())
        self.counts["reused_tokens"] += int(packed.start.sum())
        read_mask = np.zeros_like(packed.mask)
        for r, ((ids, read), start) in enumerate(zip(rows, packed.start)):
            read_mask[r, len(ids) - start - read: len(ids) - start] = True
        packed.mask[len(rows):, 0] = read_mask[len(rows):, 0] = True  # padding rows score a single pad token
        if self._prefix_index is None:
            raw = _raw_scores(self._graph, self._state, *self._place(packed.tokens, packed.mask, read_mask))
        else:
            try:
                raw, self._pool = _pooled_raw_scores(self._graph, self._state, self._pool, *self._place(
                    packed.tokens, packed.mask, read_mask, packed.start, packed.source, packed.dest),
                    packed.view_len)
            except Exception:  # the pool was donated and the index already updated: start both afresh
                self.forget_prefixes()
                raise
        return jax.device_get(raw)[: len(rows)]

    def forget_prefixes(self) -> None:
        """Keeps no prefix: a fresh index, the device pool made on the next batch (none when off).
        What runs next computes what a new instance would, to the bit (reuse moves float roundings)."""
        rows = self.config.prefix_cache_rows
        self._prefix_index = PrefixIndex(rows, self.config.max_len) if rows else None
        self._pool: KVCache | None = None

    def _place(self, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
        if self.mesh is None:
            return tuple(jnp.asarray(a) for a in arrays)
        rows = lambda a: sharding.batch_sharding(self.mesh, self.rules, a.ndim)
        return tuple(jax.device_put(a, rows(a)) for a in arrays)
