"""Rope scaling (linear, dynamic, yarn, llama3 as transformers 5 defines them): our decoder's
logits against HF on tiny checkpoints, past the original context; configs stay hashable."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from rstar_jax.config import ModelConfig, RopeScaling
from rstar_jax.models.decoder import Decoder
from rstar_jax.models.hf import config_from_hf, load_decoder, save_hf

SHAPE = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.2)
HF_CONFIGS = {
    # Llama 3.1: llama3 scaling (wavelengths on both sides of the thresholds), several EOS ids.
    "llama3": lambda: transformers.LlamaConfig(
        **SHAPE, rope_theta=500000.0, eos_token_id=[1, 2, 3], bos_token_id=0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 16}),
    # Qwen2.5(-Math) long context: YaRN with its attention factor on cos / sin.
    "yarn": lambda: transformers.Qwen2Config(
        **SHAPE, rope_theta=10000.0, eos_token_id=1,
        rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}),
    "yarn_mscale": lambda: transformers.Qwen2Config(
        **SHAPE, rope_theta=10000.0, eos_token_id=1,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "mscale": 0.707,
                      "mscale_all_dim": 1.0, "beta_fast": 16, "beta_slow": 2, "truncate": False}),
    "linear": lambda: transformers.LlamaConfig(**SHAPE, rope_theta=10000.0, eos_token_id=1,
                                               rope_scaling={"rope_type": "linear", "factor": 2.0}),
    # Dynamic NTK: equal to plain RoPE up to max_position_embeddings, a larger base past it.
    "dynamic": lambda: transformers.LlamaConfig(**SHAPE, rope_theta=10000.0, eos_token_id=1,
                                                rope_scaling={"rope_type": "dynamic", "factor": 2.0}),
}


def hf_model(kind: str) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(HF_CONFIGS[kind](), attn_implementation="eager").eval()


@nnx.jit
def forward(model, tokens, positions):
    return model(tokens, positions)[0]


@pytest.mark.parametrize("kind", sorted(HF_CONFIGS))
@pytest.mark.parametrize("length", [40, 100])  # within and past max_position_embeddings (64)
def test_logits_match_hf(kind, length, tmp_path):
    reference = hf_model(kind)
    reference.save_pretrained(tmp_path)
    model = load_decoder(tmp_path)
    assert model.config.rope_scaling.rope_type == kind.split("_")[0]
    tokens = np.random.default_rng(length).integers(4, 300, (2, length)).astype(np.int32)
    positions = np.broadcast_to(np.arange(length, dtype=np.int32), tokens.shape)
    with torch.no_grad():
        ref = reference(input_ids=torch.tensor(tokens, dtype=torch.long),
                        position_ids=torch.tensor(positions, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(np.asarray(forward(model, tokens, positions)), ref, atol=2e-4, rtol=2e-4)


def test_scaling_changes_the_model():
    """The parity above would also hold if both sides ignored scaling: check they do not."""
    plain = dataclasses.replace(config_from_hf(HF_CONFIGS["yarn"]()), rope_scaling=None)
    model = Decoder(config_from_hf(HF_CONFIGS["yarn"]()), rngs=nnx.Rngs(0))
    unscaled = Decoder(plain, rngs=nnx.Rngs(0))
    tokens = np.arange(4, 44, dtype=np.int32)[None]
    positions = np.arange(40, dtype=np.int32)[None]
    assert np.abs(np.asarray(forward(model, tokens, positions) - forward(unscaled, tokens, positions))).max() > 1e-3


@pytest.mark.parametrize("kind", ["llama3", "yarn_mscale", "dynamic"])
def test_config_is_hashable_and_round_trips(kind, tmp_path):
    config = config_from_hf(HF_CONFIGS[kind]())
    assert isinstance(config.rope_scaling, RopeScaling)
    hash(config)  # static in jitted code (sampler, scorer)
    assert config == dataclasses.replace(config, rope_scaling=config.rope_scaling.to_hf())  # dicts convert
    assert ModelConfig(**json.loads(json.dumps(dataclasses.asdict(config)))) == config  # models/checkpoint.py
    save_hf(Decoder(config, rngs=nnx.Rngs(0)), None, str(tmp_path))
    assert load_decoder(tmp_path).config == dataclasses.replace(config, head_dim=config.resolved_head_dim)
    back = transformers.AutoConfig.from_pretrained(tmp_path)
    assert back.rope_parameters["rope_type"] == config.rope_scaling.rope_type
    if kind == "llama3":
        assert config.eos_token_id == (1, 2, 3) and back.eos_token_id == [1, 2, 3]


def test_bad_rope_scaling_names_the_key():
    with pytest.raises(ValueError, match="longrope"):
        ModelConfig(rope_scaling={"rope_type": "longrope", "factor": 2.0})
    with pytest.raises(ValueError, match=r"unknown keys \['lo_freq_factor'\]"):
        ModelConfig(rope_scaling={"rope_type": "llama3", "factor": 8.0, "lo_freq_factor": 1.0})
    with pytest.raises(ValueError, match="needs"):
        ModelConfig(rope_scaling={"rope_type": "linear"})
    assert ModelConfig(rope_scaling={"rope_type": "default", "rope_theta": 1e4}).rope_scaling is None
