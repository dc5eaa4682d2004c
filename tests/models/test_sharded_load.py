"""Loading an HF checkpoint straight into shards on 8 fake CPU devices (own process)."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    import torch
    import transformers
    from flax import nnx
    from rstar_jax.config import MeshConfig
    from rstar_jax.models.hf import load_decoder
    from rstar_jax.parallel.mesh import make_mesh
    from rstar_jax.parallel.rules import TRAIN_RULES

    assert jax.device_count() == 8
    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=128, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2)
    transformers.Qwen2ForCausalLM(config).save_pretrained(sys.argv[1])
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = load_decoder(sys.argv[1], mesh=mesh, rules=TRAIN_RULES)
    q = sharded.layers[0].self_attn.q_proj.kernel.get_value()
    assert tuple(q.sharding.spec) == ("fsdp", "tensor", None), q.sharding.spec
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape == (16, 2, 8)
    tokens = np.arange(16).reshape(2, 8) % 128
    positions = np.broadcast_to(np.arange(8), (2, 8))
    forward = nnx.jit(lambda m, t, p: m(t, p)[0])
    want = forward(load_decoder(sys.argv[1]), tokens, positions)
    np.testing.assert_allclose(forward(sharded, tokens, positions), want, atol=1e-5)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(TRAIN_RULES):
        np.testing.assert_allclose(forward(sharded, tokens, positions), want, atol=1e-5)
    print("ok")
""")


@pytest.mark.slow
def test_load_into_shards_on_eight_devices(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
