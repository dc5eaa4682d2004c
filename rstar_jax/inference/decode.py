"""Device side of the sampler: B decoding slots over one KV cache, refilled and advanced by jit.

A slot holds one (prompt, sample) row. `refill` prefills a batch of distinct prompts once and
copies each prompt's cache rows into every slot that samples from it (the fork). `decode_chunk`
then runs up to `num_steps` decode steps for all slots inside one `lax.while_loop`, so Python never
runs per token; it hands back to the host early once `min_done` rows have finished, so finished
slots can take queued work (continuous batching). A chunk works on the cache's first `view_len`
slots only, the ones its live rows can reach: a decode step reads every cache slot it attends
over, which makes attention the memory-bound part of a step. A row finishes on device when it
emits an end-of-sequence token, a token whose text contains a stop string, or reaches its token
budget; stop strings spanning several tokens are found on the host, which then retires the row.

Prompt `p` of length n is prefilled without its last token (slots 0..n-2, padding masked); that
token is the first decode input at position n-1, so every generated token, including the first,
comes from the same decode step and the same per-row random stream.

With a prefix pool (a KVCache of recently prefilled prompts, indexed on the host by
`prefix_cache.PrefixIndex`), a prompt starts from the pool row sharing its longest prefix and
prefills only the rest; each prefilled prompt is then stored in its pool row for later prompts.
`prefill` is that step alone; the PPM scorer runs its texts through it over a pool of its own.
`on_device` makes the slots and pools already placed on a mesh.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding

from rstar_jax.config import ModelConfig
from rstar_jax.inference.sampling import SamplingParams, next_tokens
from rstar_jax.inference.static_graph import StaticGraph
from rstar_jax.models.decoder import K_AXES, V_AXES, KVCache, init_cache
from rstar_jax.parallel import sharding
from rstar_jax.parallel.rules import Rules


@struct.dataclass
class Slots:
    """Decoding state of B rows: the KV cache plus each row's next input and bookkeeping."""

    cache: KVCache
    token_b: jax.Array  # int32[B]: input of the next step (last token so far)
    position_b: jax.Array  # int32[B]: its position
    key_b: jax.Array  # PRNG keys [B]: row r's token i uses fold_in(key_b[r], i)
    step_b: jax.Array  # int32[B]: tokens generated so far
    budget_b: jax.Array  # int32[B]: tokens the row may generate
    done_b: jax.Array  # bool[B]: finished or empty


def init_slots(config: ModelConfig, batch: int, max_len: int) -> Slots:
    """`batch` empty (done) slots with room for `max_len` tokens each."""
    zeros = lambda: jnp.zeros((batch,), jnp.int32)  # distinct buffers: the slots are donated
    return Slots(cache=init_cache(config, batch, max_len), token_b=zeros(), position_b=zeros(),
                 key_b=jax.random.split(jax.random.key(0), batch), step_b=zeros(), budget_b=zeros(),
                 done_b=jnp.ones((batch,), bool))


@struct.dataclass
class Refill:
    """New work: P prompts (the part of each, up to its last token, that the prefix pool does not
    hold; right-padded) and R slots to fill from them.

    Entries of `slot_r` equal to B (out of range) are padding and are dropped; so are entries of
    `dest_p` past the pool's rows.
    """

    tokens_pt: jax.Array  # int32[P, T]: the prompt's tokens from `start_p` on
    mask_pt: jax.Array  # bool[P, T]
    start_p: jax.Array  # int32[P]: tokens taken from pool row `source_p` (0 without a pool)
    source_p: jax.Array  # int32[P]
    dest_p: jax.Array  # int32[P]: pool row that stores the prefilled prompt
    slot_r: jax.Array  # int32[R]: slot to fill
    prompt_r: jax.Array  # int32[R]: row of tokens_pt it samples from
    last_token_r: jax.Array  # int32[R]: the prompt's last token
    position_r: jax.Array  # int32[R]: its position (prompt length - 1), also its first cache slot
    stream_r: jax.Array  # int32[R, 2]: (the prompt's stream, sample index) naming the row's random stream
    budget_r: jax.Array  # int32[R]
    seed_key: jax.Array  # PRNG key of the sample() call


def _resize(x: jax.Array, axis: int, n: int) -> jax.Array:
    """`x` cut or zero-padded to n entries along `axis`."""
    if x.shape[axis] >= n:
        return jax.lax.slice_in_dim(x, 0, n, axis=axis)
    return jnp.pad(x, [(0, n - x.shape[axis]) if a == axis else (0, 0) for a in range(x.ndim)])


