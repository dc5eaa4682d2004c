"""Decoder-only transformer of the Qwen2 / Llama family (Flax NNX) with a per-row KV cache.

Parameter names follow HF (`embed_tokens`, `layers[i].self_attn.q_proj`, ...) so checkpoints map
one to one. Every parameter carries logical axis names ('vocab', 'embed', 'mlp', 'heads',
'kv_heads', 'head_dim') in its `out_sharding` metadata; `rstar_jax.parallel` maps them to a mesh.
Positions are always explicit, so left padding, right padding and per-row offsets all work.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from rstar_jax.config import ModelConfig
from rstar_jax.parallel.sharding import constrain


# Layout of each layer's keys and values in the cache. Keys lie with their slots last and values
# with theirs next to last, so the two attention products of a decode step (q.k over slots, then
# p.v) are plain batched matrix products over the cache as it lies: no per-step transpose.
K_AXES = ("batch", "kv_heads", "head_dim", "length")
V_AXES = ("batch", "kv_heads", "length", "head_dim")


@struct.dataclass
class KVCache:
    """Keys/values of every layer; row b writes its next tokens at slot `index_b[b]`.

    One array per layer (not one stacked [L, ...] buffer), so a decode step updates each layer in
    place instead of copying it out of and back into the stack. Every leaf has batch on axis 0:
    `jax.tree.map(lambda x: jnp.repeat(x, K, axis=0), cache)` forks each row into K rows.
    Callers keep index_b + T <= max_len (a write past the end would be clamped onto earlier slots).
    """

    k: tuple[jax.Array, ...]  # L x [B, Hkv, Dh, S] (K_AXES)
    v: tuple[jax.Array, ...]  # L x [B, Hkv, S, Dh] (V_AXES)
    valid_bs: jax.Array  # bool[B, S]: the slot holds a real (non-pad) token
    index_b: jax.Array  # int32[B]: next write slot per row

    @property
    def max_len(self) -> int:
        return self.valid_bs.shape[1]


def init_cache(config: ModelConfig, batch: int, max_len: int,
               dtype: jnp.dtype | str | None = None) -> KVCache:
    """An empty cache for `batch` rows of up to `max_len` tokens (dtype defaults to compute dtype)."""
    sizes = {"batch": batch, "kv_heads": config.num_key_value_heads,
             "head_dim": config.resolved_head_dim, "length": max_len}
    dtype = dtype or jnp.dtype(config.dtype)
    zeros = lambda axes: jnp.zeros([sizes[a] for a in axes], dtype)
    layers = range(config.num_hidden_layers)
    return KVCache(
        k=tuple(zeros(K_AXES) for _ in layers),
        v=tuple(zeros(V_AXES) for _ in layers),
        valid_bs=jnp.zeros((batch, max_len), bool),
        index_b=jnp.zeros((batch,), jnp.int32),
    )


def rope_inv_freq(config: ModelConfig, seq_len: int | None = None) -> np.ndarray:
    """RoPE inverse frequencies [Dh/2] as transformers 5 computes them, for every rope type of
    Qwen2 / Llama checkpoints: 'default', 'linear', 'dynamic', 'yarn' and 'llama3'.

    'dynamic' (NTK) depends on the sequence length: at `seq_len` (default: max_position_embeddings,
    where it equals 'default'); in the model it follows the positions (`rope_cos_sin`).
    """
    dim = config.resolved_head_dim
    exponents = np.arange(0, dim, 2, dtype=np.float64) / dim
    inv_freq = 1.0 / (config.rope_theta ** exponents)
    scaling = config.rope_scaling
    if scaling is None:
        return inv_freq.astype(np.float32)
    kind, factor = scaling.rope_type, scaling.factor
    old_len = scaling.original_max_position_embeddings or config.max_position_embeddings
    if kind == "linear":
        return (inv_freq / factor).astype(np.float32)
    if kind == "dynamic":
        seq = max(seq_len or config.max_position_embeddings, config.max_position_embeddings)
        base = config.rope_theta * (factor * seq / config.max_position_embeddings - (factor - 1)) ** (dim / (dim - 2))
        return (1.0 / base ** exponents).astype(np.float32)
    if kind == "llama3":
        # Llama 3.1: keep high frequencies, divide low ones by `factor`, interpolate in between.
        low, high = scaling.low_freq_factor, scaling.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    if kind == "yarn":
        # YaRN: interpolate (divide by `factor`) the low frequencies, keep the high ones, with a
        # linear ramp between the dimensions that turn `beta_slow` and `beta_fast` times over
        # the original context.
        factor = factor or config.max_position_embeddings / old_len
        beta_fast, beta_slow = scaling.beta_fast or 32, scaling.beta_slow or 1
        truncate = True if scaling.truncate is None else scaling.truncate

        def correction_dim(rotations):
            return dim * math.log(old_len / (rotations * 2 * math.pi)) / (2 * math.log(config.rope_theta))

        low, high = correction_dim(beta_fast), correction_dim(beta_slow)
        if truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / ((high + 0.001 if low == high else high) - low),
                       0, 1)
        extrapolation = 1 - ramp
        pos_freqs = config.rope_theta ** exponents
        inv = (1 / (factor * pos_freqs)) * (1 - extrapolation) + (1 / pos_freqs) * extrapolation
        return inv.astype(np.float32)
    raise ValueError(f"rope_scaling: unsupported rope_type {kind!r}")


def rope_attention_factor(config: ModelConfig) -> float:
    """transformers' `attention_scaling`: the factor on cos and sin (YaRN's mscale; 1 elsewhere)."""
    scaling = config.rope_scaling
    if scaling is None or scaling.rope_type != "yarn":
        return 1.0
    if scaling.attention_factor is not None:
        return float(scaling.attention_factor)
    old_len = scaling.original_max_position_embeddings or config.max_position_embeddings
    factor = scaling.factor or config.max_position_embeddings / old_len

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if scaling.mscale and scaling.mscale_all_dim:
        return float(mscale(factor, scaling.mscale) / mscale(factor, scaling.mscale_all_dim))
    return float(mscale(factor))


def rope_cos_sin(config: ModelConfig, positions_bt: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """cos and sin [B, T, 1, Dh] of the rotation at each position, angles in fp32.

    'dynamic' grows the base once a row's positions pass max_position_embeddings, as
    transformers does at the longest position it was called with; here per row (transformers:
    per batch), so a row's logits do not depend on the other rows of its batch.
    """
    positions = positions_bt.astype(jnp.float32)[..., None]
    if config.rope_scaling is not None and config.rope_scaling.rope_type == "dynamic":
        dim, limit = config.resolved_head_dim, config.max_position_embeddings
        factor = config.rope_scaling.factor
        seq_b = jnp.maximum(jnp.max(positions_bt, axis=1) + 1, limit).astype(jnp.float32)
        base_b = config.rope_theta * (factor * seq_b / limit - (factor - 1)) ** (dim / (dim - 2))
        exponents = jnp.arange(0, dim, 2, dtype=jnp.float32) / dim
        angles = positions * (1.0 / base_b[:, None] ** exponents)[:, None, :]
    else:
        angles = positions * rope_inv_freq(config)
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    scale = rope_attention_factor(config)
    return (jnp.cos(angles) * scale).astype(dtype), (jnp.sin(angles) * scale).astype(dtype)


def apply_rope(x_bthk: jax.Array, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Rotates the two halves of each head (HF's `rotate_half` layout) by `rope_cos_sin`."""
    cos, sin = rope
    x1, x2 = jnp.split(x_bthk, 2, axis=-1)
    return x_bthk * cos.astype(x_bthk.dtype) + jnp.concatenate([-x2, x1], axis=-1) * sin.astype(x_bthk.dtype)


