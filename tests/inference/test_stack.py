"""The one model stack (inference/stack.py): what it builds from a ParallelConfig on 8 fake CPU
devices is what the planner (evolve/plan.py) plans for sampling and scoring: the per-host mesh,
dtypes, bytes of weights and KV cache on a device, and rows split over every device."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from rstar_jax.config import MeshConfig, ParallelConfig
from rstar_jax.inference.stack import decode_mesh_config, resolve_dtype, resolve_dtypes

SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    import jax
    import numpy as np
    import transformers
    from flax import nnx
    from rstar_jax.config import MeshConfig, ParallelConfig, SamplerConfig, SamplingConfig, ScorerConfig
    from rstar_jax.evolve import plan
    from rstar_jax.inference.stack import ModelStack
    from rstar_jax.models.hf import config_from_hf, load_hf, save_ppm_hf
    from rstar_jax.models.ppm import ProcessRewardModel
    from rstar_jax.parallel.sharding import logical_to_spec

    policy_dir, ppm_dir = sys.argv[1:3]
    model, tokenizer = load_hf(policy_dir)
    ppm = ProcessRewardModel(model.config, rngs=nnx.Rngs(0), backbone=model)
    head = ppm.value_head.linear  # a non-tiny head, so scores differ between texts
    head.kernel.set_value(jax.random.normal(jax.random.key(1), head.kernel.shape))
    save_ppm_hf(ppm, tokenizer, ppm_dir)
    config = config_from_hf(transformers.AutoConfig.from_pretrained(policy_dir))
    # Bytes device 0 holds of the floating arrays (not the value head's dropout RNG state).
    on_device0 = lambda tree: sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree)
                                  if jax.numpy.issubdtype(x.dtype, jax.numpy.floating))
    sampler = SamplerConfig(max_batch=16, max_len=128)
    scorer = ScorerConfig(max_batch=8, max_len=128, min_bucket=4, prefix_cache_rows=8)  # suffixes narrower than texts
    # Texts a search would score: two nodes, then children of each (run past their parents' cache).
    nodes = ["hello", "print(x)"]
    children = [n + s for n in nodes for s in (" world", " = 1", " + 2")]
    report = {}
    for dtype in ("bfloat16", "auto"):
        # fsdp folds into 'data' for decoding: a 4 x 2 (data x tensor) mesh over the 8 devices.
        parallel = ParallelConfig(mesh=MeshConfig(fsdp=2, tensor=2), dtype=dtype)
        stack = ModelStack(policy_dir, ppm_dir, sampler=sampler, scorer=scorer, exec_workers=0,
                           exec_timeout_s=1.0, parallel=parallel)
        layout = plan.decode_layout(parallel, len(jax.local_devices()), jax.default_backend())
        policy_cfg, ppm_cfg = layout.models(config, config)
        sample = plan.sample_phase(policy_cfg, ppm_cfg, sampler, 2, layout.mesh, 1 << 40, layout.rules)
        score = plan.score_phase(policy_cfg, ppm_cfg, scorer, layout.mesh, 1 << 40, layout.rules)
        slots = stack.policy._new_slots(16, 128)
        cache = (slots.cache.k, slots.cache.v)
        rows = stack.ppm._place(np.zeros((8, 16), np.int32))[0]
        completions = stack.policy.sample(["hello", "print(x)"], 2, SamplingConfig(max_new_tokens=4), seed=1)
        raw, _ = stack.ppm.score(nodes)  # 2 texts: padded to the 4 row shards
        pooled = stack.ppm.score(children)[0]
        plain = ModelStack(policy_dir, ppm_dir, sampler=sampler, scorer=dataclasses.replace(scorer, prefix_cache_rows=0),
                           exec_workers=0, exec_timeout_s=1.0, parallel=parallel).ppm.score(children)[0]
        pool = stack.ppm._pool
        q_kernel = stack.policy._state["layers"][0]["self_attn"]["q_proj"]["kernel"]
        report[dtype] = {
            "mesh": dict(stack.mesh.shape), "planned_mesh": dict(layout.mesh.shape),
            "dtypes": [stack.dtype, stack.param_dtype, stack.policy.model_config.dtype],
            "planned_dtypes": [layout.dtype, layout.param_dtype],
            "param_dtypes": sorted({str(x.dtype) for x in jax.tree.leaves(stack.policy._state)}),
            "ppm_backbone_dtypes": sorted({str(x.dtype) for x in jax.tree.leaves(stack.ppm._state["backbone"])}),
            "cache_dtypes": sorted({str(x.dtype) for x in jax.tree.leaves(cache)}),
            "weights": [on_device0(stack.policy._state) + on_device0(stack.ppm._state), sample.params,
                        score.params],
            "kv_cache": [on_device0(cache), sample.kv_cache],
            "scorer_pool": [on_device0((pool.k, pool.v)), score.kv_cache],
            "pooled_scores": [float(np.max(np.abs(pooled - plain))), float(np.ptp(plain)),
                              stack.ppm.counts["reused_tokens"]],
            "row_shards": [len({str(s.index) for s in slots.token_b.addressable_shards}),
                           len({str(s.index) for s in rows.addressable_shards}),
                           plan.batch_shards(layout.mesh, layout.rules)],
            "specs": {"slots": list(slots.token_b.sharding.spec),
                      "planned_rows": list(logical_to_spec(("batch",), layout.rules, layout.mesh)),
                      "cache": list(cache[0][0].sharding.spec), "q_kernel": list(q_kernel.sharding.spec)},
            "ran": [len(completions), len(raw)],
        }
    print(json.dumps(report))
""")


