"""SFT and PPM losses as (numerator, denominator) sums, so gradient accumulation and data
parallelism reduce them exactly: the loss of a batch is sum(numerators) / sum(denominators)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def sft_loss(logits_btv: jax.Array, targets_bt: jax.Array, weights_bt: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Summed next-token cross-entropy over weighted targets, and the total weight (target count).

    Prompt and padding targets have weight 0, so their labels do not matter (rStar's -100).
    """
    ce_bt = optax.softmax_cross_entropy_with_integer_labels(logits_btv.astype(jnp.float32), targets_bt)
    return jnp.sum(ce_bt * weights_bt), jnp.sum(weights_bt)


def ppm_loss(raw_pos_b: jax.Array, raw_neg_b: jax.Array, weights_b: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Bradley-Terry pairwise loss `sum_i w_i * -log sigmoid(r_pos_i - r_neg_i)` (spec §5).

    Returns (weighted loss sum, number of pairs, number of pairs ranked right); pairs of weight
    0 are padding and count nowhere. rStar sums over a per-device batch; dividing by the number
    of pairs instead keeps the learning rate independent of the batch size.
    """
    valid_b = (weights_b > 0).astype(jnp.float32)
    margin_b = (raw_pos_b - raw_neg_b).astype(jnp.float32)
    loss = jnp.sum(weights_b * -jax.nn.log_sigmoid(margin_b))
    return loss, jnp.sum(valid_b), jnp.sum(valid_b * (margin_b > 0))
