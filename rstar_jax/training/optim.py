"""AdamW with decoupled weight decay, global-norm clipping and HF-style warmup schedules.

The learning rate is a hyperparameter in the optimizer state (`optax.inject_hyperparams`) that the
loop sets each step from the schedule, so the compiled step does not depend on the run's length:
trainings of different lengths (a round's policy, its PPM) share one compiled step per shape.
"""

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


def optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW; like HF, biases (the attention's are [heads, head_dim]) and
    norm scales are not decayed. Its state's `hyperparams["learning_rate"]` is the rate of the next
    update (`with_learning_rate`)."""

    def clipped_adamw(learning_rate):
        adamw = optax.adamw(
            learning_rate, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
            weight_decay=config.weight_decay, mask=lambda params: jax.tree_util.tree_map_with_path(_decayed, params),
        )
        if config.max_grad_norm <= 0:
            return adamw
        return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), adamw)

    return optax.inject_hyperparams(clipped_adamw)(learning_rate=config.learning_rate)


def _decayed(path: tuple, param: jax.Array) -> bool:
    return param.ndim >= 2 and not any(getattr(key, "key", None) == "bias" for key in path)


def with_learning_rate(opt_state: optax.InjectHyperparamsState, learning_rate: jax.Array) -> optax.InjectHyperparamsState:
    """`optimizer`'s state with the rate of its next update set to `learning_rate`."""
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": learning_rate})
