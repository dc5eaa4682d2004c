"""Stop strings on incrementally decoded text, and the device-side table of stopping tokens."""

import numpy as np
import pytest

from rstar_jax.inference.text import RowText, finish_table, token_texts
from rstar_jax.models.tokenizer import train_sentencepiece

from conftest import CORPUS

TEXT = "the quick brown fox jumps over the lazy dog; héllo wörld<end_of_step> x ∑ y"


@pytest.fixture(scope="module", params=["byte-level BPE", "SentencePiece byte fallback"])
def tokenizer(request, bpe_tokenizer, tmp_path_factory):
    if request.param == "byte-level BPE":
        return bpe_tokenizer
    return train_sentencepiece(CORPUS, 400, tmp_path_factory.mktemp("spm"))


@pytest.fixture(params=[1, 5, 1000], ids=lambda n: f"chunks of {n}")
def chunk(request):
    return request.param


def feed(tokenizer, text, stops, prompt="Q:", chunk=1):
    """Feeds the tokens of `text` in chunks; returns (index of the stopping token, stop, text)."""
    row = RowText(tokenizer, tokenizer(prompt)["input_ids"], stops)
    ids = tokenizer(text)["input_ids"]
    for start in range(0, len(ids), chunk):
        stop, used = row.extend(ids[start:start + chunk])
        if stop is not None:
            return start + used - 1, stop, row.text
    return None, None, row.text


def first_token_containing(tokenizer, text, end):
    """Index of the first token whose decoded prefix holds `text[:end]` (whole characters)."""
    ids = tokenizer(text)["input_ids"]
    return next(i for i in range(len(ids)) if tokenizer.decode(ids[: i + 1]).startswith(text[:end]))


def test_no_stop_reproduces_the_full_decode(tokenizer, chunk):
    assert feed(tokenizer, TEXT, ["zzz"], chunk=chunk) == (None, None, TEXT)


@pytest.mark.parametrize("stop", ["k brown f", "lazy dog;", "héllo w", "<end_of_step>", "ö", "∑",
                                  "; h"])  # BPE: "; h" ends inside " h\xc3", a partial character
def test_stop_spanning_tokens_ends_text_after_it(tokenizer, stop, chunk):
    end = TEXT.index(stop) + len(stop)
    assert feed(tokenizer, TEXT, [stop], chunk=chunk) == (
        first_token_containing(tokenizer, TEXT, end), stop, TEXT[:end])


def test_stop_inside_a_longer_token(tokenizer, chunk):
    ids = tokenizer(TEXT)["input_ids"]
    # A token of >= 3 characters whose interior first occurs in TEXT inside that token.
    for i, token in enumerate(ids):
        start, piece = len(tokenizer.decode(ids[:i])), tokenizer.decode([token])
        stop = piece.strip()[1:-1]
        if len(stop) >= 1 and "\ufffd" not in piece and TEXT.find(stop) > start:
            break
    end = TEXT.index(stop) + len(stop)
    assert end < start + len(piece)  # the token goes on after the stop
    assert feed(tokenizer, TEXT, [stop], chunk=chunk) == (i, stop, TEXT[:end])


def test_earliest_of_several_stops_wins(tokenizer, chunk):
    stops = ["<end_of_step>", "over", "fox jumps"]
    end = TEXT.index("fox jumps") + len("fox jumps")
    assert feed(tokenizer, TEXT, stops, chunk=chunk)[1:] == ("fox jumps", TEXT[:end])


def test_first_token_is_decoded_in_prompt_context(tokenizer):
    # A leading space is part of the first generated token and must survive, in the streamed
    # text (a stop string that never matches keeps the row streaming) and in the final decode.
    assert feed(tokenizer, " lazy dog", ["<never>"], prompt="the")[2] == " lazy dog"
    row = RowText(tokenizer, tokenizer("the")["input_ids"], [])
    assert row.extend(tokenizer(" lazy dog")["input_ids"])[0] is None
    assert row.text == ""  # without stop strings nothing is decoded before `flush`
    row.flush()
    assert row.text == " lazy dog"


def test_invalid_byte_sequences_decode_without_error(tokenizer):
    texts = token_texts(tokenizer)
    partial = [i for i, t in enumerate(texts) if t == "\ufffd"]  # lone bytes
    rng = np.random.default_rng(0)
    ids = [int(i) for i in rng.choice(partial, 40)] + tokenizer("ok<end_of_step>")["input_ids"]
    row = RowText(tokenizer, tokenizer("Q:")["input_ids"], ["<end_of_step>"])
    stops = [row.extend([token])[0] for token in ids]
    assert stops[-1] == "<end_of_step>" and stops[:-1] == [None] * (len(ids) - 1)
    assert row.text.endswith("ok<end_of_step>")
    row.flush()
    assert row.text == tokenizer.decode(tokenizer("Q:")["input_ids"] + ids)[2:]


def test_finish_table_marks_eos_and_tokens_containing_a_stop(tokenizer):
    texts = token_texts(tokenizer)
    table = finish_table(texts, ["<end_of_step>", "ck"], [tokenizer.eos_token_id], len(texts) + 3)
    step = tokenizer.convert_tokens_to_ids("<end_of_step>")
    assert table[step] and table[tokenizer.eos_token_id] and not table[-3:].any()
    assert set(texts[i] for i in table.nonzero()[0]) == {
        t for i, t in enumerate(texts) if "ck" in t or i in (step, tokenizer.eos_token_id)}
    assert not finish_table(texts, [], [], len(texts)).any()
