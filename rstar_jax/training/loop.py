"""One sharded train loop for SFT and PPM: the loss differs, the loop does not.

The train state (params, optimizer state, non-trainable model state, step) lives sharded on the
mesh by the parameters' logical axis names; one jitted step with donated state runs the
micro-batches of a gradient-accumulation step under `lax.scan`, then clips and applies AdamW.
Checkpoints carry the step, from which the data position follows, so a restarted run continues
with exactly the batches (and dropout masks) it would have seen.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from rstar_jax.config import TrainConfig
from rstar_jax.models.decoder import Decoder
from rstar_jax.models.hf import load_hf
from rstar_jax.models.tokenizer import resize_embeddings
from rstar_jax.parallel import sharding
from rstar_jax.parallel.rules import TRAIN_RULES, Rules
from rstar_jax.shapes import bucket
from rstar_jax.training import data
from rstar_jax.training.checkpoint import Checkpoints
from rstar_jax.training.metrics import MetricsWriter
from rstar_jax.training.optim import learning_rate_schedule, optimizer, with_learning_rate

Batch = dict[str, jax.Array]
# (model, micro-batch, train) -> (loss sum, count, extra sums); the loop reports loss = sum / count
# and every extra as extra / count (e.g. PPM accuracy = pairs ranked right / pairs).
LossFn = Callable[[nnx.Module, Batch, bool], tuple[jax.Array, jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class Task:
    """What a trainer plugs into the loop: its loss and how examples become a batch."""

    loss_fn: LossFn
    collate: Callable[[Sequence[Any | None], int], dict[str, np.ndarray]]


@struct.dataclass
class TrainState:
    """Everything a step updates and a checkpoint holds (the data position follows from `step`)."""

    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState
    rest: nnx.State  # non-trainable model state, e.g. dropout RNG streams


def _sums(graphdef: nnx.GraphDef, loss_fn: LossFn, params: nnx.State, rest: nnx.State, batch: Batch, train: bool):
    """(loss sum, (count, extra sums, updated rest)) of one micro-batch."""
    model = nnx.merge(graphdef, params, rest, copy=True)  # fresh Variables in this trace
    loss, count, extras = loss_fn(model, batch, train)
    return loss, (count, extras, nnx.state(model, nnx.Not(nnx.Param)))


def train_step(state: TrainState, batch: Batch, learning_rate: jax.Array, *, graphdef: nnx.GraphDef,
               loss_fn: LossFn, tx: optax.GradientTransformation,
               param_shardings: nnx.State) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step at `learning_rate` (`optim.optimizer`'s tx) over a [accum, micro, ...]
    batch; gradients are exact batch means."""
    grad_fn = jax.value_and_grad(functools.partial(_sums, graphdef, loss_fn), has_aux=True)
    first = jax.tree.map(lambda x: x[0], batch)
    _, (count0, extras0, _) = jax.eval_shape(lambda: _sums(graphdef, loss_fn, state.params, state.rest, first, True))
    zeros = lambda tree: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree)

    def micro(carry, micro_batch):
        grads, rest, loss, count, extras = carry
        (l, (c, e, rest)), g = grad_fn(state.params, rest, micro_batch, True)
        grads = jax.lax.with_sharding_constraint(jax.tree.map(jnp.add, grads, g), param_shardings)
        return (grads, rest, loss + l, count + c, jax.tree.map(jnp.add, extras, e)), None

    init = (jax.tree.map(jnp.zeros_like, state.params), state.rest, jnp.zeros((), jnp.float32), zeros(count0), zeros(extras0))
    (grads, rest, loss, count, extras), _ = jax.lax.scan(micro, init, batch)
    denom = jnp.maximum(count, 1)
    grads = jax.tree.map(lambda g: g / denom, grads)
    updates, opt_state = tx.update(grads, with_learning_rate(state.opt_state, learning_rate), state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss / denom, "grad_norm": optax.global_norm(grads), "learning_rate": learning_rate,
               **{name: value / denom for name, value in extras.items()}}
    return TrainState(state.step + 1, params, opt_state, rest), metrics


