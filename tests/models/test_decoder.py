"""Decoder shapes, logical axis names and the KV-cache contract (HF parity lives in test_parity)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rstar_jax.config import ModelConfig
from rstar_jax.models.decoder import Decoder, init_cache

CONFIG = ModelConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2)
LOGICAL_AXES = {"vocab", "embed", "mlp", "heads", "kv_heads", "head_dim"}


@pytest.fixture(scope="module")
def model():
    return Decoder(CONFIG, rngs=nnx.Rngs(0))


def test_shapes_and_cache_index(model):
    tokens = jnp.arange(10, dtype=jnp.int32).reshape(2, 5)
    positions = jnp.broadcast_to(jnp.arange(5), (2, 5))
    logits, cache = model(tokens, positions)
    assert logits.shape == (2, 5, CONFIG.vocab_size) and logits.dtype == jnp.float32
    assert cache is None
    h, _ = model.hidden_states(tokens, positions)
    assert h.shape == (2, 5, CONFIG.hidden_size)

    cache = init_cache(CONFIG, batch=2, max_len=8)
    assert cache.k.shape == (2, 2, 8, 2, 8)
    _, cache = model(tokens, positions, attention_mask_bt=jnp.array([[0, 1, 1, 1, 1]] * 2, bool),
                     cache=cache)
    np.testing.assert_array_equal(cache.index_b, [5, 5])
    np.testing.assert_array_equal(cache.valid_bs[:, :6], [[0, 1, 1, 1, 1, 0]] * 2)


def test_params_carry_logical_axis_names(model):
    params = nnx.state(model, nnx.Param)
    for path, var in jax.tree.leaves_with_path(params, is_leaf=lambda x: isinstance(x, nnx.Variable)):
        axes = var.get_metadata()["out_sharding"]
        assert len(axes) == var.value.ndim and set(axes) <= LOGICAL_AXES, path


def test_tied_embeddings_have_no_lm_head():
    tied = Decoder(dataclasses.replace(CONFIG, tie_word_embeddings=True), rngs=nnx.Rngs(0))
    assert not hasattr(tied, "lm_head")
    tokens = jnp.zeros((1, 3), jnp.int32)
    logits, _ = tied(tokens, jnp.arange(3)[None])
    assert logits.shape == (1, 3, CONFIG.vocab_size)


def test_bf16_compute_and_remat_grad():
    cfg = dataclasses.replace(CONFIG, dtype="bfloat16", remat=True)
    model = Decoder(cfg, rngs=nnx.Rngs(0))
    tokens = jnp.ones((1, 4), jnp.int32)
    h, _ = model.hidden_states(tokens, jnp.arange(4)[None])
    assert h.dtype == jnp.bfloat16
    grads = nnx.grad(lambda m: m(tokens, jnp.arange(4)[None])[0].mean())(model)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
