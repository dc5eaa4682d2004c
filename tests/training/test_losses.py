"""Loss masking of SFT targets and the PPM pairwise loss against a hand computation (spec §5)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rstar_jax.config import ModelConfig
from rstar_jax.models.decoder import Decoder
from rstar_jax.models.ppm import ProcessRewardModel
from rstar_jax.training import data, losses
from rstar_jax.training.ppm import ppm_loss_fn
from rstar_jax.training.sft import sft_loss_fn

TINY = ModelConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2)


def test_ppm_loss_equals_hand_computation():
    raw_pos, raw_neg = jnp.array([1.0, -0.5, 2.0, 0.0]), jnp.array([0.0, 0.5, 3.0, 9.0])
    weights = jnp.array([1 / 4, 1 / 4, 1 / 4, 0.0])  # the last pair is padding
    loss, count, correct = losses.ppm_loss(raw_pos, raw_neg, weights)
    nll = lambda d: math.log(1 + math.exp(-d))  # -log sigmoid(d)
    assert np.isclose(float(loss), (nll(1.0) + nll(-1.0) + nll(-1.0)) / 4, rtol=1e-6)
    assert float(count) == 3 and float(correct) == 1


def test_changing_prompt_and_padding_labels_changes_neither_loss_nor_gradients():
    rng = np.random.default_rng(0)
    examples = [data.SFTExample(rng.integers(0, 50, size=n).astype(np.int32), prompt_len=p) for n, p in ((12, 5), (7, 3))]
    batch = data.collate_sft(examples, length=16)
    scrambled = dict(batch, targets=np.where(batch["weights"] > 0, batch["targets"], rng.integers(0, 50, size=(2, 16))))
    assert (scrambled["targets"] != batch["targets"]).any()

    graphdef, params = nnx.split(Decoder(TINY, rngs=nnx.Rngs(0)))

    @jax.jit
    def loss_and_grads(params, batch):
        def mean_loss(params):
            loss, count, _ = sft_loss_fn(nnx.merge(graphdef, params), batch, True)
            return loss / count
        return jax.value_and_grad(mean_loss)(params)

    (loss_a, grads_a), (loss_b, grads_b) = loss_and_grads(params, batch), loss_and_grads(params, scrambled)
    assert float(loss_a) == float(loss_b)
    jax.tree.map(np.testing.assert_array_equal, grads_a, grads_b)
    # ... while a response label does matter.
    changed = dict(batch, targets=batch["targets"].copy())
    changed["targets"][0, 6] = (changed["targets"][0, 6] + 1) % 50
    assert float(loss_and_grads(params, changed)[0]) != float(loss_a)


def test_packed_pairs_give_the_loss_and_gradients_of_each_view_scored_alone():
    """`collate_pairs` packs prompt + pos + neg in one row; the PPM loss and its gradients are those
    of scoring prompt + pos and prompt + neg as rows of their own."""
    rng = np.random.default_rng(0)
    ids = lambda n: rng.integers(0, 50, size=n).astype(np.int32)
    pairs = [data.PairExample(ids(p), ids(a), ids(b), w) for p, a, b, w in ((5, 3, 6, 0.25), (9, 4, 2, 1.0))]
    batch = data.collate_pairs([*pairs, None], length=24)
    model = ProcessRewardModel(TINY, rngs=nnx.Rngs(0))
    model.value_head.linear.kernel.set_value(jnp.linspace(-1, 1, 32)[:, None])  # visible (real init ~0)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    views = [np.concatenate([pair.prompt, step]) for pair in pairs for step in (pair.pos, pair.neg)]
    tokens = np.stack([np.pad(v, (0, 16 - len(v))) for v in views])
    mask = np.arange(16)[None] < np.array([len(v) for v in views])[:, None]

    def packed(params):
        loss, count, _ = ppm_loss_fn(nnx.merge(graphdef, params, rest), batch, False)
        return loss / count

    def alone(params):
        raw = nnx.merge(graphdef, params, rest)(tokens, np.broadcast_to(np.arange(16), tokens.shape), mask).reshape(2, 2)
        loss, count, _ = losses.ppm_loss(raw[:, 0], raw[:, 1], jnp.array([0.25, 1.0]))
        return loss / count

    (loss_a, grads_a), (loss_b, grads_b) = (jax.jit(jax.value_and_grad(f))(params) for f in (packed, alone))
    assert abs(float(loss_a) - math.log(2) * 1.25 / 2) > 1e-3  # the scores are not all equal
    np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=1e-5)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6), grads_a, grads_b)
