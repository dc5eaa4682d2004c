"""train_sft's inputs: chat records and plain-text records, in one run."""

import pytest

from rstar_jax.config import TrainConfig
from rstar_jax.data import records
from rstar_jax.models.tokenizer import load_tokenizer
from rstar_jax.training import data, sft

CHAT = [records.SFTRecord("What is 2 + 3?", "x = 2 + 3\nprint(x)\n"),
        records.SFTRecord("What is 4 - 1?", "x = 4 - 1\nprint(x)\n")]
PLAIN = [records.SFTRecord("Tom has 3 apples.", "# (1) Tom has 3 apples.\n")]


def key(example: data.SFTExample) -> tuple:
    return tuple(example.ids.tolist()), example.prompt_len


def test_train_sft_encodes_train_file_as_chat_and_plain_file_as_plain_text(tmp_path, policy_dir, monkeypatch):
    chat_file, plain_file = str(tmp_path / "chat.json"), str(tmp_path / "plain.json")
    records.write_records(chat_file, CHAT)
    records.write_records(plain_file, PLAIN)
    trained = []

    def keep_examples(workdir, *, model, train_examples, eval_examples, **_):
        trained.extend(train_examples + eval_examples)
        return model

    monkeypatch.setattr(sft, "train", keep_examples)
    config = TrainConfig(max_length=64, eval_fraction=0.0)
    sft.train_sft(str(tmp_path / "run"), base_model=str(policy_dir), train_file=chat_file, plain_file=plain_file,
                  config=config)

    tokenizer = load_tokenizer(str(policy_dir))
    expected = data.encode_sft(CHAT, tokenizer, 64, chat=True) + data.encode_sft(PLAIN, tokenizer, 64, chat=False)
    assert sorted(map(key, trained)) == sorted(map(key, expected))
    assert len({key(e) for e in expected}) == 3  # the chat and plain prompts really differ

    with pytest.raises(ValueError, match="no SFT records"):
        sft.train_sft(str(tmp_path / "none"), base_model=str(policy_dir), config=config)
