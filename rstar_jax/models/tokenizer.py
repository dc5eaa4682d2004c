"""Tokenizers: HF tokenizers of a checkpoint, or SentencePiece trained from scratch, with rStar's
special tokens added as atomic tokens (spec §2.1), and embedding resizing for the new tokens."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax.numpy as jnp
import transformers
from tokenizers import AddedToken

from rstar_jax.models.decoder import Decoder
from rstar_jax.search.step_format import SPECIAL_TOKENS


def add_special_tokens(tokenizer: transformers.PreTrainedTokenizerBase) -> int:
    """Adds rStar's special tokens as atomic, unnormalised tokens; returns how many were new.

    A tokenizer without a pad token pads with its eos token (as rStar's training does).
    """
    tokens = [AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False)
              for t in SPECIAL_TOKENS]
    added = tokenizer.add_special_tokens({"extra_special_tokens": tokens},
                                         replace_extra_special_tokens=False)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return added


def load_tokenizer(path: str | os.PathLike) -> transformers.PreTrainedTokenizerFast:
    """The tokenizer stored in an HF directory (local files only), with rStar's special tokens."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: tokenizer directory not found")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"{path}: no loadable tokenizer files ({e})") from None
    add_special_tokens(tokenizer)
    return tokenizer


def resize_embeddings(model: Decoder, num_tokens: int) -> Decoder:
    """Grows the vocabulary to `num_tokens` in place (no-op if it is already large enough).

    New embedding rows (and LM-head columns when untied) are the mean of the old ones, so new
    tokens start as an "average" token instead of noise.
    """
    old = model.config.vocab_size
    if num_tokens <= old:
        return model
    embedding = model.embed_tokens.embedding
    rows = embedding.get_value()
    mean = rows.mean(axis=0, keepdims=True)
    embedding.set_value(jnp.concatenate([rows, jnp.repeat(mean, num_tokens - old, axis=0)]))
    model.embed_tokens.num_embeddings = num_tokens
    if not model.config.tie_word_embeddings:
        kernel = model.lm_head.kernel
        cols = kernel.get_value()
        mean = cols.mean(axis=1, keepdims=True)
        kernel.set_value(jnp.concatenate([cols, jnp.repeat(mean, num_tokens - old, axis=1)], axis=1))
        model.lm_head.out_features = num_tokens
    model.config = dataclasses.replace(model.config, vocab_size=num_tokens)
    return model
