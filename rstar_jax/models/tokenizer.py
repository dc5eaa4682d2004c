"""Tokenizers: HF tokenizers of a checkpoint, or SentencePiece trained from scratch, with rStar's
special tokens added as atomic tokens (spec §2.1), and embedding resizing for the new tokens."""

from __future__ import annotations

import dataclasses
import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import jax.numpy as jnp
import sentencepiece
import transformers
from sentencepiece import sentencepiece_model_pb2
from tokenizers import AddedToken
from transformers.convert_slow_tokenizer import SpmConverter

from rstar_jax.models.decoder import Decoder
from rstar_jax.models.files import write_dir_atomically
from rstar_jax.steps import SPECIAL_TOKENS


# Any of these holds a tokenizer's vocabulary (fast tokenizers, SentencePiece, byte-level BPE).
VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


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


def sequence_start(tokenizer: transformers.PreTrainedTokenizerBase) -> list[int]:
    """The special tokens the tokenizer puts before a text (a BOS for Llama-style tokenizers, none
    for Qwen's), found by encoding a probe with and without them."""
    probe = "0"
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    bare = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    for i in range(len(full) - len(bare) + 1):
        if full[i:i + len(bare)] == bare:
            return full[:i]
    return []


def encode(tokenizer: transformers.PreTrainedTokenizerBase, texts: Sequence[str], *, start: bool = True,
           offsets: bool = False):
    """Token ids of `texts` under the one rule every stage follows (SFT and PPM training, sampling,
    PPM scoring): a sequence begins with the tokenizer's `sequence_start` (its BOS, if it adds
    one) and nothing is appended after a text (SFT appends its EOS itself). `start=False` encodes
    a continuation (a response, a step) that follows a prompt, without them.

    The original: SFT (`train_SFT.py`: `tokenizer(text, ...)`) and vLLM's generate / encode
    tokenize with the default `add_special_tokens=True`; only its PPM training
    (`train/rm.py`: `encode(..., add_special_tokens=False)`) drops the BOS that its vLLM scoring
    then adds. We keep the BOS in PPM training too, so the PPM is scored on the stream it learnt.
    (Qwen2.5's tokenizer adds none, so for the paper's models all of this is the same.)

    Returns the ids (lists), or (ids, offset mappings) with `offsets`; start tokens get (0, 0).
    """
    texts = list(texts)
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=offsets)
    head = sequence_start(tokenizer) if start else []
    ids = [head + list(x) for x in enc["input_ids"]]
    if not offsets:
        return ids
    return ids, [[(0, 0)] * len(head) + [tuple(o) for o in x] for x in enc["offset_mapping"]]


def load_tokenizer(path: str | os.PathLike) -> transformers.PreTrainedTokenizerFast:
    """The tokenizer stored in an HF directory (local files only), with rStar's special tokens."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: tokenizer directory not found")
    # transformers would build an empty tokenizer from config.json alone; refuse instead.
    if not any((path / name).exists() for name in VOCAB_FILES):
        raise FileNotFoundError(f"{path}: no tokenizer files (looked for {', '.join(VOCAB_FILES)})")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"{path}: no loadable tokenizer files ({e})") from None
    add_special_tokens(tokenizer)
    return tokenizer


_NUMBER = re.compile(r"[0-9]+")
_NUMBER_EDGE = "\u241f"  # splits the training text there and is dropped; no text holds it


def train_sentencepiece(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike, *,
                        split_digits: bool = True) -> transformers.PreTrainedTokenizerFast:
    """Trains a byte-fallback SentencePiece BPE of (up to, for a small corpus) `vocab_size` pieces on
    `texts` and saves it in `out_dir` as an HF fast tokenizer (`AutoTokenizer.from_pretrained`
    loads it); returns it loaded from there.

    rStar's special tokens are user-defined pieces, so they are atomic from the start. Text is not
    normalised and gets no dummy prefix, so decoding gives back the exact text. Ids 0-3 are
    <unk>, <s>, </s> and <pad>. `split_digits` keeps every digit its own piece (as Qwen2's
    tokenizer does); without it frequent numbers become single pieces, each the same piece in every
    context ("35" in " 35 coins", `x = 35`, `<output>35` and `\\boxed{35}`; the space before a
    number is a piece of its own), so copying a number is copying one token.
    """
    if not split_digits:  # no piece may cross a number's edges: " {35}." stays "\u2581{", "35", "}."
        texts = (_NUMBER.sub(rf"{_NUMBER_EDGE}\g<0>{_NUMBER_EDGE}", t) for t in texts)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
        pretokenization_delimiter="" if split_digits else _NUMBER_EDGE, hard_vocab_limit=False,
        model_type="bpe", byte_fallback=True, character_coverage=1.0,
        split_digits=split_digits, user_defined_symbols=list(SPECIAL_TOKENS), normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=False, allow_whitespace_only_pieces=True,
        max_sentence_length=1 << 20, unk_id=0, bos_id=1, eos_id=2, pad_id=3, minloglevel=2)
    proto = sentencepiece_model_pb2.ModelProto.FromString(model.getvalue())
    vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    # transformers' converter reproduces SentencePiece's own encoding with `tokenizers`.
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=False)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        pad_token="<pad>")
    add_special_tokens(tokenizer)
    write_dir_atomically(out_dir, tokenizer.save_pretrained)
    return load_tokenizer(out_dir)


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
