"""Memory planner: does a config fit a TPU slice or a GPU box, phase by phase, before paying for it.

The policy and the PPM are built abstractly (`nnx.eval_shape`: shapes, no memory) and sharded by
the training and decoding rules of `rstar_jax.parallel` on an abstract mesh shaped like the target,
so parameter, gradient and optimizer bytes per device are exact. Activations and KV caches are
estimated from the shapes the trainer, sampler and scorer use (remat-aware, attention scores
materialised as `jax.nn.dot_product_attention` does without a fused kernel, in training over the
decoder's blocks of queries). Against the real peak of the train loop's step on one H100
(Qwen2.5-Math-1.5B widths, 8 layers, 4096 tokens; before those blocks) the training estimate was
+12% (1 sequence, remat), +7% (2 sequences, remat) and -1% (1 sequence, no remat).

Sampling and scoring are planned as `rstar_jax.inference.stack.ModelStack` builds them: on each
host's own devices (the mesh folded into ('data', 'tensor')), in the ParallelConfig's dtypes
("auto": bfloat16 on these accelerators) and rules; each host's sampler holds `max_batch` rows.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from rstar_jax.config import (MeshConfig, ModelConfig, ParallelConfig, SamplerConfig, ScorerConfig, SearchConfig,
                              TrainConfig)
from rstar_jax.inference.stack import decode_mesh_config, decode_rules, resolve_dtypes
from rstar_jax.models.decoder import Decoder, query_blocks
from rstar_jax.parallel import sharding
from rstar_jax.parallel.mesh import AXES, resolve_shape
from rstar_jax.parallel.rules import DECODE_RULES, TRAIN_RULES, Rules
from rstar_jax.shapes import bucket
from rstar_jax.training.optim import optimizer

GIB = 1024**3
MIB = 1024**2
HEADROOM = 0.9  # share of device memory a plan may use; XLA needs the rest for temporaries


@dataclasses.dataclass(frozen=True)
class Accelerator:
    name: str
    hbm_bytes: int  # per JAX device
    cores_per_device: int = 1  # TPU names count TensorCores; v4 / v5p chips (devices) have 2
    backend: str = "tpu"  # jax.default_backend() on it: what an "auto" dtype resolves by
    devices_per_host: int = 4  # in a multi-host slice (or box of GPUs)


# Memory per JAX device: TPU chips, and GPUs as nvidia-smi reports them.
ACCELERATORS = {
    "v4": Accelerator("TPU v4", 32 * GIB, cores_per_device=2),
    "v5e": Accelerator("TPU v5e", 16 * GIB),
    "v5litepod": Accelerator("TPU v5e", 16 * GIB),
    "v5p": Accelerator("TPU v5p", 95 * GIB, cores_per_device=2),
    "v6e": Accelerator("TPU v6e", 32 * GIB),
    "a100-40g": Accelerator("A100 40GB", 40960 * MIB, backend="gpu", devices_per_host=8),
    "a100": Accelerator("A100 80GB", 81920 * MIB, backend="gpu", devices_per_host=8),
    "h100": Accelerator("H100 80GB", 81559 * MIB, backend="gpu", devices_per_host=8),
    "h200": Accelerator("H200 141GB", 143771 * MIB, backend="gpu", devices_per_host=8),
}
# v5e and v6e slices of up to 8 chips are one host of 8; larger ones are hosts of 4.
_SINGLE_HOST_UP_TO = {"TPU v5e": 8, "TPU v6e": 8}


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str
    accelerator: Accelerator
    num_devices: int

    @property
    def devices_per_host(self) -> int:
        """Devices of one host: what each host's sampler and scorer run on."""
        acc = self.accelerator
        if self.num_devices <= _SINGLE_HOST_UP_TO.get(acc.name, 0):
            return self.num_devices
        return min(self.num_devices, acc.devices_per_host)


