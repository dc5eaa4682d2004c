"""Host side of stop strings: incremental detokenisation of each row, and the per-token stop table.

Stop strings are matched on decoded text, so a stop that spans several tokens, or sits inside a
longer token, is found exactly. Each row decodes token by token in the context of its prompt's
last tokens (tokenizers' `DecodeStream`, so multi-byte characters and SentencePiece's leading
spaces come out as in a full decode) and searches only the text that each token adds. The device
additionally ends a row as soon as it emits a token whose own text contains a stop string (the
common case: rStar's stops are atomic special tokens), so such rows do not run on until the
end of a decode chunk; the host still decides where the completion ends.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers.decoders import DecodeStream
from transformers import PreTrainedTokenizerBase

# Prompt tokens decoded as context, so the first generated token renders as it would mid-text.
_CONTEXT_TOKENS = 5


class RowText:
    """Text of one row's generated tokens, cut after the first stop string it contains."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_ids: Sequence[int],
                 stops: Sequence[str]):
        self._tokenizer = tokenizer
        self._context = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._stream = DecodeStream(ids=self._context, skip_special_tokens=False)
        self._stops = stops
        self._ids: list[int] = []
        self.text = ""

    def push(self, token: int) -> str | None:
        """Appends a token's text; returns the stop string it completes (text then ends with it)."""
        self._ids.append(token)
        piece = self._stream.step(self._tokenizer.backend_tokenizer, token)
        if not piece:
            return None
        start = len(self.text)
        self.text += piece
        # The earliest-ending stop wins; each search starts where a match could first overlap `piece`.
        best_end, best = None, None
        for stop in self._stops:
            at = self.text.find(stop, max(0, start - len(stop) + 1))
            if at >= 0 and (best_end is None or at + len(stop) < best_end):
                best_end, best = at + len(stop), stop
        if best is not None:
            self.text = self.text[:best_end]
        return best

    def flush(self) -> str:
        """The whole text for a row that ended without a stop, incomplete trailing bytes included."""
        decode = lambda ids: self._tokenizer.decode(ids, skip_special_tokens=False)
        self.text = decode(self._context + self._ids)[len(decode(self._context)):]
        return self.text


def token_texts(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Each vocabulary entry decoded on its own (special tokens kept)."""
    return tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False)


def finish_table(texts: Sequence[str], stops: Sequence[str], eos_ids: Sequence[int],
                 vocab_size: int) -> np.ndarray:
    """bool[vocab_size]: tokens that end a row on device (end of sequence, or contains a stop).

    Tokens whose own text holds an incomplete character (U+FFFD) are left to the host check, since
    the stream decoder holds such text back until the character completes.
    """
    table = np.zeros(vocab_size, bool)
    if stops:
        table[: len(texts)] = [
            "\ufffd" not in text and any(stop in text for stop in stops) for text in texts]
    table[[i for i in eos_ids if i < vocab_size]] = True
    return table
