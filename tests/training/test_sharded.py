"""SFT and PPM steps on 8 fake CPU devices match one device, and parameters are sharded as the
training rules say. Runs tests/training/sharded_run.py in a subprocess (XLA flags must be set
before jax starts)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.slow  # 8 compilations on 8 fake devices: about 80 s of CPU time


@pytest.fixture(scope="module")
def report():
    # Unoptimised XLA code compiles several times faster; the numbers compared do not change.
    flags = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("sharded_run.py"))], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mesh", ["8x1x1", "2x4x1", "2x2x2"])
def test_losses_and_parameters_match_one_device(report, mesh):
    one, many = report["1"], report[mesh]
    np.testing.assert_allclose(many["sft_losses"], one["sft_losses"], rtol=1e-5)
    np.testing.assert_allclose(many["ppm_losses"], one["ppm_losses"], rtol=1e-5)
    # Adam normalises tiny differences in reduction order up to ~lr * 1e-3 after a few steps.
    assert many["max_param_diff"]["sft"] < 1e-4 and many["max_param_diff"]["ppm"] < 1e-4
    assert len(one["sft_losses"]) == len(one["ppm_losses"]) == 3


def test_parameters_are_sharded_as_the_rules_say(report):
    # (data, fsdp, tensor) = (2, 2, 2): 'embed' over fsdp, heads / kv heads / mlp / vocab over tensor.
    assert report["2x2x2"]["specs"] == {
        "embedding": ["tensor", "fsdp"],
        "q_kernel": ["fsdp", "tensor", None],
        "k_kernel": ["fsdp", "tensor", None],
        "up_kernel": ["fsdp", "tensor"],
        "down_kernel": ["tensor", "fsdp"],
        "lm_head": ["fsdp", "tensor"],
    }
    # fsdp=4 splits 'embed' four ways; size-1 axes shard nothing.
    assert report["2x4x1"]["specs"]["up_kernel"] == ["fsdp", None]
    assert all(all(a is None for a in spec) for spec in report["8x1x1"]["specs"].values())
