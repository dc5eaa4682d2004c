"""Trains a tiny policy (SFT) and PPM on 1 device and on 8-device meshes; prints one JSON report.

Run by test_sharded.py in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8
(the flag must be set before jax starts, and must not leak into other tests).
"""

import json
import sys
import tempfile

import jax
import numpy as np
from flax import nnx

from rstar_jax.config import MeshConfig, ModelConfig, PPMConfig, TrainConfig
from rstar_jax.models.decoder import Decoder
from rstar_jax.models.ppm import ProcessRewardModel
from rstar_jax.parallel.mesh import make_mesh
from rstar_jax.training import data, loop
from rstar_jax.training.ppm import PPM
from rstar_jax.training.sft import SFT

TINY = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                   num_key_value_heads=2, attention_bias=True)
CONFIG = TrainConfig(learning_rate=1e-2, batch_size=16, grad_accum_steps=2, num_epochs=1, max_length=32,
                     min_bucket_length=32, compute_dtype="float32", checkpoint_every=100, log_every=1)
MESHES = {"1": (1, 1, 1), "8x1x1": (8, 1, 1), "2x4x1": (2, 4, 1), "2x2x2": (2, 2, 2)}
SPECS = {  # parameters whose sharding the report shows
    "embedding": ("backbone", "embed_tokens", "embedding"),
    "q_kernel": ("backbone", "layers", 0, "self_attn", "q_proj", "kernel"),
    "k_kernel": ("backbone", "layers", 0, "self_attn", "k_proj", "kernel"),
    "up_kernel": ("backbone", "layers", 0, "mlp", "up_proj", "kernel"),
    "down_kernel": ("backbone", "layers", 0, "mlp", "down_proj", "kernel"),
    "lm_head": ("backbone", "lm_head", "kernel"),
}


def examples():
    rng = np.random.default_rng(0)
    ids = lambda: rng.integers(0, 64, size=rng.integers(6, 32)).astype(np.int32)
    sft = [data.SFTExample(ids(), prompt_len=4) for _ in range(48)]
    pairs = [data.PairExample(ids(), ids(), ids(), 0.25) for _ in range(48)]
    return sft, pairs


def run(task, model, train_examples, mesh, workdir):
    model = loop.train(workdir, model=model, task=task, train_examples=train_examples, config=CONFIG, mesh=mesh)
    losses = [json.loads(line)["loss"] for line in open(f"{workdir}/metrics.jsonl")]
    return losses, model


def main():
    assert len(jax.devices()) == 8, jax.devices()
    sft, pairs = examples()
    report = {}
    for name, shape in MESHES.items():
        devices = jax.devices()[: int(np.prod(shape))]
        mesh = make_mesh(MeshConfig(*shape), devices)
        with tempfile.TemporaryDirectory() as sft_dir, tempfile.TemporaryDirectory() as ppm_dir:
            sft_losses, policy = run(SFT, Decoder(TINY, rngs=nnx.Rngs(0)), sft, mesh, sft_dir)
            ppm = ProcessRewardModel(TINY, PPMConfig(dropout=0.1), rngs=nnx.Rngs(1))
            ppm_losses, ppm = run(PPM, ppm, pairs, mesh, ppm_dir)
        state = nnx.state(ppm, nnx.Param)
        report[name] = {
            "sft_losses": sft_losses,
            "ppm_losses": ppm_losses,
            "specs": {k: [list(a) if isinstance(a, tuple) else a for a in _at(state, p).get_value().sharding.spec]
                      for k, p in SPECS.items()},
            "mesh": dict(mesh.shape),
        }
        params = {"sft": nnx.state(policy, nnx.Param), "ppm": state}
        flat = {k: [np.asarray(x) for x in jax.tree.leaves(v)] for k, v in params.items()}
        if name == "1":
            reference = flat
        report[name]["max_param_diff"] = {
            k: max(float(np.max(np.abs(a - b))) for a, b in zip(flat[k], reference[k], strict=True)) for k in flat}
    json.dump(report, sys.stdout)


def _at(tree, path):
    for key in path:
        tree = tree[key]
    return tree


if __name__ == "__main__":
    main()