def eval_sums(params: nnx.State, rest: nnx.State, batch: Batch, *, graphdef: nnx.GraphDef, loss_fn: LossFn):
    """(loss sum, count, extra sums) of one evaluation batch (no dropout)."""
    loss, (count, extras, _) = _sums(graphdef, loss_fn, params, rest, batch, False)
    return loss, count, extras


def init_state(model: nnx.Module, tx: optax.GradientTransformation, mesh: Mesh,
               rules: Rules) -> tuple[nnx.GraphDef, TrainState, TrainState]:
    """(graphdef, train state placed on the mesh by logical names, the state's shardings)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    param_shardings = sharding.state_shardings(params, mesh, rules)
    params = sharding.put(params, param_shardings)
    opt_shardings = sharding.like_params(jax.eval_shape(tx.init, params), params, param_shardings, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    shardings = TrainState(replicated, param_shardings, opt_shardings, sharding.state_shardings(rest, mesh, rules))
    state = TrainState(jnp.zeros((), jnp.int32), params, jax.jit(tx.init, out_shardings=opt_shardings)(params), rest)
    return graphdef, sharding.put(state, shardings), shardings


def jit_train_step(graphdef: nnx.GraphDef, state_shardings: TrainState, loss_fn: LossFn,
                   tx: optax.GradientTransformation):
    """`train_step` jitted with the state donated and laid out by `state_shardings` in and out."""
    replicated = NamedSharding(state_shardings.step.mesh, PartitionSpec())
    step = functools.partial(train_step, graphdef=graphdef, loss_fn=loss_fn, tx=tx,
                             param_shardings=state_shardings.params)
    return jax.jit(step, in_shardings=(state_shardings, None, replicated),
                   out_shardings=(state_shardings, replicated), donate_argnums=0)


def _check_batch(config: TrainConfig, mesh: Mesh, rules: Rules) -> int:
    """The micro-batch size, after checking it splits over accumulation, mesh and hosts."""
    if config.batch_size % config.grad_accum_steps:
        raise ValueError(f"TrainConfig: batch_size {config.batch_size} is not a multiple of "
                         f"grad_accum_steps {config.grad_accum_steps}")
    micro = config.batch_size // config.grad_accum_steps
    spec = sharding.logical_to_spec(("batch",), rules, mesh)[0]
    shards = int(np.prod([mesh.shape[a] for a in ((spec,) if isinstance(spec, str) else spec or ())]))
    if micro % shards or micro % jax.process_count():
        raise ValueError(f"TrainConfig: micro-batch {micro} (batch_size / grad_accum_steps) must be a multiple "
                         f"of the {shards} batch shards of the mesh and of the {jax.process_count()} processes")
    return micro


def train(workdir: str, *, model: nnx.Module, task: Task, train_examples: Sequence[Any],
          eval_examples: Sequence[Any] = (), config: TrainConfig, mesh: Mesh,
          rules: Rules = TRAIN_RULES) -> nnx.Module:
    """Trains `model` on `train_examples`, resuming from `workdir/checkpoints` if a run was there.

    Writes metrics.jsonl, TensorBoard events and checkpoints into `workdir`; returns the model
    with the final parameters (sharded on `mesh`).
    """
    micro = _check_batch(config, mesh, rules)
    if not train_examples:
        raise ValueError(f"{workdir}: no training examples")
    if len(train_examples) < config.batch_size:  # e.g. a round that solved a few problems
        logging.getLogger(__name__).warning(
            "%s: %d training examples make no batch of %d; repeating them to fill one", workdir,
            len(train_examples), config.batch_size)
        train_examples = [train_examples[i % len(train_examples)] for i in range(config.batch_size)]
    lengths = [data.example_length(e) for e in train_examples]
    per_epoch = len(data.epoch_batches(lengths, config.batch_size, config.seed, 0))
    total_steps = config.max_steps or config.num_epochs * per_epoch
    tx, schedule = optimizer(config), learning_rate_schedule(config, total_steps)

    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        graphdef, state, state_shardings = init_state(model, tx, mesh, rules)
        checkpoints = Checkpoints(workdir, config)
        start = checkpoints.latest_step() or 0
        if start:
            abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
            state, _ = checkpoints.restore(start, abstract)

        step_fn = jit_train_step(graphdef, state_shardings, task.loss_fn, tx)
        replicated = NamedSharding(mesh, PartitionSpec())
        eval_fn = jax.jit(functools.partial(eval_sums, graphdef=graphdef, loss_fn=task.loss_fn),
                          out_shardings=replicated)

        def make_batch(examples: Sequence[Any | None], accum: int | None) -> tuple[Batch, int]:
            """Global arrays ([accum, micro, ...] or [micro, ...]) and the batch's real token count."""
            longest = max((data.example_length(e) for e in examples if e is not None), default=1)
            # Two lengths per doubling: a 136-token batch pads to 192, not 256; past max_length
            # only for a longer row (a PPM row packs two views of up to max_length of one prompt).
            padded = bucket(longest, config.min_bucket_length, per_doubling=2)
            length = padded if longest > config.max_length else min(padded, config.max_length)
            host = task.collate(examples, length)
            tokens = int(host["mask"].sum())
            if accum is not None:
                host = {k: v.reshape(accum, micro, *v.shape[1:]) for k, v in host.items()}
            batch_dim = 0 if accum is None else 1
            rows = sharding.host_rows(micro)
            local = {k: np.take(v, np.arange(micro)[rows], axis=batch_dim) for k, v in host.items()}
            return sharding.global_batch(local, mesh, rules, batch_dim), tokens

        def evaluate() -> dict[str, float]:
            totals: dict[str, float] = {}
            for idx in data.eval_batches(len(eval_examples), micro):
                batch, _ = make_batch([eval_examples[i] if i >= 0 else None for i in idx], None)
                loss, count, extras = jax.device_get(eval_fn(state.params, state.rest, batch))
                for name, value in {"loss": loss, "count": count, **extras}.items():
                    totals[name] = totals.get(name, 0.0) + float(value)
            count = max(totals.pop("count"), 1.0)
            return {f"eval/{name}": value / count for name, value in totals.items()}

        writer = MetricsWriter(workdir, start)
        progress = tqdm(total=total_steps, initial=start, desc="train", disable=jax.process_index() != 0)
        order = functools.lru_cache(maxsize=1)(
            lambda epoch: data.epoch_batches(lengths, config.batch_size, config.seed, epoch))
        tokens_since, clock = 0, time.perf_counter()
        for step in range(start, total_steps):
            epoch, index = divmod(step, per_epoch)
            batch, tokens = make_batch([train_examples[i] for i in order(epoch)[index]], config.grad_accum_steps)
            state, metrics = step_fn(state, batch, np.float32(schedule(step)))
            tokens_since += tokens
            done = step + 1
            log = done % config.log_every == 0 or done == total_steps
            run_eval = bool(eval_examples) and ((config.eval_every and done % config.eval_every == 0)
                                                 or done == total_steps)
            if log or run_eval:
                record = {name: float(value) for name, value in jax.device_get(metrics).items()}
                elapsed, clock = time.perf_counter() - clock, time.perf_counter()
                record.update(tokens_per_s=tokens_since / elapsed, epoch=epoch)
                tokens_since = 0
                if run_eval:
                    record.update(evaluate())
                writer.write(done, record)
                progress.set_postfix(loss=f"{record['loss']:.4f}")
            if done % config.checkpoint_every == 0 or done == total_steps:
                checkpoints.save(done, state, {"step": done, "epoch": done // per_epoch, "batch": done % per_epoch})
            progress.update(1)
        progress.close()
        writer.close()
        checkpoints.close()
    return nnx.merge(graphdef, state.params, state.rest)


def load_for_training(path: str, config: TrainConfig, mesh: Mesh) -> tuple[Decoder, Any]:
    """An HF model sharded for training: fp32 master weights, rStar's special tokens in its
    vocabulary (they may be new to a base model), remat as configured; and its tokenizer."""
    model, tokenizer = load_hf(path, mesh=mesh, rules=TRAIN_RULES, dtype=config.compute_dtype,
                               param_dtype="float32")
    resize_embeddings(model, len(tokenizer))
    model.config = dataclasses.replace(model.config, remat=config.remat)
    return model, tokenizer
