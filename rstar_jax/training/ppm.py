"""Process preference model training on rStar `{prompt, pos, neg, pos_count, neg_count}` pairs (spec §5)."""

from __future__ import annotations

import os

import jax
from flax import nnx

from rstar_jax.config import MeshConfig, PPMConfig, TrainConfig
from rstar_jax.data.records import read_pairs
from rstar_jax.models.hf import check_readout, load_value_head, save_ppm_hf
from rstar_jax.models.ppm import ProcessRewardModel
from rstar_jax.parallel.hosts import initialize_distributed
from rstar_jax.parallel.mesh import make_mesh
from rstar_jax.parallel.sharding import constrain
from rstar_jax.training import data, losses
from rstar_jax.training.loop import Batch, Task, load_for_training, train


def ppm_loss_fn(model: ProcessRewardModel, batch: Batch, train: bool) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """Weighted pairwise loss of `data.collate_pairs`' rows: the prompt runs once, pos and neg
    after it each see the prompt and themselves only, and each is scored as `PPMConfig.readout`
    says (at its last token, or over its tokens)."""
    tokens = constrain(batch["tokens"], ("batch", "length"))
    raw = model.score_branches(tokens, batch["positions"], batch["mask"], batch["branches"], batch["ends"],
                               deterministic=not train)
    loss, count, correct = losses.ppm_loss(raw[:, 0], raw[:, 1], batch["weights"])
    return loss, count, {"accuracy": correct}


PPM = Task(loss_fn=ppm_loss_fn, collate=data.collate_pairs)


def train_ppm(workdir: str, *, policy_model: str, train_file: str, config: TrainConfig = TrainConfig(),
              mesh: MeshConfig = MeshConfig(), ppm_config: PPMConfig = PPMConfig(),
              init_ppm: str | None = None) -> str:
    """Trains a PPM initialised from the HF policy directory `policy_model` (a fresh value head on
    it), or from the PPM directory `init_ppm` (`save_ppm_hf`'s) when given, on the pairs in `train_file`.

    `config.eval_fraction` of the pairs (rStar: 0.05) is held out; its loss and pairwise accuracy
    are logged. The run lives in `workdir` and resumes there. Returns the exported PPM directory
    (`workdir/hf`: backbone HF directory + value_head.safetensors).
    """
    initialize_distributed()
    device_mesh = make_mesh(mesh)
    pairs = read_pairs(train_file)
    if not pairs:
        raise ValueError(f"{train_file}: no preference pairs to train on")
    # A saved PPM directory is an HF backbone directory plus its value head.
    backbone, tokenizer = load_for_training(init_ppm or policy_model, config, device_mesh)
    model = ProcessRewardModel(backbone.config, ppm_config, rngs=nnx.Rngs(config.seed), backbone=backbone)
    if init_ppm is not None:
        check_readout(ppm_config, init_ppm)
        load_value_head(model, init_ppm)
    examples = data.encode_pairs(pairs, tokenizer, config.max_length)
    train_idx, eval_idx = data.split_heldout(len(examples), config.eval_fraction, config.seed)
    model = train(workdir, model=model, task=PPM, train_examples=[examples[i] for i in train_idx],
                  eval_examples=[examples[i] for i in eval_idx], config=config, mesh=device_mesh)
    out = os.path.join(workdir, "hf")
    save_ppm_hf(model, tokenizer, out)
    return out