@pytest.fixture(scope="module")
def built(tiny_dir, tmp_path_factory):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    ppm_dir = tmp_path_factory.mktemp("stack") / "ppm"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_dir[0]), str(ppm_dir)],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # one subprocess on 8 fake devices: about 40 s on 2 cores
@pytest.mark.parametrize("dtype", ["bfloat16", "auto"])
def test_built_stack_is_the_planned_one(built, dtype):
    out = built[dtype]
    want = "bfloat16" if dtype == "bfloat16" else "float32"  # "auto" on CPU
    assert out["mesh"] == out["planned_mesh"] == {"data": 4, "fsdp": 1, "tensor": 2}
    assert out["dtypes"] == [want, want, want] and out["planned_dtypes"] == [want, want]
    assert out["param_dtypes"] == out["ppm_backbone_dtypes"] == out["cache_dtypes"] == [want]
    real, planned_sample, planned_score = out["weights"]
    assert real == planned_sample == planned_score
    assert out["kv_cache"][0] == out["kv_cache"][1]
    assert out["scorer_pool"][0] == out["scorer_pool"][1] > 0
    # The scorer's pool on the mesh: the children ran past their parents' cache, to the same scores.
    difference, spread, reused = out["pooled_scores"]
    assert reused > 0 and spread > 0.1 and difference < (0.05 if want == "bfloat16" else 1e-4) * spread
    # Rows are split over every device that 'tensor' leaves: data x fsdp (folded) = 4 ways.
    assert out["row_shards"] == [4, 4, 4]
    assert out["specs"]["slots"] == out["specs"]["planned_rows"] == ["data"]
    assert out["specs"]["cache"] == ["data", "tensor", None, None]
    assert out["specs"]["q_kernel"] == [None, "tensor", None]
    assert out["ran"] == [2, 2]


def test_auto_dtype_is_bf16_on_accelerators_and_fp32_on_cpu():
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("auto", "gpu") == resolve_dtype("auto", "tpu") == "bfloat16"
    assert resolve_dtypes(ParallelConfig(dtype="bfloat16", param_dtype="float32"), "cpu") == ("bfloat16", "float32")
    with pytest.raises(ValueError, match="ParallelConfig: dtype"):
        resolve_dtype("float16")


def test_decoding_folds_the_mesh_into_data_and_tensor_per_host():
    assert decode_mesh_config(MeshConfig(data=4, fsdp=8, tensor=2, dcn_data=2)) == MeshConfig(data=-1, tensor=2)


def test_streams_make_a_prompts_samples_independent_of_its_slice(tiny):
    """`generate` on several hosts samples each host's slice with the prompts' indices in the whole
    file as their streams: prompt i's samples are then the same whichever slice it is in."""
    from rstar_jax.config import SamplerConfig, SamplingConfig
    from rstar_jax.inference.sampler import Sampler

    _, model, tokenizer = tiny
    sampler = Sampler(model, tokenizer, SamplerConfig(max_batch=8, max_len=128, chunk_tokens=8))
    prompts = ["the quick brown fox", "hello", "print(x)", "What is 1 + 2?"]
    kwargs = dict(sampling=SamplingConfig(max_new_tokens=8), seed=7)
    whole = sampler.sample(prompts, 2, **kwargs)
    odd = sampler.sample(prompts[1::2], 2, streams=[1, 3], **kwargs)
    assert [[c.token_ids for c in cs] for cs in odd] == [[c.token_ids for c in cs] for cs in whole[1::2]]
    shifted = sampler.sample(prompts[1::2], 2, **kwargs)  # positions 0, 1: other streams
    assert [[c.token_ids for c in cs] for cs in shifted] != [[c.token_ids for c in cs] for cs in whole[1::2]]
