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
    """Scores a sequence by the value head at its last real token (raw score, no tanh)."""

    def __init__(self, config: ModelConfig, ppm_config: PPMConfig = PPMConfig(), *,
                 rngs: nnx.Rngs, backbone: Decoder | None = None):
        """`backbone` (e.g. the round's SFT policy) is used as is; otherwise a fresh Decoder."""
        self.ppm_config = ppm_config
        self.backbone = backbone if backbone is not None else Decoder(config, rngs=rngs)
        self.value_head = ValueHead(config.hidden_size, ppm_config.dropout, rngs=rngs)

    def __call__(self, tokens_bt: jax.Array, positions_bt: jax.Array, attention_mask_bt: jax.Array,
                 *, deterministic: bool = True) -> jax.Array:
        """Raw scores [B] read at the last position whose mask is True (left or right padding)."""
        h_btd, _ = self.backbone.hidden_states(tokens_bt, positions_bt, attention_mask_bt=attention_mask_bt)
        return self.score_hidden(h_btd, attention_mask_bt, deterministic=deterministic)

    def score_hidden(self, h_btd: jax.Array, attention_mask_bt: jax.Array, *,
                     deterministic: bool = True) -> jax.Array:
        """Raw scores [B] of the backbone's hidden states: the value head at each row's last
        position whose mask is True (what a prefix-cached scorer computes past its prefixes)."""
        mask_bt = attention_mask_bt.astype(bool)
        last_b = mask_bt.shape[1] - 1 - jnp.argmax(mask_bt[:, ::-1], axis=1)
        return self._head_at(h_btd, last_b[:, None], deterministic)[:, 0]

    def score_branches(self, tokens_bt: jax.Array, positions_bt: jax.Array, attention_mask_bt: jax.Array,
                       branch_bt: jax.Array, ends_bk: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """Raw scores [B, K] of K continuations packed after a shared prefix in each row (the
        decoder's `branch_bt`), read at the positions `ends_bk` of their last tokens."""
        h_btd, _ = self.backbone.hidden_states(tokens_bt, positions_bt, attention_mask_bt=attention_mask_bt,
                                               branch_bt=branch_bt)
        return self._head_at(h_btd, ends_bk, deterministic)

    def _head_at(self, h_btd: jax.Array, index_bk: jax.Array, deterministic: bool) -> jax.Array:
        """The value head [B, K] at positions `index_bk` of each row."""
        h_bkd = jnp.take_along_axis(h_btd, index_bk[:, :, None], axis=1)
        b, k, d = h_bkd.shape
        return self.value_head(h_bkd.reshape(b * k, d), deterministic=deterministic).reshape(b, k)


def search_value(raw: np.ndarray, scale: float) -> np.ndarray:
    """The value used in search: tanh(raw / scale), in (-1, 1) (rStar: scale 5). On the host: a
    jitted tanh would compile once per count of scores."""
    return np.tanh(np.asarray(raw, np.float32) / np.float32(scale))
