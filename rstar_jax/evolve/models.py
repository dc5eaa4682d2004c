"""A round's model stages: the from-scratch tokenizer and initial policy (curriculum runs), policy
SFT and PPM training. The model stack is imported inside each, so manifests and records need none
of it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from rstar_jax.config import EvolveConfig, ParallelConfig, TrainConfig
from rstar_jax.data import records


def model_stack(config: EvolveConfig, policy_dir: str, ppm_dir: str | None):
    """The sampler, scorer and executor that a round's search or evaluation works with, laid out by
    `EvolveConfig.mesh` (an `inference.stack.ModelStack`, a context manager)."""
    from rstar_jax.inference.stack import ModelStack

    return ModelStack(policy_dir, ppm_dir, sampler=config.sampler, scorer=config.scorer,
                      exec_workers=config.exec_workers, exec_timeout_s=config.exec_timeout_s,
                      parallel=ParallelConfig(mesh=config.mesh))


def train_tokenizer(out_dir: str, texts: list[str], vocab_size: int, split_digits: bool = True) -> str:
    from rstar_jax.models.tokenizer import train_sentencepiece

    train_sentencepiece(texts, vocab_size, out_dir, split_digits=split_digits)
    return out_dir


def init_policy(out_dir: str, tokenizer_dir: str, config: EvolveConfig) -> str:
    """A randomly initialised decoder sized to the tokenizer, saved as the round-0 base model."""
    from flax import nnx

    from rstar_jax.models.decoder import Decoder
    from rstar_jax.models.hf import save_hf
    from rstar_jax.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    model_config = dataclasses.replace(
        config.model, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    save_hf(Decoder(model_config, rngs=nnx.Rngs(config.seed)), tokenizer, out_dir)
    return out_dir


def train_recital(run_dir: str, init: str, recitals: list[records.SFTRecord], config: EvolveConfig) -> str:
    """The from-scratch policy trained on plain-text recitals (`problems.recital_records`) with
    `config.recital_train`; written to and resumed from `run_dir`."""
    if not recitals:
        raise ValueError("recital stage: no training question is a curriculum story (nothing to recite)")
    return train_policy(run_dir, init, None, config, config.recital_train, recitals)


def train_policy(run_dir: str, base_model: str, sft_file: str | None, config: EvolveConfig, train: TrainConfig,
                 recitals: Sequence[records.SFTRecord] = ()) -> str:
    """`base_model` fine-tuned on the SFT records of `sft_file` and the plain-text `recitals` (kept
    as `run_dir`/recitals.json) with `train`; written to and resumed from `run_dir`."""
    from rstar_jax.training.sft import train_sft

    recital_file = None
    if recitals:
        recital_file = os.path.join(run_dir, "recitals.json")
        records.write_records(recital_file, recitals)
    return train_sft(run_dir, base_model=base_model, train_file=sft_file, plain_file=recital_file, config=train,
                     mesh=config.mesh)


def train_reward_model(run_dir: str, policy: str, pairs_file: str, config: EvolveConfig,
                       previous: str | None, train: TrainConfig) -> str:
    """The round's PPM, trained with `train` from the round's policy or (`EvolveConfig.ppm_base`)
    from the previous round's PPM when there is one (a round without pairs trains none: `run.fine_tune`)."""
    from rstar_jax.training.ppm import train_ppm

    start = previous if config.ppm_base == "previous" else None
    return train_ppm(run_dir, policy_model=policy, train_file=pairs_file, config=train,
                     mesh=config.mesh, ppm_config=config.ppm, init_ppm=start)
