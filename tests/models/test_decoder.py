"""Decoder shapes, logical axis names, dtypes, remat and the KV-cache bookkeeping.

Numerical agreement with HF transformers lives in test_parity.py.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rstar_jax.config import ModelConfig
from rstar_jax.models.decoder import Decoder, _self_attention, init_cache, query_blocks, rope_inv_freq

CONFIG = ModelConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2)
LOGICAL_AXES = {"vocab", "embed", "mlp", "heads", "kv_heads", "head_dim"}
TOKENS = jnp.arange(10, dtype=jnp.int32).reshape(2, 5)
POSITIONS = jnp.broadcast_to(jnp.arange(5), (2, 5))


@nnx.jit
def forward(model, tokens, positions, mask=None, cache=None):
    return model(tokens, positions, attention_mask_bt=mask, cache=cache)


@pytest.fixture(scope="module")
def model():
    return Decoder(CONFIG, rngs=nnx.Rngs(0))


def test_shapes_and_cache_bookkeeping(model):
    logits, cache = forward(model, TOKENS, POSITIONS)
    assert logits.shape == (2, 5, CONFIG.vocab_size) and logits.dtype == jnp.float32
    assert cache is None

    cache = init_cache(CONFIG, batch=2, max_len=12)
    assert [k.shape for k in cache.k] == [(2, 2, 8, 12)] * 2  # L x [B, Hkv, Dh, S]
    assert [v.shape for v in cache.v] == [(2, 2, 12, 8)] * 2  # L x [B, Hkv, S, Dh]
    mask = jnp.array([[0, 1, 1, 1, 1]] * 2, bool)
    _, cache = forward(model, TOKENS, POSITIONS, mask, cache)
    np.testing.assert_array_equal(cache.index_b, [5, 5])
    np.testing.assert_array_equal(cache.valid_bs, [[0, 1, 1, 1, 1] + [0] * 7] * 2)


def test_query_blocks_tile_the_sequence():
    assert query_blocks(256) == [(0, 64), (64, 128), (128, 192), (192, 256)]
    assert query_blocks(13) == [(0, 4), (4, 8), (8, 12), (12, 13)]
    assert query_blocks(2) == [(0, 1), (1, 2)] and query_blocks(1) == [(0, 1)]


@pytest.mark.parametrize("length", [1, 3, 10, 13])
def test_self_attention_in_query_blocks_matches_one_call(length):
    """Blocks of queries that skip the keys after them give one call's output, whatever the mask
    hides before them (pads, other branches)."""
    q, k, v = (jax.random.normal(jax.random.key(i), (2, length, heads, 8))
               for i, heads in enumerate((4, 2, 2)))
    rng = np.random.default_rng(length)
    mask_bts = np.tril(np.ones((length, length), bool))[None] & (rng.random((2, length, length)) < 0.7)
    mask_bts |= np.eye(length, dtype=bool)[None]  # every query sees a key (itself)
    one_call = jax.nn.dot_product_attention(q, k, v, mask=jnp.asarray(mask_bts)[:, None])
    np.testing.assert_allclose(_self_attention(q, k, v, jnp.asarray(mask_bts)), one_call, rtol=1e-5, atol=1e-6)


def test_params_carry_logical_axis_names(model):
    params = nnx.state(model, nnx.Param)
    leaves = jax.tree.leaves_with_path(params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    for path, var in leaves:
        axes = var.get_metadata()["out_sharding"]
        assert len(axes) == var.get_value().ndim and set(axes) <= LOGICAL_AXES, path


def test_tied_bf16_remat_model_trains():
    """Tied embeddings (no lm_head), bf16 compute over fp32 params, rematerialised layers."""
    config = dataclasses.replace(CONFIG, tie_word_embeddings=True, dtype="bfloat16", remat=True,
                                 num_hidden_layers=1)
    model = Decoder(config, rngs=nnx.Rngs(0))
    assert not hasattr(model, "lm_head")
    assert model.embed_tokens.embedding.get_value().dtype == jnp.float32

    @nnx.jit
    def loss_and_grad(model):
        def loss(model):
            h, _ = model.hidden_states(TOKENS, POSITIONS)
            return model.logits(h).mean(), h.dtype == jnp.bfloat16
        return nnx.value_and_grad(loss, has_aux=True)(model)

    (_, h_is_bf16), grads = loss_and_grad(model)
    assert bool(h_is_bf16)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_rope_types():
    linear = dataclasses.replace(CONFIG, rope_scaling={"rope_type": "linear", "factor": 4.0})
    np.testing.assert_allclose(rope_inv_freq(linear), rope_inv_freq(CONFIG) / 4, rtol=1e-6)
    # Every rope type of Qwen2 / Llama checkpoints is supported (tests/models/test_rope_scaling.py);
    # others fail when the config is made, naming the type.
    with pytest.raises(ValueError, match="longrope"):
        dataclasses.replace(CONFIG, rope_scaling={"rope_type": "longrope", "factor": 4.0})
    with pytest.raises(ValueError, match="low_freq_factor"):
        dataclasses.replace(CONFIG, rope_scaling={"rope_type": "llama3", "factor": 4.0})