def parse_topology(name: str) -> Topology:
    """'v5p-64' (TensorCores, as Cloud TPU names slices), 'v6e-8', '8xh100', 'h200', '4xa100-40g'."""
    key = name.strip().lower()
    if m := re.fullmatch(r"(v4|v5e|v5litepod|v5p|v6e)-(\d+)", key):
        acc, cores = ACCELERATORS[m[1]], int(m[2])
        if cores % acc.cores_per_device:
            raise ValueError(f"topology {name!r}: {acc.name} slices come in multiples of {acc.cores_per_device} cores")
        return Topology(name, acc, cores // acc.cores_per_device)
    if m := re.fullmatch(r"(?:(\d+)x)?(a100-40g|a100|h100|h200)", key):
        if m[1] is not None and int(m[1]) < 1:
            raise ValueError(f"topology {name!r}: needs at least one device")
        return Topology(name, ACCELERATORS[m[2]], int(m[1] or 1))
    raise ValueError(f"unknown topology {name!r}; expected e.g. v4-8, v5e-16, v5p-64, v6e-8, 8xa100, 8xa100-40g, "
                     "8xh100, 8xh200")


def abstract_mesh(config: MeshConfig, num_devices: int) -> jax.sharding.AbstractMesh:
    """The ('data', 'fsdp', 'tensor') mesh `make_mesh` would build over `num_devices` devices."""
    dcn = (config.dcn_data, config.dcn_fsdp, config.dcn_tensor)
    if num_devices % math.prod(dcn):
        raise ValueError(f"MeshConfig: {num_devices} devices do not split into {math.prod(dcn)} DCN slices")
    ici = resolve_shape((config.data, config.fsdp, config.tensor), num_devices // math.prod(dcn), "ICI")
    return jax.sharding.AbstractMesh(tuple(i * d for i, d in zip(ici, dcn)), AXES)


_ABSTRACT: dict[str, nnx.State] = {}


def abstract_params(config: ModelConfig, param_dtype: str) -> nnx.State:
    """Parameters of a one-layer Decoder as abstract arrays with their logical axis names.

    Decoder layers are identical, so one stands for all of them: `_layer_count` multiplies its
    bytes by `num_hidden_layers` (tracing all 28 layers of a 7B model costs ~30 s on a CPU).
    """
    config = dataclasses.replace(config, param_dtype=param_dtype, num_hidden_layers=1)
    key = repr(config)
    if key not in _ABSTRACT:
        with nnx.use_eager_sharding(False):
            model = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
        _ABSTRACT[key] = nnx.state(model, nnx.Param)
    return _ABSTRACT[key]


def _layer_count(path: tuple, model: ModelConfig) -> int:
    """How many real arrays the leaf at `path` of a one-layer tree stands for."""
    return model.num_hidden_layers if any(getattr(k, "key", None) == "layers" for k in path) else 1


def _shard_bytes(tree, shardings, model: ModelConfig) -> int:
    """Bytes one device holds of `tree` (abstract arrays of a one-layer model) laid out by `shardings`."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    total = 0
    for (path, leaf), s in zip(leaves, jax.tree.leaves(shardings), strict=True):
        count = _layer_count(path, model)
        total += count * math.prod(s.shard_shape(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize
    return total


def param_bytes(model: ModelConfig, param_dtype: str, mesh: jax.sharding.AbstractMesh, rules: Rules) -> int:
    params = abstract_params(model, param_dtype)
    return _shard_bytes(params, sharding.state_shardings(params, mesh, rules), model)


def num_params(model: ModelConfig) -> int:
    leaves = jax.tree_util.tree_flatten_with_path(abstract_params(model, model.param_dtype))[0]
    return sum(_layer_count(path, model) * math.prod(leaf.shape) for path, leaf in leaves)


def optimizer_bytes(model: ModelConfig, mesh: jax.sharding.AbstractMesh, config: TrainConfig) -> int:
    """AdamW state of fp32 master weights, sharded like the parameters it mirrors (as the train loop does)."""
    params = abstract_params(model, "float32")
    opt_state = jax.eval_shape(optimizer(config).init, params)
    shardings = sharding.like_params(opt_state, params, sharding.state_shardings(params, mesh, TRAIN_RULES), mesh)
    return _shard_bytes(opt_state, shardings, model)


def batch_shards(mesh: jax.sharding.AbstractMesh, rules: Rules) -> int:
    """How many ways the rules split a batch over `mesh`."""
    spec = sharding.logical_to_spec(("batch",), rules, mesh)[0]
    return math.prod(mesh.shape[a] for a in ((spec,) if isinstance(spec, str) else spec or ()))


def _tensor(mesh: jax.sharding.AbstractMesh) -> int:
    return mesh.shape["tensor"]


def layer_activation_bytes(config: ModelConfig, rows: int, q_len: int, kv_len: int | None, tensor: int,
                           dtype_bytes: int, backward: bool) -> int:
    """Activations of one decoder layer over `rows` x `q_len` tokens attending to `kv_len` cache
    slots, or (`kv_len` None) to themselves, as the decoder's blocks of queries do.

    Forward only: the live tensors at the layer's peak. With `backward`: what autodiff keeps for
    the backward pass (inputs of every matmul, the attention probabilities). Both count the
    attention's float32 logits and the RMS norm's float32 copy of the hidden state.
    """
    d, f = config.hidden_size, config.intermediate_size
    h, hkv, dh = config.num_attention_heads, config.num_key_value_heads, config.resolved_head_dim
    heads = max(h // tensor, 1)
    tokens = rows * q_len
    if backward:  # norms in/out, residual, attention out; q, k, v, context; gate, up, silu, product
        per_token = 4 * d + (2 * h + 2 * hkv) * dh / tensor + 4 * f / tensor
    else:  # residual, normed input, q/k/v, context; gate and up
        per_token = 3 * d + (2 * h + 2 * hkv) * dh / tensor + 2 * f / tensor
    norm = tokens * d * 4  # the RMS norm works on a float32 copy of the hidden state
    # The attention's logits are float32 whatever the compute dtype (softmax precision), beside the
    # probabilities in the compute dtype.
    scored = (sum((end - start) * end for start, end in query_blocks(q_len)) if kv_len is None
              else q_len * kv_len)
    scores = rows * heads * scored * (4 + dtype_bytes)
    mask = rows * q_len * (kv_len or q_len)  # bool
    return int(tokens * per_token * dtype_bytes + norm + scores + mask)


def kv_bytes_per_token(config: ModelConfig, tensor: int, dtype_bytes: int) -> int:
    kv_heads = config.num_key_value_heads
    kv_heads = kv_heads // tensor if kv_heads % tensor == 0 else kv_heads  # as the rules shard them
    return 2 * config.num_hidden_layers * kv_heads * config.resolved_head_dim * dtype_bytes


@dataclasses.dataclass(frozen=True)
class Phase:
    """Bytes per device of one phase of a round, against the device's budget."""

    name: str
    what: str
    params: int
    optimizer: int  # gradients, their accumulator and the optimizer state
    activations: int
    kv_cache: int
    budget: int
    knobs: tuple[str, ...]  # what to turn if it does not fit, most effective first

    @property
    def total(self) -> int:
        return self.params + self.optimizer + self.activations + self.kv_cache

    @property
    def fits(self) -> bool:
        return self.total <= self.budget


def _most_effective_first(weights_dominate: bool, shard_knob: str, batch_knobs: tuple[str, ...]) -> tuple[str, ...]:
    """Sharding the weights helps most when they take more memory than the batch does."""
    return (shard_knob, *batch_knobs) if weights_dominate else (*batch_knobs, shard_knob)


def _micro_rows(config: TrainConfig, shards: int, what: str) -> int:
    if config.batch_size % (config.grad_accum_steps * shards):
        raise ValueError(f"TrainConfig ({what}): batch_size {config.batch_size} / grad_accum_steps "
                         f"{config.grad_accum_steps} is not a multiple of the mesh's {shards} batch shards")
    return config.batch_size // (config.grad_accum_steps * shards)


def train_phase(name: str, model: ModelConfig, config: TrainConfig, mesh: jax.sharding.AbstractMesh,
                budget: int, *, views_per_row: int, with_logits: bool) -> Phase:
    """Training a decoder: fp32 master weights, gradients (+ accumulator), AdamW, activations.

    A row packs up to `views_per_row` sequences of up to `max_length` tokens (a PPM pair: one
    prompt, two steps); the train loop pads a longer-than-max_length row to a bucket of its length.
    """
    p_bytes = param_bytes(model, "float32", mesh, TRAIN_RULES)
    grads = p_bytes * (2 if config.grad_accum_steps > 1 else 1)
    rows = _micro_rows(config, batch_shards(mesh, TRAIN_RULES), name)
    t, tp, c = config.max_length, _tensor(mesh), jnp.dtype(config.compute_dtype).itemsize
    if views_per_row > 1:
        t = bucket(views_per_row * t, config.min_bucket_length, per_doubling=2)
    layer = layer_activation_bytes(model, rows, t, None, tp, c, backward=True)
    remat = config.remat or model.remat
    layers = model.num_hidden_layers
    # Logits in compute dtype and fp32; the cross-entropy and its gradient fuse into them.
    logits = rows * t * (model.vocab_size // tp) * (c + 4) if with_logits else 0
    if remat:  # layer inputs; the peak is either the loss's backward or one layer's recompute
        acts = layers * rows * t * model.hidden_size * c + max(logits, 2 * layer)
    else:  # every layer's saved activations are live when the loss's backward runs
        acts = (layers + 1) * layer + logits
    opt = optimizer_bytes(model, mesh, config)
    batch_knobs = (f"raise TrainConfig.grad_accum_steps (now {config.grad_accum_steps}: {rows} sequences of {t} "
                   "tokens per device per micro-batch)",) + (() if remat else ("set TrainConfig.remat = True",))
    shard_knob = "raise MeshConfig.fsdp or .tensor (shards weights and optimizer state further)"
    knobs = _most_effective_first(p_bytes + grads + opt > acts, shard_knob, batch_knobs)
    knobs += ("lower TrainConfig.max_length",)
    return Phase(name, f"{num_params(model) / 1e9:.2f}B params, {rows} x {t} tokens per micro-batch"
                 + (", remat" if remat else ""),
                 p_bytes, grads + opt, acts, 0, budget, knobs)


def ppm_bytes(ppm: ModelConfig, mesh: jax.sharding.AbstractMesh, rules: Rules) -> int:
    """A PPM's parameters on one device: its decoder and the (float32, replicated) value head."""
    return param_bytes(ppm, ppm.param_dtype, mesh, rules) + (ppm.hidden_size + 1) * 4


def pool_rows(rows: int, mesh: jax.sharding.AbstractMesh, rules: Rules = DECODE_RULES) -> int:
    """Rows of a prefix pool of `rows` on each device: split over the batch shards, or whole on
    every device when they do not divide (as the sampler and scorer place them)."""
    per_shard, rest = divmod(rows, batch_shards(mesh, rules))
    return rows if rest else per_shard


def pool_bytes(model: ModelConfig, rows: int, length: int, mesh: jax.sharding.AbstractMesh,
               rules: Rules = DECODE_RULES) -> int:
    """Bytes per device of a prefix pool of `rows` caches of `length` tokens of `model`."""
    per_token = kv_bytes_per_token(model, _tensor(mesh), jnp.dtype(model.dtype).itemsize)
    return pool_rows(rows, mesh, rules) * length * per_token


def sample_phase(policy: ModelConfig, ppm: ModelConfig | None, config: SamplerConfig, candidates: int,
                 mesh: jax.sharding.AbstractMesh, budget: int, rules: Rules = DECODE_RULES,
                 scorer_pool: int = 0) -> Phase:
    """Search, sampling: both models resident, the slot cache and the prefix pool, and prefilling
    one batch of prompts.

    `mesh` is one host's decoding mesh, `config` that host's sampler. Each distinct prompt is
    prefilled once and forked into its `candidates` slots; prompts are taken at full length
    (`max_len`) as a worst case. The prefix pool holds `prefix_cache_rows` prompts of `max_len`;
    the scorer's pool (`scorer_pool` bytes, `pool_bytes`) stays resident beside it.
    """
    shards, tp = batch_shards(mesh, rules), _tensor(mesh)
    c = jnp.dtype(policy.dtype).itemsize
    params = param_bytes(policy, policy.param_dtype, mesh, rules)
    if ppm is not None:
        params += ppm_bytes(ppm, mesh, rules)
    slots = 1 << (config.max_batch.bit_length() - 1)  # the sampler rounds down to a power of two
    rows = math.ceil(slots / shards)
    prompts = math.ceil((1 << (math.ceil(slots / candidates) - 1).bit_length()) / shards)
    per_token = kv_bytes_per_token(policy, tp, c)
    prefill = (prompts * config.max_len * per_token
               + layer_activation_bytes(policy, prompts, config.max_len, config.max_len, tp, c, backward=False))
    pool = pool_rows(config.prefix_cache_rows, mesh, rules)
    kv_cache = (rows + pool) * config.max_len * per_token + scorer_pool
    knobs = _most_effective_first(params > kv_cache + prefill, "raise MeshConfig.tensor (splits weights and KV heads)",
                                  (f"lower SamplerConfig.max_batch (now {config.max_batch})",))
    if config.prefix_cache_rows:
        knobs += (f"lower SamplerConfig.prefix_cache_rows (now {config.prefix_cache_rows}; at least max_batch)",)
    pooled = f" + {pool} prefix-pool rows" if pool else ""
    return Phase("sample", f"policy{' + PPM' if ppm else ''} weights, {rows} slots{pooled} x {config.max_len} tokens, "
                 f"{prompts} prompts prefilled per device", params, 0, prefill, kv_cache, budget,
                 knobs + (f"lower SamplerConfig.max_len (now {config.max_len})",))


def score_phase(policy: ModelConfig, ppm: ModelConfig, config: ScorerConfig, mesh: jax.sharding.AbstractMesh,
                budget: int, rules: Rules = DECODE_RULES, sampler_pool: int = 0) -> Phase:
    """Search, scoring: both models resident, one PPM forward over `max_batch` texts of `max_len`
    (`mesh`: one host's decoding mesh), the scorer's prefix pool and the sampler's (`sampler_pool`
    bytes, `pool_bytes`), which stays resident."""
    shards, tp = batch_shards(mesh, rules), _tensor(mesh)
    params = param_bytes(policy, policy.param_dtype, mesh, rules) + ppm_bytes(ppm, mesh, rules)
    rows = math.ceil((1 << (config.max_batch.bit_length() - 1)) / shards)
    acts = layer_activation_bytes(ppm, rows, config.max_len, config.max_len, tp, jnp.dtype(ppm.dtype).itemsize,
                                  backward=False)
    pool = pool_rows(config.prefix_cache_rows, mesh, rules)
    kv_cache = pool_bytes(ppm, config.prefix_cache_rows, config.max_len, mesh, rules) + sampler_pool
    knobs = _most_effective_first(params > acts, "raise MeshConfig.tensor (splits weights and heads)",
                                  (f"lower ScorerConfig.max_batch (now {config.max_batch})",))
    if config.prefix_cache_rows:
        knobs += (f"lower ScorerConfig.prefix_cache_rows (now {config.prefix_cache_rows}; at least max_batch)",)
    pooled = f" + {pool} prefix-pool rows" if pool else ""
    return Phase("score", f"policy + PPM weights, {rows} texts{pooled} x {config.max_len} tokens per device",
                 params, 0, acts, kv_cache, budget, knobs)


@dataclasses.dataclass(frozen=True)
class DecodeLayout:
    """What ModelStack builds on each host of a target: mesh, dtypes, rules."""

    mesh: jax.sharding.AbstractMesh
    dtype: str
    param_dtype: str
    rules: Rules

    def models(self, *configs: ModelConfig | None) -> list[ModelConfig | None]:
        """Model configs as the stack loads them (in its dtypes)."""
        return [c and dataclasses.replace(c, dtype=self.dtype, param_dtype=self.param_dtype) for c in configs]


def decode_layout(parallel: ParallelConfig, devices_per_host: int, backend: str) -> DecodeLayout:
    """ModelStack's layout over one host's `devices_per_host` devices of `backend`."""
    return DecodeLayout(abstract_mesh(decode_mesh_config(parallel.mesh), devices_per_host),
                        *resolve_dtypes(parallel, backend), decode_rules(parallel))


def plan_memory(topology: str, *, policy: ModelConfig, ppm: ModelConfig | None = None, mesh: MeshConfig,
                sft: TrainConfig | None = None, ppm_train: TrainConfig | None = None,
                sampler: SamplerConfig | None = None, scorer: ScorerConfig | None = None,
                searches: Sequence[SearchConfig] = (), parallel: ParallelConfig | None = None,
                ) -> tuple[Topology, jax.sharding.AbstractMesh, list[Phase]]:
    """Per-device memory of every phase the configs describe (a phase whose config is None is skipped).

    Training uses `mesh` over the whole target; sampling and scoring `parallel` (default: `mesh`
    with "auto" dtypes, as `rstar-jax evolve` builds them) on each host.
    """
    target = parse_topology(topology)
    decode = decode_layout(parallel or ParallelConfig(mesh=mesh), target.devices_per_host,
                           target.accelerator.backend)
    amesh = abstract_mesh(mesh, target.num_devices)
    budget = int(target.accelerator.hbm_bytes * HEADROOM)
    phases = []
    if sft is not None:
        phases.append(train_phase("sft", policy, sft, amesh, budget, views_per_row=1, with_logits=True))
    if ppm_train is not None:
        if ppm is None:
            raise ValueError("plan: ppm_train is set but no ppm model config")
        phases.append(train_phase("ppm", ppm, ppm_train, amesh, budget, views_per_row=2, with_logits=False))
    decode_policy, decode_ppm = decode.models(policy, ppm)
    scoring = scorer is not None and ppm is not None
    # Each of the two prefix pools stays resident through the other's phase.
    sampler_pool = (pool_bytes(decode_policy, sampler.prefix_cache_rows, sampler.max_len, decode.mesh, decode.rules)
                    if sampler is not None else 0)
    scorer_pool = (pool_bytes(decode_ppm, scorer.prefix_cache_rows, scorer.max_len, decode.mesh, decode.rules)
                   if scoring else 0)
    if sampler is not None:
        candidates = min((s.num_candidates for s in searches), default=1)
        phases.append(sample_phase(decode_policy, decode_ppm, sampler, candidates, decode.mesh, budget, decode.rules,
                                   scorer_pool))
    if scoring:
        phases.append(score_phase(decode_policy, decode_ppm, scorer, decode.mesh, budget, decode.rules,
                                  sampler_pool))
    return target, amesh, phases


def _gib(n: int) -> str:
    return f"{n / GIB:.1f}" if n else "-"


def render(target: Topology, mesh: jax.sharding.AbstractMesh, phases: Sequence[Phase]) -> str:
    """A table of GiB per device, then one line per phase that does not fit, naming the knob."""
    acc = target.accelerator
    lines = [f"{target.name}: {target.num_devices} x {acc.name}, {acc.hbm_bytes / GIB:.1f} GiB per device "
             f"(plans may use {HEADROOM:.0%}: {HEADROOM * acc.hbm_bytes / GIB:.1f} GiB); mesh "
             + " ".join(f"{k}={v}" for k, v in mesh.shape.items()),
             "GiB per device:",
             f"{'phase':<7}{'params':>8}{'grads+opt':>11}{'activ.':>8}{'KV cache':>10}{'total':>8}  fits  what"]
    for p in phases:
        lines.append(f"{p.name:<7}{_gib(p.params):>8}{_gib(p.optimizer):>11}{_gib(p.activations):>8}"
                     f"{_gib(p.kv_cache):>10}{_gib(p.total):>8}  {'yes' if p.fits else 'NO ':<4}  {p.what}")
    for p in phases:
        if not p.fits:
            lines.append(f"does not fit: {p.name} needs {p.total / GIB:.1f} GiB per device, "
                         f"{p.budget / GIB:.1f} GiB usable; turn: " + "; or ".join(p.knobs))
    if all(p.fits for p in phases):
        lines.append("fits: every phase")
    return "\n".join(lines)


def plan(workdir: str, *, topology: str, policy: ModelConfig, ppm: ModelConfig | None = None,
         mesh: MeshConfig = MeshConfig(), sft: TrainConfig | None = None, ppm_train: TrainConfig | None = None,
         sampler: SamplerConfig | None = None, scorer: ScorerConfig | None = None,
         searches: Sequence[SearchConfig] = (), parallel: ParallelConfig | None = None) -> bool:
    """`rstar-jax plan`: prints the memory table for `topology` and writes `workdir/plan.json`.

    Returns whether every phase fits. Needs no accelerator: everything is abstract. `parallel`:
    the sampling and scoring layout (default: `mesh`, "auto" dtypes, as `rstar-jax evolve`).
    """
    parallel = parallel or ParallelConfig(mesh=mesh)
    try:
        target, amesh, phases = plan_memory(topology, policy=policy, ppm=ppm, mesh=mesh, sft=sft,
                                            ppm_train=ppm_train, sampler=sampler, scorer=scorer, searches=searches,
                                            parallel=parallel)
        decode = decode_layout(parallel, target.devices_per_host, target.accelerator.backend)
    except ValueError as e:
        raise SystemExit(f"rstar-jax plan: {e}") from None
    print(render(target, amesh, phases))
    print(f"sampling and scoring: each host's {target.devices_per_host} devices, mesh "
          + " ".join(f"{k}={v}" for k, v in decode.mesh.shape.items())
          + f", {decode.dtype} compute, {decode.param_dtype} weights")
    os.makedirs(workdir, exist_ok=True)
    record = {"topology": target.name, "num_devices": target.num_devices, "device_bytes": target.accelerator.hbm_bytes,
              "mesh": dict(amesh.shape), "devices_per_host": target.devices_per_host,
              "decode": {"mesh": dict(decode.mesh.shape), "dtype": decode.dtype, "param_dtype": decode.param_dtype},
              "fits": all(p.fits for p in phases),
              "phases": [{**dataclasses.asdict(p), "total": p.total, "fits": p.fits} for p in phases]}
    tmp = os.path.join(workdir, "plan.json.tmp")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, os.path.join(workdir, "plan.json"))
    return record["fits"]
