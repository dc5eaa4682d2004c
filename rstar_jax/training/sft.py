"""Supervised fine-tuning of the policy on rStar `{query, response}` records (spec §6)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from rstar_jax.config import MeshConfig, TrainConfig
from rstar_jax.data.records import read_sft
from rstar_jax.models.decoder import Decoder
from rstar_jax.models.hf import save_hf
from rstar_jax.parallel.hosts import initialize_distributed
from rstar_jax.parallel.mesh import make_mesh
from rstar_jax.parallel.sharding import constrain
from rstar_jax.training import data, losses
from rstar_jax.training.loop import Batch, Task, load_for_training, train


def sft_loss_fn(model: Decoder, batch: Batch, train: bool) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """Summed cross-entropy of the response + EOS targets of a right-padded batch, and their count."""
    del train  # the decoder has no dropout
    tokens = batch["tokens"]
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    logits, _ = model(tokens, positions, attention_mask_bt=batch["mask"])
    logits = constrain(logits, ("batch", "length", "vocab"))
    loss, count = losses.sft_loss(logits, batch["targets"], batch["weights"])
    return loss, count, {}


SFT = Task(loss_fn=sft_loss_fn, collate=data.collate_sft)


def train_sft(workdir: str, *, base_model: str, train_file: str | None = None, plain_file: str | None = None,
              config: TrainConfig = TrainConfig(), mesh: MeshConfig = MeshConfig()) -> str:
    """Fine-tunes the HF model directory `base_model` on the SFT records in `train_file`, each a chat
    turn (`policy_prompt(query)`, then the response), and on those in `plain_file`, each a plain-text
    prompt (the query as it stands) continued by its response (`data.encode_sft`).

    The run lives in `workdir` (checkpoints, metrics.jsonl, TensorBoard) and resumes there if
    started again. Returns the exported HF directory, `workdir/hf`.
    """
    initialize_distributed()
    device_mesh = make_mesh(mesh)
    sources = [(read_sft(path), chat) for path, chat in ((train_file, True), (plain_file, False)) if path]
    if not any(records for records, _ in sources):
        raise ValueError(f"train_sft: no SFT records to train on (train_file {train_file}, plain_file {plain_file})")
    model, tokenizer = load_for_training(base_model, config, device_mesh)
    examples = [example for records, chat in sources
                for example in data.encode_sft(records, tokenizer, config.max_length, config.train_on_outputs, chat)]
    train_idx, eval_idx = data.split_heldout(len(examples), config.eval_fraction, config.seed)
    model = train(workdir, model=model, task=SFT, train_examples=[examples[i] for i in train_idx],
                  eval_examples=[examples[i] for i in eval_idx], config=config, mesh=device_mesh)
    out = os.path.join(workdir, "hf")
    save_hf(model, tokenizer, out)
    return out
