"""A tiny HF policy directory (random Qwen2-shaped weights, byte-level BPE tokenizer) and rStar's
example records, copied in tests/fixtures so the tests run without ../shared."""

import json
from pathlib import Path

import pytest
import transformers
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from rstar_jax import steps as sf

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "rstar_examples"
EOS = "<|endoftext|>"


@pytest.fixture(scope="session")
def policy_dir(tmp_path_factory) -> Path:
    """HF directory of a tiny random policy whose BPE tokenizer was trained on the example records."""
    records = json.loads((EXAMPLES / "sft_data_examples.json").read_text())
    corpus = [sf.policy_prompt(r["query"]) + r["response"] for r in records]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=[EOS, *sf.SPECIAL_TOKENS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)
    config = transformers.Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_policy")
    transformers.Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
