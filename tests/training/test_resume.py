"""A run stopped after a checkpoint and started again ends exactly where an uninterrupted run does."""

import json
import shutil

import jax
import numpy as np
from flax import nnx

from rstar_jax.config import MeshConfig, ModelConfig, TrainConfig
from rstar_jax.models.decoder import Decoder
from rstar_jax.parallel.mesh import make_mesh
from rstar_jax.training import data, loop
from rstar_jax.training.sft import SFT

TINY = ModelConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2)
# 12 examples in batches of 4: 3 steps per epoch, 2 epochs, a checkpoint every 2 steps.
CONFIG = TrainConfig(learning_rate=1e-2, warmup_steps=1, batch_size=4, grad_accum_steps=2, num_epochs=2,
                     max_length=16, min_bucket_length=16, compute_dtype="float32", checkpoint_every=2,
                     keep_checkpoints=10, log_every=1)


def _examples():
    rng = np.random.default_rng(0)
    return [data.SFTExample(rng.integers(0, 50, size=rng.integers(4, 16)).astype(np.int32), prompt_len=2)
            for _ in range(12)]


def _run(workdir):
    model = loop.train(str(workdir), model=Decoder(TINY, rngs=nnx.Rngs(0)), task=SFT, train_examples=_examples(),
                       config=CONFIG, mesh=make_mesh(MeshConfig()))
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return nnx.state(model, nnx.Param), metrics


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    full_params, full_metrics = _run(tmp_path / "full")
    assert [m["step"] for m in full_metrics] == [1, 2, 3, 4, 5, 6]

    # The state of the workdir had the run been killed during step 5: checkpoints up to step 4,
    # metrics already written for step 5.
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "full", killed)
    shutil.rmtree(killed / "checkpoints" / "6")
    lines = [dict(m, before_kill=True) for m in full_metrics[:5]]
    (killed / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    resumed_params, resumed_metrics = _run(killed)

    # Steps 1-4 were kept (so the run resumed at step 4, not from scratch), step 5 was redone.
    assert [m["step"] for m in resumed_metrics] == [1, 2, 3, 4, 5, 6]
    assert [m.get("before_kill", False) for m in resumed_metrics] == [True] * 4 + [False] * 2
    for a, b in zip(full_metrics, resumed_metrics):
        assert a["loss"] == b["loss"] and a["learning_rate"] == b["learning_rate"]
    jax.tree.map(np.testing.assert_array_equal, full_params, resumed_params)
