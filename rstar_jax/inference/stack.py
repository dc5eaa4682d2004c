"""The models a search or an evaluation stage works with, built in one place from HF directories:
the policy's sampler, the PPM's scorer (when there is one) and the code executor."""

from __future__ import annotations

import jax

from rstar_jax.config import MeshConfig, SamplerConfig, ScorerConfig
from rstar_jax.inference.sampler import Sampler
from rstar_jax.inference.scorer import PPMScorer
from rstar_jax.models.hf import load_hf, load_ppm_hf
from rstar_jax.parallel.mesh import make_mesh
from rstar_jax.verify.executor import Executor


def host_mesh(mesh: MeshConfig) -> jax.sharding.Mesh:
    """This host's mesh: hosts search and evaluate different problems, so each mesh spans its own
    devices. Decoding replicates the weights over 'data' and 'fsdp' (both only split rows,
    DECODE_RULES), so they fold into 'data'; 'tensor' is kept."""
    return make_mesh(MeshConfig(data=-1, fsdp=1, tensor=mesh.tensor), devices=jax.local_devices())


class ModelStack:
    """Policy sampler, PPM scorer and code executor of one stage; a context manager that owns the
    executor's worker processes."""

    def __init__(self, policy_dir: str, ppm_dir: str | None = None, *, sampler: SamplerConfig,
                 scorer: ScorerConfig, exec_workers: int, exec_timeout_s: float,
                 mesh: MeshConfig | None = None, dtype: str = "float32"):
        self.mesh = host_mesh(mesh) if mesh is not None else None
        model, self.tokenizer = load_hf(policy_dir, mesh=self.mesh, dtype=dtype)
        self.policy = Sampler(model, self.tokenizer, sampler, mesh=self.mesh)
        self.ppm = None
        if ppm_dir:
            ppm_model, _ = load_ppm_hf(ppm_dir, mesh=self.mesh, dtype=dtype)
            self.ppm = PPMScorer(ppm_model, self.tokenizer, scorer, mesh=self.mesh)
        self.executor = Executor(num_workers=exec_workers, timeout_s=exec_timeout_s)

    def __enter__(self) -> ModelStack:
        self.executor.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.executor.__exit__(*exc)
