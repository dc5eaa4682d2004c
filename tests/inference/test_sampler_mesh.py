"""The sampler and scorer on a mesh of 8 fake CPU devices (data 4 x tensor 2) give the
single-device results. Runs in a subprocess: the device count is fixed when JAX starts."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import dataclasses
    import sys
    import jax
    import numpy as np
    from flax import nnx
    from rstar_jax.config import MeshConfig, SamplerConfig, SamplingConfig, ScorerConfig
    from rstar_jax.inference.sampler import Sampler
    from rstar_jax.inference.scorer import PPMScorer
    from rstar_jax.models.hf import load_hf
    from rstar_jax.models.ppm import ProcessRewardModel
    from rstar_jax.parallel.mesh import make_mesh

    assert jax.device_count() == 8
    mesh = make_mesh(MeshConfig(data=4, fsdp=1, tensor=2))
    prompts = ["the quick brown fox", "hello", "print(x)", "<|user|>:\\nWhat is 1 + 2?"]
    config = SamplerConfig(max_batch=8, max_len=128, chunk_tokens=8)
    sampling = SamplingConfig(max_new_tokens=16, stop=("o",))
    results = []
    for device_mesh in (None, mesh):
        model, tokenizer = load_hf(sys.argv[1], mesh=device_mesh)
        sampler = Sampler(model, tokenizer, config, mesh=device_mesh)
        ppm = ProcessRewardModel(model.config, rngs=nnx.Rngs(0), backbone=model)
        scorer = PPMScorer(ppm, tokenizer, ScorerConfig(max_batch=4, min_bucket=16), mesh=device_mesh)
        greedy = sampler.sample(prompts, 1, dataclasses.replace(sampling, temperature=0.0), seed=3)
        sampled = sampler.sample(prompts, 2, sampling, seed=3)
        # 1 prompt: replicated
        alone = sampler.sample(prompts[:1], 1, dataclasses.replace(sampling, temperature=0.0), seed=3)
        # Prompts extending those just sampled reuse their prefixes from a pool split over the mesh.
        pooled = Sampler(model, tokenizer, dataclasses.replace(config, prefix_cache_rows=8), mesh=device_mesh)
        first = pooled.sample(prompts, 2, sampling, seed=4)
        longer = pooled.sample([p + c.text for p, cs in zip(prompts, first) for c in cs], 1, sampling, seed=5)
        assert pooled.counts["reused_tokens"] > 0
        results.append(([c.token_ids for cs in greedy + sampled + alone + first + longer for c in cs],
                        scorer.score(prompts)[0]))
    (tokens, raw), (sharded_tokens, sharded_raw) = results
    assert tokens == sharded_tokens, (tokens, sharded_tokens)
    np.testing.assert_allclose(raw, sharded_raw, rtol=1e-4, atol=1e-5)
    print("sharded ok")
""")


@pytest.mark.slow
def test_mesh_gives_single_device_results(tiny_dir):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_dir[0])], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "sharded ok" in proc.stdout, proc.stderr[-3000:]
