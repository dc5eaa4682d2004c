"""Host index of the sampler's prefix pool: which prompt prefix each pool row's KV cache holds.

A tree search asks again and again for prompts that extend earlier ones: a child's prompt is its
parent's plus one step. The sampler keeps the prefilled KV of recent prompts in a fixed pool of
device rows (`decode.refill` reads and writes it); this index finds, for a new prompt, the row
sharing its longest token prefix, so only the rest is prefilled, and picks the rows new prompts
are stored in. Memory stays bounded: the least recently used row is overwritten first. A prompt
that extends a row's whole prefix (a child of that row's prompt) takes that row over instead; its
own prefix still serves the row's other children. `pack_suffixes` lays out what a prefill then
computes. The PPM scorer keeps a pool of its own the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from rstar_jax.shapes import bucket


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one prompt's cache comes from and goes to: it reuses the first `reused` tokens of
    pool row `source` (0 tokens: none) and is stored in pool row `dest`."""

    source: int
    reused: int
    dest: int


class PrefixIndex:
    """Token prefixes of `rows` pool rows of up to `length` tokens each."""

    def __init__(self, rows: int, length: int):
        if rows < 1:
            raise ValueError(f"PrefixIndex: need at least one row, got {rows}")
        self.tokens = np.full((rows, length), -1, np.int64)  # -1 past a row's prefix: never matches
        self.lengths = np.zeros(rows, np.int64)
        self.last_use = np.zeros(rows, np.int64)
        self._clock = 0

    @property
    def length(self) -> int:
        return self.tokens.shape[1]

    def place(self, prefixes: Sequence[Sequence[int]], limits: Sequence[int] | None = None) -> list[Placement]:
        """Reuse sources and storage rows for the cached prefixes of one refill: distinct prompts,
        each as its pool row will hold it (a sampler prompt without its last token, which the
        sampler runs in any case), each at most `length` tokens. `limits[i]`, if given, caps the
        tokens prompt i reuses (a PPM score's text reuses none of the tokens the score reads).
        Sources are read before any row is written, so a prompt may take over the row it reuses."""
        if len(prefixes) > len(self.lengths):
            raise ValueError(f"PrefixIndex: {len(prefixes)} prompts in one refill, only "
                             f"{len(self.lengths)} pool rows")
        self._clock += 1
        placements, claimed = [], np.zeros(len(self.lengths), bool)
        limits = [self.length] * len(prefixes) if limits is None else limits
        for ids, limit in zip(prefixes, limits, strict=True):
            source, matched = self._longest_match(ids)
            reused = min(matched, limit)
            if reused:
                self.last_use[source] = self._clock
            if matched and matched == self.lengths[source] and not claimed[source]:
                dest = source  # a child of the row's prompt: the row's prefix lives on in it
            else:
                dest = int(np.argmin(np.where(claimed, np.iinfo(np.int64).max, self.last_use)))
            claimed[dest] = True
            placements.append(Placement(source, reused, dest))
        for ids, p in zip(prefixes, placements):
            self.tokens[p.dest] = -1
            self.tokens[p.dest, :len(ids)] = ids
            self.lengths[p.dest] = len(ids)
            self.last_use[p.dest] = self._clock
        return placements

    def _longest_match(self, ids: Sequence[int]) -> tuple[int, int]:
        """(row, tokens) of the row sharing the longest prefix with `ids`."""
        n = len(ids)
        if n == 0:
            return 0, 0
        equal = self.tokens[:, :n] == np.asarray(ids)
        shared = np.where(equal.all(axis=1), n, equal.argmin(axis=1))
        row = int(np.argmax(shared))
        return row, int(shared[row])


@dataclasses.dataclass(frozen=True)
class PackedPrefill:
    """What one prefill computes, as `rows` right-padded rows: each token row past the tokens its
    pool row holds (`start`), from pool row `source`, stored in pool row `dest` (padding rows: the
    pool's row count, out of range, so their stores are dropped); `view_len` cache slots seen."""

    tokens: np.ndarray  # int32[rows, width]
    mask: np.ndarray  # bool[rows, width]
    start: np.ndarray  # int32[rows]
    source: np.ndarray  # int32[rows]
    dest: np.ndarray  # int32[rows]
    view_len: int


def pack_suffixes(token_rows: Sequence[Sequence[int]], placed: Sequence[Placement], rows: int, min_bucket: int,
                  max_len: int, pool_rows: int) -> PackedPrefill:
    """Lays out one prefill of `token_rows` placed by `PrefixIndex.place` (all `Placement(0, 0, 0)`
    without a pool of `pool_rows`) in `rows` rows of a power-of-two width >= `min_bucket`. The
    prefill sees `view_len` cache slots: the longest row's, bucketed (at least the width, at most
    `max_len`'s bucket). A row whose reused prefix ends past `view_len - width` gives up its last
    reused tokens and prefills them in its padding instead: the same prefill shape, and a view never
    longer than without reuse."""
    start = [p.reused for p in placed]
    width = bucket(max(len(ids) - s for ids, s in zip(token_rows, start)), min_bucket)
    view_len = min(bucket(max(max(map(len, token_rows)), width)), bucket(max_len))
    start = [min(s, view_len - width) for s in start]
    tokens = np.zeros((rows, width), np.int32)
    mask = np.zeros(tokens.shape, bool)
    for r, (ids, s) in enumerate(zip(token_rows, start)):
        tokens[r, :len(ids) - s], mask[r, :len(ids) - s] = ids[s:], True
    pad = lambda values, fill: np.array(list(values) + [fill] * (rows - len(values)), np.int32)
    return PackedPrefill(tokens, mask, pad(start, 0), pad([p.source for p in placed], 0),
                         pad([p.dest for p in placed], pool_rows), view_len)
