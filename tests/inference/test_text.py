"""Stop strings on incrementally decoded text, and the device-side table of stopping tokens."""

import pytest

from rstar_jax.inference.text import RowText, finish_table, token_texts

TEXT = "the quick brown fox jumps over the lazy dog; héllo wörld<end_of_step> x"


@pytest.fixture(scope="module")
def tokenizer(bpe_tokenizer):
    return bpe_tokenizer


def feed(tokenizer, text, stops, prompt="Q:"):
    """Pushes the tokens of `text` one by one; returns (index of the stopping token, stop, text)."""
    row = RowText(tokenizer, tokenizer(prompt)["input_ids"], stops)
    for i, token in enumerate(tokenizer(text)["input_ids"]):
        if (stop := row.push(token)) is not None:
            return i, stop, row.text
    return None, None, row.text


def first_token_containing(tokenizer, text, end):
    """Index of the token whose decoded prefix first reaches character `end` of `text`."""
    ids = tokenizer(text)["input_ids"]
    return next(i for i in range(len(ids)) if len(tokenizer.decode(ids[: i + 1])) >= end)


def test_no_stop_reproduces_the_full_decode(tokenizer):
    assert feed(tokenizer, TEXT, ["zzz"]) == (None, None, TEXT)


@pytest.mark.parametrize("stop", ["k brown f", "lazy dog;", "héllo w", "<end_of_step>", "ö"])
def test_stop_spanning_tokens_ends_text_after_it(tokenizer, stop):
    end = TEXT.index(stop) + len(stop)
    assert feed(tokenizer, TEXT, [stop]) == (
        first_token_containing(tokenizer, TEXT, end), stop, TEXT[:end])


def test_stop_inside_a_longer_token(tokenizer):
    ids = tokenizer(TEXT)["input_ids"]
    longest = max((i for i in ids if i not in tokenizer.all_special_ids),
                  key=lambda i: len(tokenizer.decode([i])))
    stop = tokenizer.decode([longest])[1:-1]  # strictly inside the token
    assert len(stop) >= 2
    index, found, text = feed(tokenizer, TEXT, [stop])
    assert (ids[index], found, text) == (longest, stop, TEXT[: TEXT.index(stop) + len(stop)])


def test_earliest_of_several_stops_wins(tokenizer):
    stops = ["<end_of_step>", "over", "fox jumps"]
    end = TEXT.index("fox jumps") + len("fox jumps")
    assert feed(tokenizer, TEXT, stops)[1:] == ("fox jumps", TEXT[:end])


def test_first_token_is_decoded_in_prompt_context(tokenizer):
    # A leading space is part of the first generated token and must survive.
    assert feed(tokenizer, " lazy dog", [], prompt="the")[2] == " lazy dog"


def test_finish_table_marks_eos_and_tokens_containing_a_stop(tokenizer):
    texts = token_texts(tokenizer)
    table = finish_table(texts, ["<end_of_step>", "ck"], [tokenizer.eos_token_id], len(texts) + 3)
    step = tokenizer.convert_tokens_to_ids("<end_of_step>")
    assert table[step] and table[tokenizer.eos_token_id] and not table[-3:].any()
    assert set(texts[i] for i in table.nonzero()[0]) == {
        t for i, t in enumerate(texts) if "ck" in t or i in (step, tokenizer.eos_token_id)}
    assert not finish_table(texts, [], [], len(texts)).any()
