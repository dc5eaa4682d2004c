"""Host side of stop strings: incremental detokenisation of each row, and the per-token stop table.

Stop strings are matched on decoded text, so a stop that spans several tokens, or sits inside a
longer token, is found exactly. A row with stop strings decodes incrementally in the context of its
prompt's last tokens (vLLM's prefix / read offsets: the text a token adds is the decode of a small
window of recent tokens minus the decode of the window without it; text ending in an incomplete
character is held back until the character completes, and an invalid byte sequence never raises),
and searches only the text each token adds. The device additionally ends a row as soon as it emits
a token whose own text contains a stop string (the common case: rStar's stops are atomic special
tokens), so such rows do not run on until the end of a decode chunk; the host still decides where
the completion ends.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

# Prompt tokens decoded as context, so the first generated token renders as it would mid-text.
_CONTEXT_TOKENS = 5


class RowText:
    """Text of one row's generated tokens, cut after the first stop string it contains (without
    stop strings, `text` is set by `flush` only)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_ids: Sequence[int],
                 stops: Sequence[str]):
        self._tokenizer = tokenizer
        self._ids = list(prompt_ids[-_CONTEXT_TOKENS:])  # context, then the generated tokens
        self._num_context = len(self._ids)
        self._prefix = 0  # window start: text before it is settled
        self._read = len(self._ids)  # tokens before it are already in `text`
        self._stops = stops
        self.text = ""

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def extend(self, tokens: Sequence[int]) -> tuple[str | None, int]:
        """Appends tokens; returns (the first stop string they complete, tokens taken up to and
        including the one completing it), or (None, len(tokens)).

        All tokens are decoded at once (two decodes, not two per token); only when a stop string
        turns up are they replayed one by one, the reference behaviour, to find the token that
        completed it. Without stop strings the tokens are only stored.
        """
        if not self._stops:  # nothing to search for: `flush` decodes the text once, at the end
            self._ids.extend(tokens)
            return None, len(tokens)
        before = (len(self._ids), self._prefix, self._read, self.text)
        stop = self._append(tokens)
        if stop is None or len(tokens) == 1:
            return stop, len(tokens)
        count, self._prefix, self._read, self.text = before
        del self._ids[count:]
        for used, token in enumerate(tokens, start=1):
            if (stop := self._append([token])) is not None:
                return stop, used
        return None, len(tokens)

    def _append(self, tokens: Sequence[int]) -> str | None:
        self._ids.extend(tokens)
        settled = self._decode(self._ids[self._prefix: self._read])
        window = self._decode(self._ids[self._prefix:])
        if len(window) <= len(settled):
            return None
        start, new = len(self.text), window[len(settled):]
        if window.endswith("\ufffd"):
            # Held back until the character completes; a stop before it is complete already.
            held, self.text = self.text, self.text + new.rstrip("\ufffd")
            stop = self._cut(start)
            if stop is None:
                self.text = held
            return stop
        self._prefix, self._read = self._read, len(self._ids)
        self.text += new
        return self._cut(start)

    def _cut(self, start: int) -> str | None:
        """Ends `text` after the earliest-ending stop that ends after `start`; returns that stop."""
        best_end, best = None, None
        for stop in self._stops:
            at = self.text.find(stop, max(0, start - len(stop) + 1))
            if at >= 0 and (best_end is None or at + len(stop) < best_end):
                best_end, best = at + len(stop), stop
        if best is not None:
            self.text = self.text[:best_end]
        return best

    def flush(self) -> None:
        """Sets `text` to the full decode, incomplete trailing bytes included (for a row that ended
        without a stop string: the held-back text then holds none)."""
        self.text = self._decode(self._ids)[len(self._decode(self._ids[: self._num_context])):]

    def stop_in_full_text(self) -> str | None:
        """Cuts the full decode after its first stop string and returns it (a safety net for a
        row that ended on device on a stop token)."""
        self.flush()
        return self._cut(0)


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
