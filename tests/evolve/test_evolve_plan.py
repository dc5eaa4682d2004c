"""The memory planner: shipped paper-scale configs fit their targets; byte counts match real shards."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gin
import pytest

from rstar_jax import cli
from rstar_jax.evolve import plan as planner
from rstar_jax.config import MeshConfig, ModelConfig, TrainConfig

EXPERIMENTS = Path(cli.EXPERIMENTS_DIR)
# Paper-scale experiments: the top-level files of experiments/paper/ (the rest are their parts).
PAPER = sorted((EXPERIMENTS / "paper").glob("*.gin"))
PAPER = [p for p in PAPER if "include 'paper/plan.gin'" in p.read_text()]
# One kv head: the tensor axis cannot split it, so the rules must leave it replicated.
TINY = ModelConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                   num_attention_heads=4, num_key_value_heads=1, attention_bias=True)


@pytest.fixture(autouse=True)
def fresh_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def test_paper_experiments_cover_both_models_and_targets():
    names = {p.stem for p in PAPER}
    assert names >= {"qwen25_math_7b_v5p64", "qwen25_math_7b_8xh100",
                     "qwen25_math_1p5b_v5p64", "qwen25_math_1p5b_8xh100"}


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_config_fits_its_named_target(path, tmp_path, capsys):
    assert cli.main(["plan", "--gin_file", str(path), "--workdir", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "plan.json").read_text())
    named = re.search(r"TOPOLOGY = '([^']+)'", "".join(
        (EXPERIMENTS / "paper" / "mesh" / f"{m}.gin").read_text()
        for m in re.findall(r"include 'paper/mesh/(\w+)\.gin'", path.read_text())))[1]
    assert record["topology"] == named
    assert {p["name"] for p in record["phases"]} >= {"sft", "sample", "score"}
    assert record["fits"], capsys.readouterr().out
    assert "fits: every phase" in capsys.readouterr().out


def test_too_small_target_names_the_knob(tmp_path, capsys):
    path = str(EXPERIMENTS / "paper" / "qwen25_math_7b_8xh100.gin")
    cli.main(["plan", "--gin_file", path, "--workdir", str(tmp_path), "--topology", "8xa100-40g"])
    out = capsys.readouterr().out
    assert "8 x A100 40GB" in out
    # The slots, the prefix pool and the prefill take more than both 7B models' weights: shrink them first.
    assert re.search(r"does not fit: sample needs [\d.]+ GiB per device, 36.0 GiB usable; turn: lower "
                     r"SamplerConfig.max_batch \(now 256\); or raise MeshConfig.tensor .*; or lower "
                     r"SamplerConfig.prefix_cache_rows \(now 256", out)
    assert not json.loads((tmp_path / "plan.json").read_text())["fits"]
    # Training on 2 GPUs, one sequence per micro-batch: weights, gradients and AdamW dominate.
    cli.main(["plan", "--gin_file", path, "--workdir", str(tmp_path), "--topology", "2xa100-40g",
              "--gin_bindings", "rstar_jax.config.MeshConfig.fsdp = 2", "--gin_bindings", "SFT_GRAD_ACCUM = 64"])
    out = capsys.readouterr().out
    assert re.search(r"does not fit: sft needs [\d.]+ GiB per device, 36.0 GiB usable; turn: raise MeshConfig.fsdp "
                     r"or .tensor .*; or raise TrainConfig.grad_accum_steps \(now 64: 1 sequences of 4096 tokens", out)


def test_mesh_that_does_not_match_the_target_is_one_clear_error(tmp_path):
    path = EXPERIMENTS / "paper" / "qwen25_math_7b_8xh100.gin"
    with pytest.raises(SystemExit, match=r"rstar-jax plan: MeshConfig: ICI sizes \[-1, 8, 1\] do not divide 4"):
        cli.main(["plan", "--gin_file", str(path), "--workdir", str(tmp_path), "--topology", "4xh100"])


@pytest.mark.parametrize("name,devices,gib", [
    ("v5p-64", 32, 95), ("v4-8", 4, 32), ("v5e-16", 16, 16), ("v5litepod-8", 8, 16), ("v6e-8", 8, 32),
    ("8xh100", 8, 79.6), ("h200", 1, 140.4), ("4xa100-40g", 4, 40), ("2xA100", 2, 80)])
def test_topologies(name, devices, gib):
    target = planner.parse_topology(name)
    assert target.num_devices == devices
    assert target.accelerator.hbm_bytes / planner.GIB == pytest.approx(gib, abs=0.05)


@pytest.mark.parametrize("name", ["v5p-63", "v7-8", "8xh300", "h100x8", "0xh100"])
def test_unknown_topology(name):
    with pytest.raises(ValueError, match="topology"):
        planner.parse_topology(name)


def test_remat_and_accumulation_shrink_activations():
    mesh = planner.abstract_mesh(MeshConfig(fsdp=8), 8)
    budget = 80 * planner.GIB

    def phase(**kw):
        return planner.train_phase("sft", TINY, TrainConfig(batch_size=64, max_length=256, **kw), mesh, budget,
                                   views_per_row=1, with_logits=True)

    plain, remat, accum = phase(), phase(remat=True), phase(grad_accum_steps=2)
    assert remat.activations < plain.activations and accum.activations < plain.activations
    assert accum.optimizer > plain.optimizer  # the gradient accumulator
    assert remat.params == plain.params and "remat" in remat.what


# Runs with 8 fake CPU devices, so it needs its own process.
REAL_SHARDS = r"""
import json, os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax
import numpy as np
from flax import nnx
from rstar_jax.evolve import plan as planner
from rstar_jax.config import MeshConfig, ModelConfig, TrainConfig
from rstar_jax.models.decoder import Decoder
from rstar_jax.parallel.mesh import make_mesh
from rstar_jax.parallel.rules import DECODE_RULES, TRAIN_RULES
from rstar_jax.parallel.sharding import like_params, state_shardings
from rstar_jax.training.optim import optimizer

