"""The models a search, an evaluation or a generation works with, built in one place from HF
directories by one ParallelConfig: the policy's sampler, the PPM's scorer (when there is one) and
the code executor.

Every host searches, evaluates or generates for its own problems, so each host's models live on a
mesh of its own devices: the configured mesh folds into ('data', 'tensor') over them (decoding
replicates the weights over 'data' and 'fsdp', DECODE_RULES, so both only split rows), and the
sampler's and scorer's rows are split over every local device. `rstar_jax.evolve.plan` plans
exactly this layout (`decode_mesh_config`, `resolve_dtype`).
"""

from __future__ import annotations

import jax

from rstar_jax.config import MeshConfig, ParallelConfig, SamplerConfig, ScorerConfig
from rstar_jax.inference.sampler import Sampler
from rstar_jax.inference.scorer import PPMScorer
from rstar_jax.models.hf import load_hf, load_ppm_hf
from rstar_jax.parallel.mesh import make_mesh
from rstar_jax.parallel.rules import DECODE_RULES, Rules
from rstar_jax.verify.executor import Executor

DTYPES = ("float32", "bfloat16")


def resolve_dtype(name: str, backend: str | None = None) -> str:
    """A ParallelConfig dtype: "auto" is bfloat16 on GPU and TPU, float32 on CPU (`backend`
    defaults to jax.default_backend())."""
    if name == "auto":
        return "float32" if (backend or jax.default_backend()) == "cpu" else "bfloat16"
    if name not in DTYPES:
        raise ValueError(f"ParallelConfig: dtype must be 'auto' or one of {DTYPES}, got {name!r}")
    return name


def resolve_dtypes(parallel: ParallelConfig, backend: str | None = None) -> tuple[str, str]:
    """(compute dtype, parameter dtype) of `parallel`; an "auto" parameter dtype is the compute one."""
    dtype = resolve_dtype(parallel.dtype, backend)
    return dtype, dtype if parallel.param_dtype == "auto" else resolve_dtype(parallel.param_dtype, backend)


def decode_rules(parallel: ParallelConfig) -> Rules:
    return DECODE_RULES if parallel.rules is None else tuple(parallel.rules)


def decode_mesh_config(mesh: MeshConfig) -> MeshConfig:
    """The per-host mesh of decoding: 'data' takes every local device that 'tensor' leaves."""
    return MeshConfig(data=-1, fsdp=1, tensor=mesh.tensor)


def host_mesh(mesh: MeshConfig) -> jax.sharding.Mesh:
    """This host's decoding mesh, over all of its devices."""
    devices = jax.local_devices()
    if mesh.tensor < 1 or len(devices) % mesh.tensor:
        raise ValueError(f"MeshConfig.tensor = {mesh.tensor}: sampling and scoring run on each host's own "
                         f"{len(devices)} devices, which it must divide")
    return make_mesh(decode_mesh_config(mesh), devices=devices)


class ModelStack:
    """Policy sampler, PPM scorer and code executor of one stage; a context manager that owns the
    executor's worker processes (none with `exec_workers=0`). `mesh`, `dtype`, `param_dtype` and
    `rules` say what was built."""

    def __init__(self, policy_dir: str, ppm_dir: str | None = None, *, sampler: SamplerConfig,
                 scorer: ScorerConfig = ScorerConfig(), exec_workers: int, exec_timeout_s: float,
                 parallel: ParallelConfig = ParallelConfig()):
        self.dtype, self.param_dtype = resolve_dtypes(parallel)
        self.rules = decode_rules(parallel)
        self.mesh = host_mesh(parallel.mesh)
        load = dict(mesh=self.mesh, rules=self.rules, dtype=self.dtype, param_dtype=self.param_dtype)
        model, self.tokenizer = load_hf(policy_dir, **load)
        self.policy = Sampler(model, self.tokenizer, sampler, mesh=self.mesh, rules=self.rules)
        self.ppm = None
        if ppm_dir:
            ppm_model, _ = load_ppm_hf(ppm_dir, **load)
            self.ppm = PPMScorer(ppm_model, self.tokenizer, scorer, mesh=self.mesh, rules=self.rules)
        self.executor = (Executor(num_workers=exec_workers, timeout_s=exec_timeout_s)
                         if exec_workers > 0 else None)  # generate runs no code

    def __enter__(self) -> ModelStack:
        return self

    def __exit__(self, *exc) -> None:
        if self.executor is not None:
            self.executor.close()
