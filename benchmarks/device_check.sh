#!/usr/bin/env bash
# The device check for a lent GPU (or TPU): one JSON line with the sampler's tokens/s at batch 64
# and 256 (bf16, Qwen2.5-Math-1.5B and 7B shapes; vLLM's beside them when it is installed), the
# train step's MFU, the tree kernels against mctx (when installed), and the planner's estimate
# against the measured peak memory for sft, ppm, sample and score. Within 8 minutes on one GPU.
#   bash benchmarks/device_check.sh          # on the accelerator
#   bash benchmarks/device_check.sh --tiny   # tiny shapes on CPU: a smoke test of the check itself
# DEVICE_CHECK_INSTALL=1 first tries `pip install vllm mctx` (2 minutes at most; skipped if it fails).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${DEVICE_CHECK_INSTALL:-0}" == 1 ]]; then
  timeout 120 python3 -m pip install -q vllm mctx >&2 || echo "device_check: vllm / mctx not installed" >&2
fi
# JAX may take most of the device (as launch/gpu.sh); each step runs in its own process.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
exec timeout 480 python3 benchmarks/device_check.py "$@"