def _write_rows(buf: jax.Array, new: jax.Array, index_b: jax.Array, axis: int) -> jax.Array:
    """Writes row b's T new entries (`new`: T along `axis`) at slots index_b[b] .. index_b[b]+T-1."""
    write = lambda row, new_row, i: jax.lax.dynamic_update_slice_in_dim(row, new_row, i, axis - 1)
    return jax.vmap(write)(buf, new, index_b)


def _cached_attention(q_bthd: jax.Array, k_bkds: jax.Array, v_bksd: jax.Array,
                      mask_bts: jax.Array) -> jax.Array:
    """Grouped-query attention of T queries over one cache layer (K_AXES / V_AXES layouts)."""
    b, t, h, dh = q_bthd.shape
    hkv = k_bkds.shape[1]
    q_bkgtd = q_bthd.reshape(b, t, hkv, h // hkv, dh).transpose(0, 2, 3, 1, 4)
    if t == 1:
        # One query per row (decode): as a dot, XLA:CPU runs B * Hkv tiny [g, Dh] x [Dh, S]
        # products; a fused multiply-and-sum over Dh streams the keys once, and reading the cache
        # is most of a decode step (README, Performance).
        scores = jnp.sum(q_bkgtd[..., None].astype(jnp.float32)
                         * k_bkds[:, :, None, None].astype(jnp.float32), axis=-2)
    else:
        scores = jnp.einsum("bkgtd,bkds->bkgts", q_bkgtd, k_bkds.astype(q_bthd.dtype),
                            preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(dh)
    scores = jnp.where(mask_bts[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(q_bthd.dtype)
    out_bkgtd = jnp.einsum("bkgts,bksd->bkgtd", probs, v_bksd.astype(q_bthd.dtype))
    return out_bkgtd.transpose(0, 3, 1, 2, 4).reshape(b, t, h, dh)


# A sequence attends over itself in this many blocks of queries, each over the keys up to its last
# query: the mask is causal, so the keys after a block are masked for all of it. That skips 3/8 of
# the scores, and XLA:CPU keeps a block's smaller intermediates in cache (the tiny policy's train
# step 0.99-1.15x as fast at 256-384 tokens, 1.2-1.4x at 512; docs/performance.md).
_QUERY_BLOCKS = 4


def query_blocks(length: int) -> list[tuple[int, int]]:
    """The [start, end) blocks of queries of a self-attention over `length` tokens; the block
    attends to keys [0, end)."""
    size = -(-length // _QUERY_BLOCKS)
    return [(start, min(start + size, length)) for start in range(0, length, size)]


def _self_attention(q_bthd: jax.Array, k_bthd: jax.Array, v_bthd: jax.Array,
                    mask_bts: jax.Array) -> jax.Array:
    """Grouped-query attention of T tokens over themselves; `mask_bts` must mask every later key."""
    return jnp.concatenate([
        jax.nn.dot_product_attention(q_bthd[:, start:end], k_bthd[:, :end], v_bthd[:, :end],
                                     mask=mask_bts[:, None, start:end, :end])
        for start, end in query_blocks(q_bthd.shape[1])], axis=1)


def _logical(init: nnx.Initializer, axes: tuple[str, ...]) -> nnx.Initializer:
    """Annotates an initializer with logical axis names; sharding them is `parallel/`'s job."""
    return nnx.with_partitioning(init, axes, eager_sharding=False)


class Attention(nnx.Module):
    """Grouped-query self-attention with RoPE and optional q/k/v bias."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, h, hkv, dh = (config.hidden_size, config.num_attention_heads,
                         config.num_key_value_heads, config.resolved_head_dim)
        init = nnx.initializers.normal(config.initializer_range)
        common = dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype),
                      rngs=rngs)

        def proj(heads: int, axis: str, bias: bool) -> nnx.Einsum:
            return nnx.Einsum(
                "btd,dhk->bthk", (d, heads, dh), (heads, dh) if bias else None,
                kernel_init=_logical(init, ("embed", axis, "head_dim")),
                bias_init=_logical(nnx.initializers.zeros, (axis, "head_dim")),
                **common)

        self.q_proj = proj(h, "heads", config.attention_bias)
        self.k_proj = proj(hkv, "kv_heads", config.attention_bias)
        self.v_proj = proj(hkv, "kv_heads", config.attention_bias)
        # Llama's `attention_bias` also covers o_proj; Qwen2's never does.
        o_bias = config.attention_bias and config.model_type == "llama"
        self.o_proj = nnx.Einsum(
            "bthk,hkd->btd", (h, dh, d), (d,) if o_bias else None,
            kernel_init=_logical(init, ("heads", "head_dim", "embed")),
            bias_init=_logical(nnx.initializers.zeros, ("embed",)),
            **common)

    def __call__(self, x_btd, rope, mask_bts, kv=None, index_b=None):
        """Attends over this call's tokens, or over the cache layer `kv` = (k, v) after writing them.
        `rope`: the (cos, sin) of the tokens' positions (`rope_cos_sin`)."""
        q = apply_rope(self.q_proj(x_btd), rope)
        k = apply_rope(self.k_proj(x_btd), rope)
        v = self.v_proj(x_btd)
        if kv is None:
            return self.o_proj(_self_attention(q, k, v, mask_bts)), None
        k_cache, v_cache = kv
        kv = (_write_rows(k_cache, k.transpose(0, 2, 3, 1).astype(k_cache.dtype), index_b, axis=3),
              _write_rows(v_cache, v.transpose(0, 2, 1, 3).astype(v_cache.dtype), index_b, axis=2))
        return self.o_proj(_cached_attention(q, *kv, mask_bts)), kv


class MLP(nnx.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, f = config.hidden_size, config.intermediate_size
        init = nnx.initializers.normal(config.initializer_range)
        common = dict(use_bias=False, dtype=jnp.dtype(config.dtype),
                      param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        self.gate_proj = nnx.Linear(d, f, kernel_init=_logical(init, ("embed", "mlp")),
                                    **common)
        self.up_proj = nnx.Linear(d, f, kernel_init=_logical(init, ("embed", "mlp")),
                                  **common)
        self.down_proj = nnx.Linear(f, d, kernel_init=_logical(init, ("mlp", "embed")),
                                    **common)

    def __call__(self, x_btd: jax.Array) -> jax.Array:
        # As one [B*T, D] matrix: XLA:CPU ran the 3-D form at half the speed (prefill, training).
        x_nd = x_btd.reshape(-1, x_btd.shape[-1])
        return self.down_proj(jax.nn.silu(self.gate_proj(x_nd)) * self.up_proj(x_nd)).reshape(x_btd.shape)


def _rms_norm(config: ModelConfig, rngs: nnx.Rngs) -> nnx.RMSNorm:
    return nnx.RMSNorm(
        config.hidden_size, epsilon=config.rms_norm_eps, dtype=jnp.dtype(config.dtype),
        param_dtype=jnp.dtype(config.param_dtype),
        scale_init=_logical(nnx.initializers.ones, ("embed",)), rngs=rngs)


class DecoderLayer(nnx.Module):
    """Pre-norm residual block: attention, then SwiGLU MLP."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.input_layernorm = _rms_norm(config, rngs)
        self.self_attn = Attention(config, rngs=rngs)
        self.post_attention_layernorm = _rms_norm(config, rngs)
        self.mlp = MLP(config, rngs=rngs)

    def __call__(self, h_btd, rope, mask_bts, kv=None, index_b=None):
        attn, kv = self.self_attn(self.input_layernorm(h_btd), rope, mask_bts, kv, index_b)
        h_btd = h_btd + attn
        return h_btd + self.mlp(self.post_attention_layernorm(h_btd)), kv


def _call_layer(layer: DecoderLayer, *args):
    return layer(*args)


class Decoder(nnx.Module):
    """Causal LM: token embedding, decoder layers, final RMSNorm, (tied or separate) LM head."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        rope_inv_freq(config)  # an unsupported rope type fails here, not at the first call
        self.config = config
        init = nnx.initializers.normal(config.initializer_range)
        self.embed_tokens = nnx.Embed(
            config.vocab_size, config.hidden_size, dtype=jnp.dtype(config.dtype),
            param_dtype=jnp.dtype(config.param_dtype),
            embedding_init=_logical(init, ("vocab", "embed")),
            rngs=rngs)
        self.layers = nnx.List([DecoderLayer(config, rngs=rngs)
                                for _ in range(config.num_hidden_layers)])
        self.norm = _rms_norm(config, rngs)
        if not config.tie_word_embeddings:
            self.lm_head = nnx.Linear(
                config.hidden_size, config.vocab_size, use_bias=False,
                dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype),
                kernel_init=_logical(init, ("embed", "vocab")),
                rngs=rngs)

    def hidden_states(self, tokens_bt: jax.Array, positions_bt: jax.Array, *,
                      attention_mask_bt: jax.Array | None = None, cache: KVCache | None = None,
                      branch_bt: jax.Array | None = None) -> tuple[jax.Array, KVCache | None]:
        """Final-norm hidden states [B, T, D] and the updated cache (None without one).

        `attention_mask_bt` marks real tokens (default: all); pads are never attended to.
        `branch_bt` (no cache) packs continuations of one prefix in a row: tokens of branch 0 are
        seen by every later token, those of branch k > 0 only by later tokens of branch k. With
        each branch's positions continuing the prefix's, a branch's hidden states are those of
        prefix + branch alone.
        """
        b, t = tokens_bt.shape
        if attention_mask_bt is None:
            attention_mask_bt = jnp.ones((b, t), bool)
        attention_mask_bt = attention_mask_bt.astype(bool)
        if cache is None:
            causal_tt = jnp.tril(jnp.ones((t, t), bool))
            mask_bts = causal_tt[None] & attention_mask_bt[:, None, :]
            if branch_bt is not None:
                key_bts = branch_bt[:, None, :]
                mask_bts &= (key_bts == 0) | (key_bts == branch_bt[:, :, None])
        elif branch_bt is not None:
            raise ValueError("hidden_states: branch_bt packs rows without a cache")
        else:
            valid_bs = _write_rows(cache.valid_bs, attention_mask_bt, cache.index_b, axis=1)
            query_slot_bt = cache.index_b[:, None] + jnp.arange(t)
            mask_bts = valid_bs[:, None, :] & (
                jnp.arange(cache.max_len)[None, None, :] <= query_slot_bt[:, :, None])
        run_layer = nnx.remat(_call_layer) if self.config.remat else _call_layer
        rope = rope_cos_sin(self.config, positions_bt, jnp.dtype(self.config.dtype))

        # The residual stream stays split by batch (identity without a mesh and logical rules).
        h_btd = constrain(self.embed_tokens(tokens_bt), ("batch", "length", "embed"))
        new_kv = []
        for i, layer in enumerate(self.layers):
            kv = None if cache is None else (cache.k[i], cache.v[i])
            h_btd, kv = run_layer(layer, h_btd, rope, mask_bts, kv, None if cache is None else cache.index_b)
            h_btd = constrain(h_btd, ("batch", "length", "embed"))
            new_kv.append(kv)
        if cache is not None:
            new_k, new_v = zip(*new_kv)
            cache = KVCache(k=new_k, v=new_v, valid_bs=valid_bs, index_b=cache.index_b + t)
        return self.norm(h_btd), cache

    def logits(self, h_btd: jax.Array) -> jax.Array:
        """LM-head logits (fp32) of final hidden states; lets callers project only some positions."""
        if self.config.tie_word_embeddings:
            out = self.embed_tokens.attend(h_btd)
        else:
            out = self.lm_head(h_btd)
        return out.astype(jnp.float32)

    def __call__(self, tokens_bt: jax.Array, positions_bt: jax.Array, *,
                 attention_mask_bt: jax.Array | None = None, cache: KVCache | None = None,
                 ) -> tuple[jax.Array, KVCache | None]:
        """Logits [B, T, V] (fp32) and the updated cache."""
        h_btd, cache = self.hidden_states(tokens_bt, positions_bt,
                                          attention_mask_bt=attention_mask_bt, cache=cache)
        return self.logits(h_btd), cache
