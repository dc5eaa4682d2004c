"""A tiny random HF Qwen2 model with a byte-level BPE tokenizer, and our Decoder loaded from it."""

import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from rstar_jax.models.hf import load_hf
from rstar_jax import steps as sf

EOS = "<|endoftext|>"
CORPUS = [
    "<|user|>:\nWhat is 12 + 30?\n\n<|assistant|>: Let's think step by step and solve the problem "
    "with code.<code>\nx = 12 + 30\nprint(x)\n<end_of_step>\n<end_of_code>\n<output>42"
    "<end_of_output>\n<answer>The answer is \\boxed{42}.<end_of_answer>",
    "the quick brown fox jumps over the lazy dog; hello world, héllo wörld 1234567890 ",
] * 20


@pytest.fixture(scope="session")
def bpe_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """Byte-level BPE (like Qwen2's) trained on a few lines, with rStar's atomic special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=[EOS, *sf.SPECIAL_TOKENS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, bpe_tokenizer):
    """(HF directory, HF torch model) of a tiny random Qwen2; large init so logits are peaked."""
    tokenizer = bpe_tokenizer
    config = transformers.Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        initializer_range=0.3, tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    hf_model = transformers.Qwen2ForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("tiny_qwen2")
    hf_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, hf_model


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    """(HF torch model, our Decoder, tokenizer) with the same weights."""
    path, hf_model = tiny_dir
    model, tokenizer = load_hf(path)
    return hf_model, model, tokenizer
