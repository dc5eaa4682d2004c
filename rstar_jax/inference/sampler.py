"""Batched sampling of K completions per prompt, with stop strings and continuous batching.

The host keeps a queue of (prompt, sample) rows and B decoding slots. It fills free slots with
queued rows (`decode.refill`: each distinct prompt prefilled once, past the prefix it shares with
a prompt kept in the prefix pool if there is one, its cache forked into its slots), runs a jitted
chunk of decode steps (`decode.decode_chunk`), then detokenises the new tokens, matches stop
strings and retires finished rows, whose slots take the next queued rows.
Every call decodes through the same slots (`max_batch` rows of `max_len` tokens: what the planner
budgets), prompts per refill and their length are bucketed to powers of two, and the cache prefix a
chunk attends over to four sizes per power of two, so a long run compiles few programs.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from rstar_jax.config import SamplerConfig, SamplingConfig
from rstar_jax.inference import decode
from rstar_jax.inference.prefix_cache import Placement, PrefixIndex, pack_suffixes
from rstar_jax.inference.sampling import SamplingParams
from rstar_jax.inference.static_graph import StaticGraph
from rstar_jax.inference.text import RowText, finish_table, token_texts
from rstar_jax.models.decoder import KVCache, init_cache
from rstar_jax.models.tokenizer import encode
from rstar_jax.parallel import rules, sharding
from rstar_jax.parallel.rules import Rules, hashable
from rstar_jax.shapes import bucket

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Completion:
    """One sampled continuation. `text` keeps a matched stop string (rStar re-appends it anyway)
    and excludes the end-of-sequence token, which `token_ids` keeps; `logprob_sum` is the model's
    log-probability of `token_ids` (before temperature and filtering). A prompt that leaves no
    room in `SamplerConfig.max_len` gets empty completions with finish_reason "length", as vLLM
    answers a prompt over `max_model_len` (a warning and an ignored, "length"-finished request)."""

    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "eos", "length"]
    logprob_sum: float
    stop_string: str | None = None


@dataclasses.dataclass
class _Row:
    """Host bookkeeping of a row in flight."""

    prompt: int
    sample: int
    budget: int
    text: RowText
    cache_start: int  # cache slot of the row's first decode step (its prompt's length - 1)
    token_ids: list[int] = dataclasses.field(default_factory=list)
    logprob_sum: float = 0.0

    @property
    def cache_index(self) -> int:
        """Cache slot of the row's next decode step."""
        return self.cache_start + len(self.token_ids)

    def extend(self, tokens: Sequence[int], logprobs: Sequence[float],
               eos_ids: frozenset[int]) -> Completion | None:
        """Takes a chunk's tokens; returns the finished completion if the row ends among them
        (at a stop string, an end-of-sequence token or its budget; whichever comes first)."""
        eos_at = next((i for i, token in enumerate(tokens) if token in eos_ids), len(tokens))
        room = self.budget - len(self.token_ids)
        text_tokens = tokens[:min(eos_at, room)]
        stop, used = self.text.extend(text_tokens)
        if stop is not None:
            reason = "stop"
        elif eos_at < min(len(tokens), room):
            reason, used = "eos", eos_at + 1
        elif used == room:
            reason = "length"
        else:
            reason = None
        self.token_ids += tokens[:used]
        self.logprob_sum += float(sum(logprobs[:used]))
        if reason is None:
            return None
        if stop is None:
            self.text.flush()
        return Completion(self.text.text, self.token_ids, reason, self.logprob_sum, stop)

    def ended_on_device(self) -> Completion:
        """The row's last token (device table) holds a stop that the stream has not shown yet."""
        stop = self.text.stop_in_full_text()
        if stop is None:
            raise RuntimeError("sampler: a row ended on device on a stop token, but its text has "
                               "no stop string (stop table and decoding disagree)")
        return Completion(self.text.text, self.token_ids, "stop", self.logprob_sum, stop)


