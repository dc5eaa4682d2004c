"""Process preference model: the policy decoder plus a scalar value head (spec §5)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rstar_jax.config import ModelConfig, PPMConfig
from rstar_jax.models.decoder import Decoder


def _tiny_normal(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """N(5e-7, 1e-6): rStar's value-head init, so every initial score is about 0."""
    return 5e-7 + 1e-6 * jax.random.normal(key, shape, dtype)


class ValueHead(nnx.Module):
    """Dropout then Linear(hidden, 1), in fp32 whatever the backbone computes in."""

    def __init__(self, hidden_size: int, dropout: float, *, rngs: nnx.Rngs):
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.linear = nnx.Linear(
            hidden_size, 1, dtype=jnp.float32, param_dtype=jnp.float32,
            kernel_init=nnx.with_partitioning(_tiny_normal, ("embed", None), eager_sharding=False),
            bias_init=nnx.initializers.constant(1e-6), rngs=rngs)

    def __call__(self, h_bd: jax.Array, *, deterministic: bool = True) -> jax.Array:
        return self.linear(self.dropout(h_bd.astype(jnp.float32), deterministic=deterministic))[:, 0]


class ProcessRewardModel(nnx.Module):
    """Scores a step by the value head at its last token (the paper's) or by the head's mean over
    the step's tokens (`PPMConfig.readout`); raw scores, no tanh."""

    def __init__(self, config: ModelConfig, ppm_config: PPMConfig = PPMConfig(), *,
                 rngs: nnx.Rngs, backbone: Decoder | None = None):
        """`backbone` (e.g. the round's SFT policy) is used as is; otherwise a fresh Decoder."""
        self.ppm_config = ppm_config
        self.backbone = backbone if backbone is not None else Decoder(config, rngs=rngs)
        self.value_head = ValueHead(config.hidden_size, ppm_config.dropout, rngs=rngs)

    def __call__(self, tokens_bt: jax.Array, positions_bt: jax.Array, attention_mask_bt: jax.Array,
                 step_bt: jax.Array | None = None, *, deterministic: bool = True) -> jax.Array:
        """Raw scores [B] of rows whose step ends at their last position whose mask is True (left or
        right padding); `step_bt` marks the step's tokens (see `score_hidden`)."""
        h_btd, _ = self.backbone.hidden_states(tokens_bt, positions_bt, attention_mask_bt=attention_mask_bt)
        return self.score_hidden(h_btd, attention_mask_bt, step_bt, deterministic=deterministic)

    def score_hidden(self, h_btd: jax.Array, attention_mask_bt: jax.Array, step_bt: jax.Array | None = None,
                     *, deterministic: bool = True) -> jax.Array:
        """Raw scores [B] of the backbone's hidden states (what a prefix-cached scorer computes past
        its prefixes): each row's step ends at its last position whose mask is True, and `step_bt`
        marks the step's tokens, which the "step_mean" readout needs."""
        mask_bt = attention_mask_bt.astype(bool)
        last_b1 = (mask_bt.shape[1] - 1 - jnp.argmax(mask_bt[:, ::-1], axis=1))[:, None]
        if self.ppm_config.readout == "last":
            return self._head_at(h_btd, last_b1, deterministic)[:, 0]
        if step_bt is None:
            raise ValueError("PPMConfig.readout 'step_mean' scores a step from its tokens: pass step_bt")
        return self._step_mean(h_btd, (step_bt.astype(bool) & mask_bt)[:, None], last_b1, deterministic)[:, 0]

    def score_branches(self, tokens_bt: jax.Array, positions_bt: jax.Array, attention_mask_bt: jax.Array,
                       branch_bt: jax.Array, ends_bk: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """Raw scores [B, K] of K steps packed after a shared prefix in each row (the decoder's
        `branch_bt`: step k's tokens are branch k + 1), which end at the positions `ends_bk`."""
        h_btd, _ = self.backbone.hidden_states(tokens_bt, positions_bt, attention_mask_bt=attention_mask_bt,
                                               branch_bt=branch_bt)
        if self.ppm_config.readout == "last":
            return self._head_at(h_btd, ends_bk, deterministic)
        steps_bkt = branch_bt[:, None, :] == jnp.arange(1, ends_bk.shape[1] + 1)[None, :, None]
        return self._step_mean(h_btd, steps_bkt, ends_bk, deterministic)

    def _head_at(self, h_btd: jax.Array, index_bk: jax.Array, deterministic: bool) -> jax.Array:
        """The value head [B, K] at positions `index_bk` of each row."""
        h_bkd = jnp.take_along_axis(h_btd, index_bk[:, :, None], axis=1)
        b, k, d = h_bkd.shape
        return self.value_head(h_bkd.reshape(b * k, d), deterministic=deterministic).reshape(b, k)

    def _step_mean(self, h_btd: jax.Array, steps_bkt: jax.Array, ends_bk: jax.Array,
                   deterministic: bool) -> jax.Array:
        """The value head's mean [B, K] over each step's tokens (`steps_bkt`); an empty step, which
        has none, reads its end position (the prompt's last token), as the "last" readout does."""
        b, t, d = h_btd.shape
        values_bt = self.value_head(h_btd.reshape(b * t, d), deterministic=deterministic).reshape(b, t)
        at_end_bkt = jnp.arange(t) == ends_bk[:, :, None]
        weights_bkt = jnp.where(steps_bkt.any(-1, keepdims=True), steps_bkt, at_end_bkt).astype(jnp.float32)
        return jnp.sum(weights_bkt * values_bt[:, None, :], -1) / jnp.sum(weights_bkt, -1)


def search_value(raw: np.ndarray, scale: float) -> np.ndarray:
    """The value used in search: tanh(raw / scale), in (-1, 1) (rStar: scale 5). On the host: a
    jitted tanh would compile once per count of scores."""
    return np.tanh(np.asarray(raw, np.float32) / np.float32(scale))
