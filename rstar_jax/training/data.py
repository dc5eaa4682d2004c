"""Token-level training data: SFT sequences and PPM preference pairs, bucketed into batches.

Records come in rStar's formats (`rstar_jax.data.records`). Batches have fixed row counts; the
training loop pads their length to one of two sizes per doubling, so a run compiles its step a few
times at most. The order of an epoch is a pure function of (seed, epoch), which makes a resumed
run see the same batches.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

from rstar_jax.data.records import PreferencePair, SFTRecord
from rstar_jax.models.tokenizer import encode
from rstar_jax import steps as sf


@dataclasses.dataclass(frozen=True)
class SFTExample:
    """Prompt + response + EOS token ids; the loss covers the ids from `prompt_len` on, except those
    that `learned` (bool per id, when given) marks False."""

    ids: np.ndarray
    prompt_len: int
    learned: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class PairExample:
    """A prompt and the chosen and rejected steps that continue it (token ids), with the pair's
    loss weight. A batch packs them in one row, prompt + pos + neg (`collate_pairs`)."""

    prompt: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    weight: float


def _encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], start: bool) -> list[list[int]]:
    """`models.tokenizer.encode`: the tokenizer's BOS (if any) before prompts (`start`), never
    before the response or step that continues one; the same rule as sampling and scoring."""
    return encode(tokenizer, texts, start=start)


# What the code interpreter appends to a step (sf.wrap_output); the policy never writes it.
_INTERPRETER_TEXT = re.compile(re.escape(sf.STEP_DELIM + sf.OUTPUT) + ".*?"
                               + re.escape(sf.OUTPUT_END), re.DOTALL)


def _encode_responses(tokenizer: PreTrainedTokenizerBase, responses: Sequence[str]
                      ) -> tuple[list[list[int]], list[list[bool]]]:
    """Each response's ids, and for each id whether the policy writes it: False for tokens that start
    inside interpreter output. Learning to predict those teaches a model to guess a program's
    result instead of reading it, and at inference the interpreter writes them anyway."""
    ids, offset_lists = encode(tokenizer, responses, start=False, offsets=True)
    written = []
    for response, offsets in zip(responses, offset_lists, strict=True):
        spans = [m.span() for m in _INTERPRETER_TEXT.finditer(response)]
        written.append([not any(a <= start < b for a, b in spans) for start, _ in offsets])
    return ids, written


def encode_sft(records: Sequence[SFTRecord], tokenizer: PreTrainedTokenizerBase, max_length: int,
               train_on_outputs: bool = True, chat: bool = True) -> list[SFTExample]:
    """`policy_prompt(query)` + response + EOS, truncated to `max_length` keeping the beginning; without
    `chat`, the query as it stands is the prompt (plain text, no user and assistant turns).

    Without `train_on_outputs`, interpreter output in the responses carries no loss.
    Examples whose prompt alone fills `max_length` have nothing to learn from and are dropped.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("SFT needs a tokenizer with an EOS token (its id ends every response)")
    prompts = _encode(tokenizer, [sf.policy_prompt(r.query) if chat else r.query for r in records], start=True)
    texts = [r.response for r in records]
    if train_on_outputs:
        responses, written = _encode(tokenizer, texts, start=False), [None] * len(texts)
    else:  # offsets need a fast tokenizer, so only this path asks for them
        responses, written = _encode_responses(tokenizer, texts)
    out = []
    for prompt, response, policy_written in zip(prompts, responses, written, strict=True):
        ids = (prompt + response + [tokenizer.eos_token_id])[:max_length]
        learned = (None if policy_written is None
                   else np.asarray([False] * len(prompt) + policy_written + [True])[:max_length])
        if len(prompt) < len(ids):
            out.append(SFTExample(np.asarray(ids, np.int32), len(prompt), learned))
    return out


def pair_weight(pos_count: int, neg_count: int) -> float:
    """rStar's pair weight: 1/(pos*neg), or 1/(pos+neg) when either count is 0 (spec §5)."""
    if pos_count == 0 or neg_count == 0:
        return 1.0 / max(pos_count + neg_count, 1)
    return 1.0 / (pos_count * neg_count)


