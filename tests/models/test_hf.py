"""HF directory round trips: export -> transformers load -> same logits; sharded files; errors."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.torch import load_file, save_file

from rstar_jax.config import MeshConfig, ModelConfig
from rstar_jax.models.decoder import Decoder
from rstar_jax.models.hf import HFFormatError, check_hf_dir, load_decoder, load_hf, save_hf
from rstar_jax.parallel.mesh import make_mesh

TOKENS = np.random.default_rng(0).integers(2, 400, (2, 10))


@nnx.jit
def forward(model, tokens):
    positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    return model(tokens, positions)[0]


def _torch_logits(model):
    with torch.no_grad():
        return model(input_ids=torch.tensor(TOKENS)).logits.numpy()


@pytest.fixture(scope="module")
def exported(hf_dir, tmp_path_factory):
    """Load the reference dir with load_hf, save it again with save_hf."""
    kind, path, hf_model = hf_dir
    model, tokenizer = load_hf(path)
    out = tmp_path_factory.mktemp(f"export_{kind}") / "model"
    save_hf(model, tokenizer, out)
    return kind, out, model, hf_model


def test_export_loads_in_transformers_with_same_logits(exported):
    kind, out, model, hf_model = exported
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    assert reloaded.config.model_type == kind
    assert reloaded.config.tie_word_embeddings == hf_model.config.tie_word_embeddings
    ref = _torch_logits(hf_model)
    np.testing.assert_allclose(_torch_logits(reloaded.eval()), ref, atol=1e-5)
    np.testing.assert_allclose(forward(model, TOKENS), ref, atol=1e-4)


def test_export_has_tokenizer_and_generation_config(exported):
    _, out, _, _ = exported
    tokenizer = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert tokenizer.convert_tokens_to_ids("\n<|assistant|>") != tokenizer.unk_token_id
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 1


def test_sharded_safetensors_and_mesh(hf_dir, tmp_path):
    """A checkpoint split into shards with an index loads onto a (1-device) mesh unchanged."""
    _, _, hf_model = hf_dir
    hf_model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    model = load_decoder(tmp_path, mesh=make_mesh(MeshConfig()))
    kernel = model.layers[0].mlp.up_proj.kernel.get_value()
    assert isinstance(kernel.sharding, jax.sharding.NamedSharding)
    np.testing.assert_allclose(forward(model, TOKENS), _torch_logits(hf_model), atol=1e-4)


def test_bf16_load_and_export(hf_dir, tmp_path):
    _, path, hf_model = hf_dir
    model = load_decoder(path, dtype="bfloat16")
    assert model.embed_tokens.embedding.get_value().dtype == jnp.bfloat16
    save_hf(model, None, tmp_path / "bf16")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype="auto")
    assert reloaded.model.embed_tokens.weight.dtype == torch.bfloat16
    want = hf_model.model.embed_tokens.weight.detach().to(torch.bfloat16)
    assert torch.equal(reloaded.model.embed_tokens.weight, want)


def test_missing_files_are_named(hf_dir, tmp_path):
    _, path, _ = hf_dir
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_decoder(tmp_path)
    shutil.copy(path / "config.json", tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_decoder(tmp_path)
    # A checkpoint that lacks one tensor names it.
    sd = load_file(str(path / "model.safetensors"))
    del sd["model.norm.weight"]
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(HFFormatError, match="model.norm.weight' is missing"):
        load_decoder(tmp_path)
    with pytest.raises(HFFormatError, match="model.norm.weight' is missing"):
        check_hf_dir(tmp_path)  # the same, from the file headers, before any weight is read


def test_a_checkpoint_that_does_not_fit_its_config_is_named(hf_dir, tmp_path):
    _, path, _ = hf_dir
    assert check_hf_dir(path) == load_decoder(path).config
    shutil.copy(path / "config.json", tmp_path)
    sd = load_file(str(path / "model.safetensors"))
    sd["model.layers.1.mlp.up_proj.weight"] = sd["model.layers.1.mlp.up_proj.weight"][:, :16].contiguous()
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    message = (r"tensor 'model.layers.1.mlp.up_proj.weight' has shape \(64, 16\), "
               r"which does not fit config.json \(\(64, 32\)")
    with pytest.raises(HFFormatError, match=message):
        check_hf_dir(tmp_path)
    with pytest.raises(HFFormatError, match=message):
        load_decoder(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(HFFormatError, match="model.safetensors: not a safetensors file"):
        check_hf_dir(tmp_path)


@pytest.mark.parametrize("config, message", [
    ({"model_type": "gpt2"}, r"config.json: model_type 'gpt2' is not supported \(qwen2, llama\)"),
    ({"model_type": "llama", "hidden_act": "gelu"}, "config.json: only hidden_act='silu'"),
    ({"model_type": "no_such_model"}, "config.json: transformers cannot read it"),
    ({"hidden_size": 32}, "config.json: transformers cannot read it"),  # no model_type
    ("{not json", "config.json: transformers cannot read it"),
])
def test_a_config_of_the_wrong_type_is_one_clear_error(tmp_path, config, message):
    (tmp_path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    for load in (load_decoder, check_hf_dir):
        with pytest.raises(HFFormatError, match=message) as info:
            load(tmp_path)
        assert str(tmp_path) in str(info.value) and len(str(info.value).splitlines()) == 1


def test_from_scratch_model_exports(spm_dir, tmp_path):
    """A fresh model with the trained tokenizer (the CPU default's path) loads in transformers."""
    _, tokenizer = spm_dir
    config = ModelConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = Decoder(config, rngs=nnx.Rngs(0))
    save_hf(model, tokenizer, tmp_path / "scratch")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "scratch")
    np.testing.assert_allclose(_torch_logits(reloaded.eval()), forward(model, TOKENS), atol=1e-4)
    again, _ = load_hf(tmp_path / "scratch")
    np.testing.assert_allclose(forward(again, TOKENS), forward(model, TOKENS), atol=1e-6)


def test_torch_bin_checkpoint(hf_dir, tmp_path):
    _, path, hf_model = hf_dir
    shutil.copy(path / "config.json", tmp_path)
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    for got, want in zip(jax.tree.leaves(nnx.state(load_decoder(tmp_path), nnx.Param)),
                         jax.tree.leaves(nnx.state(load_decoder(path), nnx.Param)), strict=True):
        np.testing.assert_array_equal(got, want)