def prefill(model: nnx.Module, pool: KVCache | None, tokens_pt: jax.Array, mask_pt: jax.Array,
            start_p: jax.Array, source_p: jax.Array, dest_p: jax.Array, view_len: int,
            dtype: jnp.dtype) -> tuple[jax.Array, KVCache, KVCache | None]:
    """Runs P right-padded token rows after the first `start_p` cache slots of pool rows
    `source_p` (after nothing without a pool) and stores each row's cache into pool row `dest_p`
    (rows past the pool's are dropped). Returns the final-norm hidden states [P, T, D], the rows'
    cache of `view_len` slots and the pool. `dtype`: the cache's, made fresh without a pool."""
    p, t = tokens_pt.shape
    if pool is None:
        cache = init_cache(model.config, p, view_len, dtype).replace(index_b=start_p)
    else:  # each row's pool row; a stored row has no padding, so its first start_p slots are valid
        shared = min(view_len, pool.max_len)  # pool slots the prefill can see, and store

        def take(axes, layer):  # the source rows' first `shared` slots, as `view_len` slots
            length = axes.index("length")
            return _resize(_resize(layer, length, shared)[source_p], length, view_len)

        cache = KVCache(k=tuple(take(K_AXES, k) for k in pool.k),
                        v=tuple(take(V_AXES, v) for v in pool.v),
                        valid_bs=jnp.arange(view_len) < start_p[:, None],
                        index_b=start_p)
    positions_pt = start_p[:, None] + jnp.arange(t, dtype=jnp.int32)
    h_ptd, cache = model.hidden_states(tokens_pt, positions_pt, attention_mask_bt=mask_pt, cache=cache)
    if pool is not None:
        def store(axes, old, layer):  # the rows into their pool rows' first `shared` slots
            at = (dest_p,) + tuple(slice(None, shared if a == "length" else None) for a in axes[1:])
            return old.at[at].set(_resize(layer, axes.index("length"), shared), mode="drop")

        # Which slots of a row hold its tokens is the host index's to know (a prefix of them), so
        # the pool's valid_bs and index_b stay as made; slots past them keep stale values.
        pool = pool.replace(k=tuple(store(K_AXES, *layers) for layers in zip(pool.k, cache.k)),
                            v=tuple(store(V_AXES, *layers) for layers in zip(pool.v, cache.v)))
    return h_ptd, cache, pool


@functools.partial(jax.jit, static_argnums=(0, 5), donate_argnums=(2, 3))
def refill(graph: StaticGraph, state: nnx.State, slots: Slots, pool: KVCache | None,
           new: Refill, view_len: int) -> tuple[Slots, KVCache | None]:
    """Prefills each new prompt once (past the prefix it reuses from the pool), stores it in the
    pool, and forks its cache rows into the slots that sample from it.

    view_len: cache slots of the prefill, >= start_p + T of every prompt.
    """
    model = nnx.merge(graph.graphdef, state)
    _, cache, pool = prefill(model, pool, new.tokens_pt, new.mask_pt, new.start_p, new.source_p, new.dest_p,
                             view_len, slots.cache.k[0].dtype)
    old = slots.cache
    n = min(view_len, old.max_len)  # a row's tokens all lie below its position (< old.max_len)
    valid_rs = _resize(cache.valid_bs[new.prompt_r], 1, old.max_len)

    def fork(axes, old_layer, new_layer):  # the prompts' slots into their sample rows
        at = (new.slot_r,) + tuple(slice(None, n if a == "length" else None) for a in axes[1:])
        rows = jax.lax.slice_in_dim(new_layer[new.prompt_r], 0, n, axis=axes.index("length"))
        return old_layer.at[at].set(rows, mode="drop")

    forked = KVCache(
        k=tuple(fork(K_AXES, *layers) for layers in zip(old.k, cache.k)),
        v=tuple(fork(V_AXES, *layers) for layers in zip(old.v, cache.v)),
        valid_bs=old.valid_bs.at[new.slot_r].set(valid_rs, mode="drop"),
        index_b=old.index_b.at[new.slot_r].set(new.position_r, mode="drop"))
    # A row's samples depend only on (seed, prompt, sample), not on its slot or batch-mates.
    key_r = jax.vmap(lambda s: jax.random.fold_in(jax.random.fold_in(new.seed_key, s[0]), s[1]))(
        new.stream_r)
    put = lambda x, v: x.at[new.slot_r].set(v, mode="drop")
    slots = Slots(cache=forked, token_b=put(slots.token_b, new.last_token_r),
                  position_b=put(slots.position_b, new.position_r), key_b=put(slots.key_b, key_r),
                  step_b=put(slots.step_b, 0), budget_b=put(slots.budget_b, new.budget_r),
                  done_b=put(slots.done_b, False))
    return slots, pool


@struct.dataclass
class Chunk:
    """Tokens of one decode chunk; -1 where a row was already done at that step."""

    tokens_bn: jax.Array  # int32[B, N]
    logprobs_bn: jax.Array  # f32[B, N]
    done_b: jax.Array  # bool[B] after the chunk


def _prefix(cache: KVCache, n: int) -> KVCache:
    """The cache's first n slots of every row, as a cache of length n."""
    return KVCache(k=tuple(k[..., :n] for k in cache.k), v=tuple(v[:, :, :n] for v in cache.v),
                   valid_bs=cache.valid_bs[:, :n], index_b=cache.index_b)


