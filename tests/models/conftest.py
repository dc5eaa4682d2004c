"""Tiny random HF reference models (transformers, torch CPU), saved once per test session."""

import random

import pytest
import torch
import transformers

from rstar_jax.data.curriculum import generate_problem
from rstar_jax.models.tokenizer import train_sentencepiece
from rstar_jax import steps as sf

VOCAB = 400
TINY = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)

HF_CONFIGS = {
    # Qwen2: q/k/v bias, untied head, grouped-query attention.
    "qwen2": lambda: transformers.Qwen2Config(**TINY, rope_theta=10000.0, eos_token_id=1),
    # Llama 3: llama3 rope scaling (wavelengths on both sides of the thresholds), tied
    # embeddings, q/k/v/o bias, head_dim != hidden / heads.
    "llama": lambda: transformers.LlamaConfig(
        **TINY, head_dim=16, attention_bias=True, tie_word_embeddings=True, eos_token_id=1,
        rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
}


def make_hf_model(kind: str) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(HF_CONFIGS[kind](),
                                                          attn_implementation="eager")
    return model.eval()


@pytest.fixture(scope="session")
def step_texts() -> list[str]:
    """Step-format texts (prompt + worked solution) of 66 generated arithmetic problems."""
    rng = random.Random(0)
    problems = [generate_problem(rng, level=1 + i % 3) for i in range(66)]
    return [sf.policy_prompt(p.question, p.response) for p in problems]


@pytest.fixture(scope="session")
def spm_dir(tmp_path_factory, step_texts):
    """(directory, tokenizer) of a SentencePiece tokenizer trained on 60 of the step texts."""
    out = tmp_path_factory.mktemp("spm")
    return out, train_sentencepiece(step_texts[:60], vocab_size=VOCAB, out_dir=out)


@pytest.fixture(scope="session", params=sorted(HF_CONFIGS))
def hf_dir(request, tmp_path_factory, spm_dir):
    """(kind, directory, torch model) of a tiny random HF checkpoint with the trained tokenizer."""
    model = make_hf_model(request.param)
    path = tmp_path_factory.mktemp(f"hf_{request.param}")
    model.save_pretrained(path)
    spm_dir[1].save_pretrained(path)
    return request.param, path, model