class Sampler:
    """Samples completions from a decoder (`models.decoder.Decoder`) on one device or a mesh.

    With a mesh, parameters are placed by `rules` (default `parallel.rules.DECODE_RULES`: tensor
    parallel) and the decoding slots are split over the batch axes (data parallel); the code path
    is the same. On several hosts, give each host a mesh of its local devices and its own prompts.
    The parameters are taken at construction: build a new Sampler after training the model further.
    `counts` sums the prompt tokens prefilled and those reused from the prefix pool.
    """

    def __init__(self, model: nnx.Module, tokenizer: PreTrainedTokenizerBase,
                 config: SamplerConfig = SamplerConfig(), mesh: Mesh | None = None,
                 rules: Rules = rules.DECODE_RULES):
        self.model_config = model.config
        self.rules = hashable(rules)  # the compiled slot makers are cached by it
        self.tokenizer = tokenizer
        self.config = config
        self.mesh = mesh
        graphdef, self._state = sharding.split_placed(model, mesh, self.rules)
        self._graph = StaticGraph.of(graphdef)
        # The model's config may list several end-of-sequence ids (Llama 3: end of text, turn, call).
        self._eos_ids = frozenset(
            i for ids in (tokenizer.eos_token_id, model.config.eos_token_id) if ids is not None
            for i in (ids if isinstance(ids, (tuple, list)) else (ids,)))
        self._token_texts: list[str] | None = None
        self._finish_tables: dict[tuple[str, ...], jax.Array] = {}
        self._max_slots = 1 << (config.max_batch.bit_length() - 1)  # max_batch, as a power of two
        if config.prefix_cache_rows and config.prefix_cache_rows < self._max_slots:
            raise ValueError(f"SamplerConfig.prefix_cache_rows={config.prefix_cache_rows}: need 0 (off) or "
                             f">= max_batch rounded down to a power of two ({self._max_slots})")
        self.forget_prefixes()
        self.counts = {"prefill_tokens": 0, "reused_tokens": 0}

    def sample(self, prompts: Sequence[str], num_samples: int = 1, sampling: SamplingConfig = SamplingConfig(),
               *, seed: int = 0, progress: bool = False,
               streams: Sequence[int] | None = None) -> list[list[Completion]]:
        """`num_samples` completions of each prompt, in prompt order, sampled as `sampling` says.

        A completion ends at the first of `sampling.stop` (kept in its text), at an end-of-sequence
        token, or after `sampling.max_new_tokens` (fewer if the prompt leaves less room in
        `config.max_len`; none left: an empty completion, finish_reason "length"). Prompts are
        tokenized by `models.tokenizer.encode`, the rule training follows (the tokenizer's BOS, if
        any). Temperature 0 is greedy (all samples of a prompt are then the same one). Sample j of
        prompt i depends only on (seed, i, j), not on batch composition or slot; `streams[i]`, if
        given, replaces i there (e.g. a prompt's index in a list that hosts split between them, or
        `data.problems.stream_id` of its problem).
        """
        max_new_tokens, stop = sampling.max_new_tokens, sampling.stop
        if num_samples < 1 or max_new_tokens < 1:
            raise ValueError(f"sample: need num_samples >= 1 and max_new_tokens >= 1, got "
                             f"{num_samples} and {max_new_tokens}")
        if any(not s for s in stop):
            raise ValueError(f"sample: stop strings must be non-empty, got {list(stop)}")
        params = SamplingParams.make(sampling.temperature, sampling.top_k, sampling.top_p)
        if not prompts:
            return []
        prompt_ids = encode(self.tokenizer, prompts)
        budgets = []  # 0: no room left in max_len, nothing is generated
        for i, ids in enumerate(prompt_ids):
            if not ids:
                raise ValueError(f"sample: prompt {i} has no tokens")
            budgets.append(max(0, min(max_new_tokens, self.config.max_len - len(ids))))
        if full := [i for i, budget in enumerate(budgets) if not budget]:
            log.warning("sample: %d of %d prompts have no room left in max_len=%d tokens (prompt %d "
                        "has %d); their completions are empty (finish 'length')", len(full),
                        len(prompts), self.config.max_len, full[0], len(prompt_ids[full[0]]))
        distinct = 1 if sampling.temperature == 0 else num_samples
        if streams is not None and len(streams) != len(prompts):
            raise ValueError(f"sample: {len(streams)} streams for {len(prompts)} prompts")
        self._streams = list(range(len(prompts))) if streams is None else [int(s) for s in streams]
        rows = self._run(prompt_ids, budgets, distinct, tuple(stop), params, seed, progress)
        return [[rows[i, j % distinct] if budgets[i] else Completion("", [], "length", 0.0)
                 for j in range(num_samples)] for i in range(len(prompts))]

    def _finish_table(self, stops: tuple[str, ...]) -> jax.Array:
        if stops not in self._finish_tables:
            if self._token_texts is None and stops:
                self._token_texts = token_texts(self.tokenizer)
            table = finish_table(self._token_texts or [], stops, sorted(self._eos_ids),
                                 self.model_config.vocab_size)
            self._finish_tables[stops] = jnp.asarray(table)
        return self._finish_tables[stops]

    def _run(self, prompt_ids: list[list[int]], budgets: list[int], num_samples: int,
             stops: tuple[str, ...], params: SamplingParams, seed: int,
             progress: bool) -> dict[tuple[int, int], Completion]:
        """Decodes every (prompt, sample) row through the slots; returns completions by row."""
        cfg = self.config
        queue = collections.deque(
            (i, j) for i in range(len(prompt_ids)) if budgets[i] for j in range(num_samples))
        if not queue:
            return {}
        # One slot shape for every call, however few its rows: a chunk computes over the cache
        # slots its rows reach (its view), so room for the longest row costs memory only, and
        # idle slots cost less than compiling programs for each smaller batch (a CPU-default
        # round 1 compiled 139 refill and decode programs in 155 s with bucketed slots, 57 in 52 s).
        num_slots, max_len = self._max_slots, bucket(cfg.max_len)
        slots = self._new_slots(num_slots, max_len)
        finish_v = self._finish_table(stops)
        live: dict[int, _Row] = {}
        retire = np.zeros(num_slots, bool)  # finished on the host, still running on device
        done: dict[tuple[int, int], Completion] = {}
        bar = tqdm(total=len(queue), desc="sample", unit="completion", disable=not progress)

        def read_back(chunk: decode.Chunk) -> None:
            """Hands a chunk's tokens to the live rows; retires the rows that finished."""
            tokens_bn, logprobs_bn, device_done_b = jax.device_get(
                (chunk.tokens_bn, chunk.logprobs_bn, chunk.done_b))
            for b, row in list(live.items()):
                generated = tokens_bn[b][tokens_bn[b] >= 0].tolist()  # -1: done before that step
                completion = row.extend(generated, logprobs_bn[b][: len(generated)], self._eos_ids)
                if completion is None and device_done_b[b]:
                    completion = row.ended_on_device()
                if completion is not None:
                    done[row.prompt, row.sample] = completion
                    del live[b]
                    retire[b] = not device_done_b[b]
                    bar.update()

        # With nothing queued, the next chunk is dispatched before the last one is read back, so
        # the host's text work overlaps the device's decoding (a row the host finishes meanwhile
        # runs one chunk more, its tokens unread). Queued work waits for the slots a chunk frees.
        pending = None  # a dispatched chunk not read back yet
        while queue or live:
            if pending is not None and all(
                    row.budget - len(row.token_ids) <= cfg.chunk_tokens for row in live.values()):
                read_back(pending)  # every row ends within it: nothing left to dispatch
                pending = None
                continue
            free = [b for b in range(num_slots) if b not in live]
            if queue and free:
                work = [queue.popleft() for _ in range(min(len(free), len(queue)))]
                slots = self._refill(slots, free, work, prompt_ids, budgets, seed)
                for b, (i, j) in zip(free, work):
                    live[b] = _Row(i, j, budgets[i], RowText(self.tokenizer, prompt_ids[i], stops),
                                   len(prompt_ids[i]) - 1)
                    retire[b] = False
            min_done = max(1, int(num_slots * cfg.refill_fraction)) if queue else num_slots
            # The rows may advance chunk_tokens slots in this chunk, and as many in the pending one.
            # Attention reads every slot of the view: four sizes per doubling keep it near `reach`.
            reach = (max(row.cache_index for row in live.values())
                     + cfg.chunk_tokens * (1 + (pending is not None)))
            slots, chunk = decode.decode_chunk(
                self._graph, self._state, slots, params, finish_v, jnp.asarray(retire),
                jnp.int32(min_done), cfg.chunk_tokens, min(bucket(reach, per_doubling=4), max_len))
            retire = np.zeros(num_slots, bool)  # a new array: the device may still read the old
            if pending is not None:
                read_back(pending)
            pending = chunk
            if queue:
                read_back(chunk)
                pending = None
        bar.close()
        return done

    def _refill(self, slots: decode.Slots, free: list[int], work: list[tuple[int, int]],
                prompt_ids: list[list[int]], budgets: list[int], seed: int) -> decode.Slots:
        """Puts queued rows into free slots, prefilling each distinct prompt once: only what the
        prefix pool (if any) does not hold of it."""
        distinct = list(dict.fromkeys(i for i, _ in work))
        prefixes = [prompt_ids[i][:-1] for i in distinct]  # a prompt's last token is decoded
        if self._prefix_index is None:
            placed = [Placement(0, 0, 0)] * len(distinct)
        else:
            placed = self._prefix_index.place(prefixes)
            if self._pool is None:
                self._pool = self._new_cache(self.config.prefix_cache_rows, self.config.max_len)
        prompts = bucket(len(distinct))
        packed = pack_suffixes(prefixes, placed, prompts, self.config.min_prompt_bucket, self.config.max_len,
                               self.config.prefix_cache_rows)
        self.counts["prefill_tokens"] += int(packed.mask.sum())
        self.counts["reused_tokens"] += int(packed.start.sum())
        # Always one entry per slot (the rest dropped): refill compiles per prompt bucket only.
        size = slots.done_b.shape[0]
        pad = lambda values, fill: np.array(values + [fill] * (size - len(values)), np.int32)
        row_of = {i: p for p, i in enumerate(distinct)}
        new = decode.Refill(
            # Split by batch, the prompts are prefilled data parallel, each once (replicated when
            # their count does not split evenly).
            tokens_pt=self._put(packed.tokens), mask_pt=self._put(packed.mask), start_p=self._put(packed.start),
            source_p=self._put(packed.source), dest_p=self._put(packed.dest),
            slot_r=pad(free[: len(work)], size),
            prompt_r=pad([row_of[i] for i, _ in work], 0),
            last_token_r=pad([prompt_ids[i][-1] for i, _ in work], 0),
            position_r=pad([len(prompt_ids[i]) - 1 for i, _ in work], 0),
            stream_r=np.array([[self._streams[i], j] for i, j in work]
                              + [[0, 0]] * (size - len(work)), np.int32),
            budget_r=pad([budgets[i] for i, _ in work], 0),
            seed_key=jax.random.key(seed))
        try:
            slots, self._pool = decode.refill(self._graph, self._state, slots, self._pool, new, packed.view_len)
        except Exception:  # the pool was donated and the index already updated: start both afresh
            self.forget_prefixes()
            raise
        return slots

    def forget_prefixes(self) -> None:
        """Keeps no prefix: a fresh index, the device pool made on the next refill (none when off).
        What runs next computes what a new instance would, to the bit (reuse moves float roundings)."""
        rows = self.config.prefix_cache_rows
        self._prefix_index = PrefixIndex(rows, self.config.max_len) if rows else None
        self._pool: KVCache | None = None

    def _sharding(self, shape: tuple[int, ...],
                  axes: tuple[str | None, ...] | None = None) -> NamedSharding | None:
        """Placement on the mesh of an array whose dimensions carry logical `axes` (default: the
        first is batch); None without a mesh."""
        return decode.placement(self.mesh, self.rules, shape, axes)

    def _put(self, x: np.ndarray) -> jax.Array | np.ndarray:
        """`x` split by batch over the mesh (unchanged without one)."""
        return x if self.mesh is None else jax.device_put(x, self._sharding(x.shape))

    def _new_slots(self, num_slots: int, max_len: int) -> decode.Slots:
        """Empty decoding slots (see `decode.on_device`)."""
        return decode.on_device(decode.init_slots, self.model_config, num_slots, max_len, self.mesh, self.rules)()

    def _new_cache(self, rows: int, length: int) -> KVCache:
        """An empty KV cache, the prefix pool's (see `decode.on_device`)."""
        return decode.on_device(init_cache, self.model_config, rows, length, self.mesh, self.rules)()