def encode_pairs(records: Sequence[PreferencePair], tokenizer: PreTrainedTokenizerBase, max_length: int) -> list[PairExample]:
    """Prompt, pos and neg token ids; prompt + pos and prompt + neg each truncated to `max_length`
    keeping the beginning. Pairs whose prompt alone fills `max_length` compare nothing and are dropped."""
    prompts = _encode(tokenizer, [r.prompt for r in records], start=True)
    pos = _encode(tokenizer, [r.pos for r in records], start=False)
    neg = _encode(tokenizer, [r.neg for r in records], start=False)
    ids = lambda x: np.asarray(x, np.int32)
    return [
        PairExample(ids(p), ids(a[:max_length - len(p)]), ids(b[:max_length - len(p)]),
                    pair_weight(r.pos_count, r.neg_count))
        for r, p, a, b in zip(records, prompts, pos, neg, strict=True) if len(p) < max_length
    ]


def split_heldout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (train, held-out) index split; the held-out share is `fraction` of `n` (at least 1 if > 0)."""
    order = np.random.default_rng(seed).permutation(n)
    n_eval = min(n - 1, max(1, round(n * fraction))) if fraction > 0 else 0
    return np.sort(order[n_eval:]), np.sort(order[:n_eval])


def example_length(example: SFTExample | PairExample) -> int:
    if isinstance(example, SFTExample):
        return len(example.ids)
    return len(example.prompt) + len(example.pos) + len(example.neg)


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Index batches of one epoch: shuffled, then sorted by length within windows of 32 batches
    (so a batch pads little), then the batches shuffled; the last partial batch is dropped."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    lengths = np.asarray(lengths)
    window = 32 * batch_size
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(n: int, batch_size: int) -> list[np.ndarray]:
    """Index batches covering 0..n-1 in order; the last one is padded with -1 (an empty row)."""
    padded = np.full(-(-n // batch_size) * batch_size, -1)
    padded[:n] = np.arange(n)
    return list(padded.reshape(-1, batch_size))


def _row(ids: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, np.int32)
    out[: len(ids)] = ids
    return out


def collate_sft(examples: Sequence[SFTExample | None], length: int) -> dict[str, np.ndarray]:
    """[B, T] arrays: tokens, attention mask, next-token targets and their loss weights
    (1 on response and EOS targets, 0 on prompt and padding). None rows are empty."""
    b = len(examples)
    tokens, targets = np.zeros((b, length), np.int32), np.zeros((b, length), np.int32)
    weights, mask = np.zeros((b, length), np.float32), np.zeros((b, length), bool)
    for i, ex in enumerate(examples):
        if ex is None:
            continue
        n = len(ex.ids)
        tokens[i] = _row(ex.ids, length)
        targets[i, : n - 1] = ex.ids[1:]
        # target t is token t+1; with no prompt the first token has nothing before it to predict it
        first = max(ex.prompt_len, 1)
        weights[i, first - 1 : n - 1] = 1.0 if ex.learned is None else ex.learned[first:]
        mask[i, :n] = True
    return {"tokens": tokens, "mask": mask, "targets": targets, "weights": weights}


def collate_pairs(examples: Sequence[PairExample | None], length: int) -> dict[str, np.ndarray]:
    """One row per pair, prompt + pos + neg, the prompt read once for both steps: [B, T] tokens,
    mask, positions (neg's continue the prompt's, as pos's do) and branches (0 prompt, 1 pos,
    2 neg: the decoder's `branch_bt`), [B, 2] the positions of pos's and neg's last tokens and
    [B] pair weights. None rows weigh 0."""
    b = len(examples)
    tokens, positions = np.zeros((b, length), np.int32), np.zeros((b, length), np.int32)
    branches, mask = np.zeros((b, length), np.int32), np.zeros((b, length), bool)
    ends, weights = np.zeros((b, 2), np.int32), np.zeros((b,), np.float32)
    for i, ex in enumerate(examples):
        if ex is None:
            continue
        p, a, c = len(ex.prompt), len(ex.pos), len(ex.neg)
        n = p + a + c
        tokens[i] = _row(np.concatenate([ex.prompt, ex.pos, ex.neg]), length)
        mask[i, :n] = True
        positions[i, :p + a] = np.arange(p + a)
        positions[i, p + a:n] = np.arange(p, n - a)
        branches[i, p:p + a], branches[i, p + a:n] = 1, 2
        ends[i] = (p + a - 1 if a else p - 1), (n - 1 if c else p - 1)  # an empty step: the prompt's score
        weights[i] = ex.weight
    return {"tokens": tokens, "mask": mask, "positions": positions, "branches": branches, "ends": ends,
            "weights": weights}
