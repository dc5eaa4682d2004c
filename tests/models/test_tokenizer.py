"""SentencePiece training into an HF directory, rStar's atomic special tokens, embedding resizing."""

import shutil

import numpy as np
import pytest
import transformers
from flax import nnx

from rstar_jax.config import ModelConfig
from rstar_jax.models.decoder import Decoder
from rstar_jax.models.tokenizer import load_tokenizer, resize_embeddings, train_sentencepiece
from rstar_jax import steps as sf


def test_loads_with_auto_tokenizer(spm_dir, step_texts):
    out, tokenizer = spm_dir
    plain = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert len(plain) == len(tokenizer) == 400
    text = step_texts[-1]
    assert plain.encode(text, add_special_tokens=False) == tokenizer.encode(
        text, add_special_tokens=False)


def test_special_tokens_are_atomic(spm_dir):
    _, tokenizer = spm_dir
    for token in sf.SPECIAL_TOKENS:
        ids = tokenizer.encode(f"x = 1{token}y", add_special_tokens=False)
        assert tokenizer.convert_tokens_to_ids(token) in ids, token
    ids = tokenizer.encode("Q?\n<|assistant|>: ok", add_special_tokens=False)
    assert tokenizer.convert_tokens_to_ids("\n<|assistant|>") in ids
    assert tokenizer.convert_tokens_to_ids("<|assistant|>") not in ids


def test_step_format_round_trip_is_lossless(spm_dir, step_texts):
    _, tokenizer = spm_dir
    for text in step_texts[-6:] + ["  two  spaces\n\n\ttab, ünïcode ∑ 42"]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text


def test_digits_are_split_unless_numbers_may_be_pieces(tmp_path):
    corpus = ["Tom has 35 apples.\napples = 35\n<output>35<end_of_output> \\boxed{35}."] * 300
    split = train_sentencepiece(corpus, vocab_size=400, out_dir=tmp_path / "split")
    whole = train_sentencepiece(corpus, vocab_size=400, out_dir=tmp_path / "whole", split_digits=False)
    assert not [p for p in split.get_vocab() if p.lstrip("\u2581").isdigit() and len(p.lstrip("\u2581")) > 1]
    assert split.tokenize(" 35")[-2:] == ["3", "5"]
    assert whole.tokenize(" 35") == ["\u2581", "35"]
    assert whole.tokenize("<output>35<end_of_output>\\boxed{35}.").count("35") == 2  # not "{35}."
    assert whole.decode(whole.encode(corpus[0], add_special_tokens=False)) == corpus[0]


def test_load_tokenizer_adds_tokens_once(spm_dir):
    out, tokenizer = spm_dir
    again = load_tokenizer(out)
    assert len(again) == len(tokenizer)
    assert again.pad_token == "<pad>"


def test_missing_tokenizer_is_named(hf_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_tokenizer(tmp_path / "nowhere")
    _, path, _ = hf_dir
    shutil.copy(path / "config.json", tmp_path)  # a model config alone is no tokenizer
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("tied", [False, True])
def test_resize_embeddings_appends_mean_rows(tied):
    config = ModelConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied)
    model = Decoder(config, rngs=nnx.Rngs(0))
    old = np.asarray(model.embed_tokens.embedding.get_value())
    resize_embeddings(model, 70)
    new = np.asarray(model.embed_tokens.embedding.get_value())
    assert model.config.vocab_size == 70 and new.shape == (70, 16)
    np.testing.assert_allclose(new[64:], np.broadcast_to(old.mean(0), (6, 16)), rtol=1e-6)
    assert model.embed_tokens.num_embeddings == 70
    if not tied:
        kernel = np.asarray(model.lm_head.kernel.get_value())
        assert model.lm_head.out_features == 70
        np.testing.assert_allclose(kernel[:, 64:], np.broadcast_to(kernel[:, :64].mean(1)[:, None],
                                                                   (16, 6)), rtol=1e-6)
