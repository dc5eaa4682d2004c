"""AdamW with decoupled weight decay, global-norm clipping and HF-style warmup schedules."""

from __future__ import annotations

import jax
import optax

from rstar_jax.config import TrainConfig


def learning_rate_schedule(config: TrainConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 over `warmup_steps`, then linear or cosine decay to 0 (or constant)."""
    decay_steps = max(total_steps - config.warmup_steps, 1)
    lr = config.learning_rate
    if config.schedule == "linear":
        decay = optax.linear_schedule(lr, 0.0, decay_steps)
    elif config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(lr, decay_steps)
    elif config.schedule == "constant":
        decay = optax.constant_schedule(lr)
    else:
        raise ValueError(f"TrainConfig.schedule: expected 'linear', 'cosine' or 'constant', got {config.schedule!r}")
    if config.warmup_steps <= 0:
        return decay
    warmup = optax.linear_schedule(0.0, lr, config.warmup_steps)
    return optax.join_schedules([warmup, decay], [config.warmup_steps])


def optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW; like HF, biases and norm scales (ndim < 2) are not decayed."""
    adamw = optax.adamw(
        learning_rate_schedule(config, total_steps),
        b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
        weight_decay=config.weight_decay, mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params),
    )
    if config.max_grad_norm <= 0:
        return adamw
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), adamw)