def _put_prefix(cache: KVCache, prefix: KVCache) -> KVCache:
    """`cache` with its first slots replaced by `prefix` (in place when `cache` is donated)."""
    n = prefix.max_len
    return KVCache(k=tuple(k.at[..., :n].set(p) for k, p in zip(cache.k, prefix.k)),
                   v=tuple(v.at[:, :, :n].set(p) for v, p in zip(cache.v, prefix.v)),
                   valid_bs=cache.valid_bs.at[:, :n].set(prefix.valid_bs),
                   index_b=prefix.index_b)


@functools.partial(jax.jit, static_argnums=(0, 7, 8), donate_argnums=2)
def decode_chunk(graph: StaticGraph, state: nnx.State, slots: Slots, params: SamplingParams,
                 finish_v: jax.Array, retire_b: jax.Array, min_done: jax.Array,
                 num_steps: int, view_len: int) -> tuple[Slots, Chunk]:
    """Up to `num_steps` decode steps of every live slot; stops early once `min_done` rows are done.

    finish_v: bool[V], tokens that end a row (end of sequence, or text containing a stop string).
    retire_b: bool[B], rows the host finished (multi-token stop strings) since the last chunk.
    view_len: cache slots the chunk attends over and writes; callers keep it >= index_b +
    num_steps of every live row (rows already done may write past it: clamped, never read).
    """
    model = nnx.merge(graph.graphdef, state)
    batch = slots.done_b.shape[0]
    full = slots.cache
    slots = slots.replace(cache=_prefix(full, view_len), done_b=slots.done_b | retire_b)
    # The chunk's random numbers in one batched draw: on CPU every threefry call is a small loop
    # of kernels, too costly per step. Rows go live only in `refill`, between chunks, and a live
    # row advances one token per step, so a row live at step i draws for its token step_b + i.
    draw = lambda key, index: jax.random.uniform(jax.random.fold_in(key, index))
    uniform_bn = jax.vmap(jax.vmap(draw, (None, 0)))(
        slots.key_b, slots.step_b[:, None] + jnp.arange(num_steps))

    def step(carry):
        i, slots, tokens_bn, logprobs_bn = carry
        live_b = ~slots.done_b
        logits_b1v, cache = model(slots.token_b[:, None], slots.position_b[:, None],
                                  attention_mask_bt=live_b[:, None], cache=slots.cache)
        token_b, logprob_b = next_tokens(logits_b1v[:, 0], uniform_bn[:, i], params)
        step_b = slots.step_b + live_b
        ends_b = finish_v[token_b] | (step_b >= slots.budget_b)
        slots = slots.replace(
            cache=cache, token_b=jnp.where(live_b, token_b, slots.token_b),
            position_b=slots.position_b + live_b, step_b=step_b,
            done_b=slots.done_b | (live_b & ends_b))
        tokens_bn = tokens_bn.at[:, i].set(jnp.where(live_b, token_b, -1))
        logprobs_bn = logprobs_bn.at[:, i].set(logprob_b)
        return i + 1, slots, tokens_bn, logprobs_bn

    def running(carry):
        i, slots, _, _ = carry
        return (i < num_steps) & (jnp.sum(slots.done_b) < min_done)

    init = (jnp.int32(0), slots, jnp.full((batch, num_steps), -1, jnp.int32),
            jnp.zeros((batch, num_steps), jnp.float32))
    _, slots, tokens_bn, logprobs_bn = jax.lax.while_loop(running, step, init)
    slots = slots.replace(cache=_put_prefix(full, slots.cache))
    return slots, Chunk(tokens_bn, logprobs_bn, slots.done_b)


def placement(mesh: Mesh | None, rules: Rules, shape: tuple[int, ...],
              axes: tuple[str | None, ...] | None = None) -> NamedSharding | None:
    """Placement on `mesh` of an array whose dimensions carry logical `axes` (default: the first
    is batch); None without a mesh."""
    if mesh is None:
        return None
    axes = axes or ("batch",) + (None,) * (len(shape) - 1)
    return sharding.logical_sharding(axes, rules, mesh, shape)


@functools.cache
def on_device(init: Callable, config: ModelConfig, rows: int, length: int, mesh: Mesh | None,
              rules: Rules) -> Callable[[], Slots | KVCache]:
    """`init(config, rows, length)` made on device by one compiled program (one per shape, shared
    by every sampler and scorer), already split over the mesh's batch axes (and caches over kv
    heads): no per-array dispatch or copy."""
    make = functools.partial(init, config, rows, length)
    shapes = jax.eval_shape(make)
    place = functools.partial(placement, mesh, rules)
    by_batch = jax.tree.map(lambda x: place(x.shape), shapes)
    by_heads = lambda cache, placed: placed.replace(k=tuple(place(x.shape, K_AXES) for x in cache.k),
                                                    v=tuple(place(x.shape, V_AXES) for x in cache.v))
    shardings = (by_heads(shapes, by_batch) if isinstance(shapes, KVCache)
                 else by_batch.replace(cache=by_heads(shapes.cache, by_batch.cache)))
    return jax.jit(make, out_shardings=shardings)
