"""benchmarks/device_check.sh --tiny: the device check's every step runs on CPU with tiny shapes and
ends in one JSON line with every field a lent GPU fills (no timing is asserted)."""

import json
import os
import subprocess
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # five short benchmark processes: about two minutes on 2 busy cores
def test_tiny_device_check_prints_one_json_line_with_every_field():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), "--tiny"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout
    check = json.loads(lines[0])
    assert check["benchmark"] == "device_check" and check["tiny"] and check["backend"] == "cpu"
    assert "cores" in check["machine"] and check["machine"].endswith(f"jax {jax.__version__}")
    assert check["errors"] == {}, check["errors"]
    assert set(check["sampler_tokens_per_s"]["tiny"]) == {"2", "4"}
    assert all(r["ours_tokens_per_s"] > 0 for r in check["sampler_tokens_per_s"]["tiny"].values())
    assert check["train"]["sft_mfu"] > 0 and check["train"]["ppm_tokens_per_s"] > 0
    assert check["tree_kernel"]["results"] and check["tree_kernel"]["results"][0]["ours_sims_per_s"] > 0
    assert check["score_texts_per_s"] > 0
    # The planner's estimates are there; a CPU has no peak-memory counter, so no measured side.
    assert set(check["memory"]) == {"sft", "ppm", "sample/tiny", "score"}
    assert all(m["planned_bytes"] > 0 and m["measured_peak_bytes"] is None for m in check["memory"].values())