config = ModelConfig(**json.loads(os.environ["TINY"]))
mesh_config = MeshConfig(data=2, fsdp=2, tensor=2)
mesh, abstract = make_mesh(mesh_config), planner.abstract_mesh(mesh_config, 8)
on_device0 = lambda tree: sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree))
# The whole model's shapes (all layers), as host zeros: placing them is what is being checked.
zeros = lambda tree: jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), tree)
with nnx.use_eager_sharding(False):
    params = zeros(nnx.state(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))), nnx.Param))
opt_state = zeros(jax.eval_shape(optimizer(TrainConfig()).init, params))
out = []
for rules in (TRAIN_RULES, DECODE_RULES):
    placed = jax.device_put(params, state_shardings(params, mesh, rules))
    out.append([on_device0(placed), planner.param_bytes(config, "float32", abstract, rules)])
shardings = like_params(opt_state, params, state_shardings(params, mesh, TRAIN_RULES), mesh)
out.append([on_device0(jax.device_put(opt_state, shardings)), planner.optimizer_bytes(config, abstract, TrainConfig())])
print(json.dumps(out))
"""


def test_bytes_match_real_shards_on_8_devices():
    """The abstract count (one layer built, x layers) equals what device 0 really holds."""
    fields = {k: getattr(TINY, k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                            "num_attention_heads", "num_key_value_heads", "attention_bias")}
    result = subprocess.run([sys.executable, "-c", REAL_SHARDS], capture_output=True, text=True,
                            env=dict(os.environ, TINY=json.dumps(fields)), cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr
    for real, planned in json.loads(result.stdout.splitlines()[-1]):
        assert planned == real


@pytest.mark.parametrize("name,per_host", [("v5p-64", 4), ("v4-8", 4), ("v5e-16", 4), ("v5litepod-8", 8), ("v6e-8", 8),
                                           ("8xh100", 8), ("h200", 1), ("16xh100", 8)])
def test_sampling_is_planned_on_each_hosts_devices(name, per_host):
    """ModelStack samples and scores on each host's own devices (its mesh folded into data x tensor),
    in bf16 on accelerators ("auto"): the plan of the sample and score phases is that layout."""
    from rstar_jax.config import ParallelConfig

    target = planner.parse_topology(name)
    assert target.devices_per_host == per_host
    layout = planner.decode_layout(ParallelConfig(mesh=MeshConfig(fsdp=-1, tensor=1)), target.devices_per_host,
                                   target.accelerator.backend)
    assert dict(layout.mesh.shape) == {"data": per_host, "fsdp": 1, "tensor": 1}
    assert (layout.dtype, layout.param_dtype) == ("bfloat16", "bfloat16")


def test_plan_json_records_the_decode_layout(tmp_path):
    path = EXPERIMENTS / "paper" / "qwen25_math_7b_v5p64.gin"
    assert cli.main(["plan", "--gin_file", str(path), "--workdir", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "plan.json").read_text())
    assert record["devices_per_host"] == 4
    assert record["decode"] == {"mesh": {"data": 4, "fsdp": 1, "tensor": 1}, "dtype": "bfloat16",
                                "param_dtype": "bfloat16"}
    sample = next(p for p in record["phases"] if p["name"] == "sample")
    assert "32 slots" in sample["what"]  # the host's 128 rows over its 4 chips


def test_the_prefix_pool_is_planned_beside_the_slots():
    from rstar_jax.config import SamplerConfig

    mesh = planner.abstract_mesh(MeshConfig(data=2, fsdp=1, tensor=1), 2)
    phase = lambda rows: planner.sample_phase(
        TINY, None, SamplerConfig(max_batch=8, max_len=256, prefix_cache_rows=rows), 4, mesh, 1 << 40)
    plain, pooled = phase(0), phase(16)
    # 16 pool rows split over the 2 data shards, each row max_len tokens of keys and values.
    assert pooled.kv_cache - plain.kv_cache == 8 * 256 * planner.kv_bytes_per_token(TINY, 1, 4)
    assert "8 prefix-pool rows" in pooled.what
    # Rows that do not split over the shards lie whole on every device, as the sampler places them.
    assert phase(15).kv_cache - plain.kv_cache == 15 * 256 * planner.kv_bytes_per_token(TINY, 1, 4)
    assert any("prefix_cache_rows (now 16" in knob for knob in pooled.knobs)


def test_the_scorers_prefix_pool_is_planned_in_both_search_phases():
    """The scorer's pool is resident while the sampler samples, and the sampler's while it scores."""
    from rstar_jax.config import SamplerConfig, ScorerConfig

    plan = lambda rows: {phase.name: phase for phase in planner.plan_memory(
        "v5e-4", policy=TINY, ppm=TINY, mesh=MeshConfig(data=4, fsdp=1, tensor=1),
        sampler=SamplerConfig(max_batch=8, max_len=256, prefix_cache_rows=8),
        scorer=ScorerConfig(max_batch=8, max_len=128, prefix_cache_rows=rows))[2]}
    plain, pooled = plan(0), plan(16)
    per_token = planner.kv_bytes_per_token(TINY, 1, 2)  # bfloat16 on TPU
    # 16 rows over the host's 4 chips, each max_len tokens; the sampler's 8 rows beside them.
    assert pooled["score"].kv_cache - plain["score"].kv_cache == 4 * 128 * per_token
    assert plain["score"].kv_cache == 2 * 256 * per_token
    assert pooled["sample"].kv_cache - plain["sample"].kv_cache == 4 * 128 * per_token
    assert "4 prefix-pool rows" in pooled["score"].what
    assert any("ScorerConfig.prefix_cache_rows (now 16" in knob for knob in pooled["score"].knobs)
