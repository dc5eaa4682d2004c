"""The loop sets the learning rate every step: updates follow the schedule, and trainings of
different lengths run the same compiled step (the persistent compilation cache then serves it)."""

import dataclasses
import json

import jax
import numpy as np
import optax
from flax import nnx

from rstar_jax.config import MeshConfig, TrainConfig
from rstar_jax.models.decoder import Decoder
from rstar_jax.parallel.mesh import make_mesh
from rstar_jax.training import data, loop
from rstar_jax.training.optim import learning_rate_schedule, optimizer
from rstar_jax.training.sft import SFT
from test_resume import CONFIG, TINY, _examples


def _train(workdir, examples, config=CONFIG):
    model = loop.train(str(workdir), model=Decoder(TINY, rngs=nnx.Rngs(0)), task=SFT, train_examples=examples,
                       config=config, mesh=make_mesh(MeshConfig()))
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return nnx.state(model, nnx.Param), metrics


def test_updates_follow_the_schedule_as_an_optax_adamw_with_it_would(tmp_path):
    config = dataclasses.replace(CONFIG, grad_accum_steps=1, weight_decay=0.1, max_grad_norm=0.5, num_epochs=1)
    examples = _examples()
    params, metrics = _train(tmp_path, examples, config)
    schedule = learning_rate_schedule(config, 3)
    np.testing.assert_allclose([m["learning_rate"] for m in metrics], [schedule(s) for s in range(3)], rtol=1e-6)
    assert metrics[0]["learning_rate"] == 0.0 and metrics[1]["learning_rate"] > 0  # warmup from 0

    # The same three steps with the schedule inside optax's AdamW (decay mask as the optimizer's).
    model = Decoder(TINY, rngs=nnx.Rngs(0))
    graphdef, ref, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adamw(
        schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps, weight_decay=config.weight_decay,
        mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)))
    opt_state = tx.init(ref)
    lengths = [data.example_length(e) for e in examples]
    for batch_ids in data.epoch_batches(lengths, config.batch_size, config.seed, 0):
        batch = {k: jax.numpy.asarray(v) for k, v in SFT.collate([examples[i] for i in batch_ids], 16).items()}

        def loss(p):
            total, count, _ = SFT.loss_fn(nnx.merge(graphdef, p, rest, copy=True), batch, True)
            return total / count

        updates, opt_state = tx.update(jax.grad(loss)(ref), opt_state, ref)
        ref = optax.apply_updates(ref, updates)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params, ref)


def test_weight_decay_spares_biases_and_norm_scales():
    """As HF's trainer: the attention's biases are [heads, head_dim], two dimensions, yet not decayed."""
    model = Decoder(dataclasses.replace(TINY, attention_bias=True), rngs=nnx.Rngs(0))
    params = jax.tree.map(np.ones_like, nnx.state(model, nnx.Param))  # biases start at 0: nothing to decay
    tx = optimizer(TrainConfig(learning_rate=1.0, weight_decay=0.5, max_grad_norm=0.0))
    updates, _ = tx.update(jax.tree.map(np.zeros_like, params), tx.init(params), params)
    decayed = {jax.tree_util.keystr(path): bool(np.any(u)) for path, u in jax.tree_util.tree_leaves_with_path(updates)}
    assert decayed["['layers'][0]['self_attn']['q_proj']['kernel'].value"]
    assert not any(d for name, d in decayed.items() if "bias" in name or "scale" in name)
    assert any("bias" in name for name in decayed)


def test_trainings_of_different_lengths_lower_to_one_program(tmp_path, monkeypatch):
    programs = []
    jit_train_step = loop.jit_train_step

    def recording(*args):  # keeps the program of each training's first step
        step = jit_train_step(*args)
        first = True

        def run(*inputs):
            nonlocal first
            if first:
                programs.append(step.lower(*inputs).as_text())
                first = False
            return step(*inputs)

        return run

    monkeypatch.setattr(loop, "jit_train_step", recording)
    examples = _examples()
    _, short = _train(tmp_path / "short", examples[:8])
    _, long = _train(tmp_path / "long", examples + examples)
    assert len(short) < len(long) and len(programs) == 2
    assert programs[0] == programs[1]
