"""Our Decoder against HF transformers (torch, CPU) on tiny random Qwen2 and Llama checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from rstar_jax.models.decoder import init_cache
from rstar_jax.models.hf import load_decoder

# Row 0 right-padded, row 1 left-padded, row 2 full.
MASK = np.array([[1] * 9 + [0] * 3, [0] * 4 + [1] * 8, [1] * 12], bool)


@nnx.jit
def forward(model, tokens, positions, mask=None, cache=None):
    return model(tokens, positions, attention_mask_bt=mask, cache=cache)


def _batch():
    tokens = np.random.default_rng(0).integers(2, 160, MASK.shape).astype(np.int32)
    positions = np.maximum(MASK.cumsum(axis=1) - 1, 0).astype(np.int32)
    return tokens, positions


def _hf_logits(hf_model, tokens, positions, mask):
    with torch.no_grad():
        out = hf_model(input_ids=torch.tensor(tokens, dtype=torch.long),
                       attention_mask=torch.tensor(mask, dtype=torch.long),
                       position_ids=torch.tensor(positions, dtype=torch.long))
    return out.logits.float().numpy()


@pytest.fixture(scope="module")
def pair(hf_dir):
    kind, path, hf_model = hf_dir
    return kind, load_decoder(path), hf_model


def test_config_is_read(pair):
    kind, model, hf_model = pair
    assert model.config.model_type == kind
    assert model.config.tie_word_embeddings == (kind == "llama")
    if kind == "llama":
        assert model.config.rope_scaling.rope_type == "llama3"


def test_padded_logits_match_hf(pair):
    _, model, hf_model = pair
    tokens, positions = _batch()
    ours, _ = forward(model, tokens, positions, MASK)
    ref = _hf_logits(hf_model, tokens, positions, MASK)
    np.testing.assert_allclose(np.asarray(ours)[MASK], ref[MASK], atol=1e-4, rtol=1e-4)


def test_cached_decoding_matches_full_forward(pair):
    """Left-padded prefill, then one token at a time; every step equals the full forward."""
    _, model, _ = pair
    tokens, positions = _batch()
    full, _ = forward(model, tokens, positions, MASK)
    left = MASK[1:]  # the left-padded and the full row share one prompt length
    prompt = 6
    cache = init_cache(model.config, batch=2, max_len=16)
    logits, cache = forward(model, tokens[1:, :prompt], positions[1:, :prompt], left[:, :prompt],
                            cache)
    got = [logits[:, -1]]
    for t in range(prompt, 12):
        logits, cache = forward(model, tokens[1:, t:t + 1], positions[1:, t:t + 1],
                                left[:, t:t + 1], cache)
        got.append(logits[:, -1])
    np.testing.assert_allclose(np.stack(got, 1), np.asarray(full)[1:, prompt - 1:], atol=1e-4)
    np.testing.assert_array_equal(cache.index_b, [12, 12])


def test_rows_at_different_offsets_decode_together(pair):
    """Rows whose next slots differ (continuous batching) decode together; a forked prefix too."""
    _, model, _ = pair
    tokens = np.random.default_rng(1).integers(2, 160, (2, 8)).astype(np.int32)
    positions = np.broadcast_to(np.arange(8), (2, 8))
    lengths = np.array([3, 7])
    prefix_mask = np.arange(7)[None] < lengths[:, None]
    _, cache = forward(model, tokens[:, :7], positions[:, :7], prefix_mask,
                       init_cache(model.config, batch=2, max_len=16))
    cache = cache.replace(index_b=jnp.asarray(lengths, jnp.int32))  # row 0 resumes at slot 3
    nxt = tokens[[0, 1], lengths][:, None]
    logits, _ = forward(model, nxt, lengths[:, None], None, cache)
    full, _ = forward(model, tokens, positions)
    np.testing.assert_allclose(logits[:, 0], full[[0, 1], lengths], atol=1e-4)
    # Forking row 1's prefix gives identical continuations.
    forked = jax.tree.map(lambda x: jnp.repeat(x[:, 1:] if x.ndim == 5 else x[1:], 2,
                                               axis=1 if x.ndim == 5 else 0), cache)
    logits2, _ = forward(model, np.repeat(nxt[1:], 2, 0), np.full((2, 1), 7), None, forked)
    np.testing.assert_allclose(logits2[:, 0], np.repeat(logits[1:, 0], 2, 0), atol=1e-5)
