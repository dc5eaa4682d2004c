"""The device check: what a lent GPU (or TPU) says about the stack, in one JSON line.

Runs, each in its own process (so each phase's peak memory is its own), on one device:
  sampler   our tokens/s at batch 64 and 256, greedy, random bf16 weights shaped like
            Qwen2.5-Math-1.5B and 7B (benchmarks/sampler.py; vLLM beside it when installed)
  train     the SFT train step's tokens/s and MFU against the bf16 matmul peak, and the PPM's
            pairwise step (benchmarks/train_step.py)
  tree      select + expand + backup against mctx when installed (benchmarks/tree_kernel.py)
  score     the PPM scorer over a full batch of full-length texts (here, `--phase score`)
and sets the planner's estimate (rstar_jax.evolve.plan) beside the measured peak for the sft,
ppm, sample and score phases. Steps run in order of importance within `--budget_s`; a step past
it is reported as skipped. `--tiny`: the same steps with tiny shapes, for a CPU smoke test.

    bash benchmarks/device_check.sh [--tiny]

On a device image without rstar_jax installed, put the checkout (and any packages carried in) on
PYTHONPATH; the steps' processes inherit it: `PYTHONPATH=$PWD bash benchmarks/device_check.sh`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


@dataclasses.dataclass(frozen=True)
class Shapes:
    """What the check runs: model shapes by name (benchmarks/train_step.py CONFIGS) and sizes."""

    models: tuple[str, ...]
    batches: tuple[int, ...]
    prompt: int
    new: int
    layers: int  # > 0: fewer layers than the shape has
    dtype: str
    train_model: str
    train_batch: int
    train_length: int
    score_batch: int
    score_length: int
    tree: tuple[str, ...]


FULL = Shapes(models=("1.5b", "7b"), batches=(64, 256), prompt=128, new=128, layers=0, dtype="bfloat16",
              train_model="1.5b", train_batch=4, train_length=2048, score_batch=64, score_length=2048,
              tree=("--repeats", "2"))  # tree_kernel.py's whole default grid
TINY = Shapes(models=("tiny",), batches=(2, 4), prompt=8, new=8, layers=0, dtype="float32",
              train_model="tiny", train_batch=2, train_length=32, score_batch=4, score_length=32,
              tree=("--batch", "2", "--nodes", "64", "--children", "4", "--repeats", "1"))


def run_json(args: list[str], timeout_s: float, env: dict[str, str] | None = None) -> dict:
    """The last JSON line a benchmark script prints; {"error": ...} when it fails."""
    try:
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=max(timeout_s, 1), env={**os.environ, "PYTHONPATH": path, **(env or {})})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        return {"error": f"exit {out.returncode}: {out.stderr[-800:]}"}
    return json.loads(lines[-1])


def model_config(name: str, shapes: Shapes):
    from train_step import CONFIGS  # benchmarks/ is on sys.path when this file runs

    config = CONFIGS[name]
    if shapes.layers:
        config = dataclasses.replace(config, num_hidden_layers=shapes.layers)
    return config


def score_phase_main(name: str, shapes: Shapes) -> None:
    """`--phase score`: policy and PPM resident (as in a search), one scorer batch of full-length
    texts; prints texts/s and the device's peak memory."""
    import jax
    import numpy as np
    from flax import nnx

    from rstar_jax.config import ScorerConfig
    from rstar_jax.inference.scorer import PPMScorer
    from rstar_jax.models.decoder import Decoder
    from rstar_jax.models.ppm import ProcessRewardModel
    from sampler import word_tokenizer

    config = dataclasses.replace(model_config(name, shapes), dtype=shapes.dtype, param_dtype=shapes.dtype)
    policy = Decoder(config, rngs=nnx.Rngs(0))  # resident beside the PPM, as in ModelStack
    ppm = ProcessRewardModel(config, rngs=nnx.Rngs(1))
    tokenizer = word_tokenizer(config.vocab_size)
    scorer = PPMScorer(ppm, tokenizer, ScorerConfig(max_batch=shapes.score_batch, max_len=shapes.score_length,
                                                    min_bucket=shapes.score_length))
    ids = np.random.default_rng(0).integers(1, config.vocab_size, (shapes.score_batch, shapes.score_length))
    texts = [" ".join(f"t{i}" for i in row) for row in ids]
    scorer.score(texts)  # compile
    start = time.perf_counter()
    scorer.score(texts)
    seconds = time.perf_counter() - start
    stats = jax.devices()[0].memory_stats() or {}
    print(json.dumps({"texts_per_s": round(len(texts) / seconds, 2), "peak_bytes": stats.get("peak_bytes_in_use"),
                      "policy_params": sum(x.size for x in jax.tree.leaves(nnx.state(policy)))}))


def planned(shapes: Shapes, backend: str) -> dict[str, int]:
    """The planner's bytes per device for each measured phase, on a one-device mesh."""
    from rstar_jax.config import MeshConfig, SamplerConfig, ScorerConfig, TrainConfig
    from rstar_jax.evolve import plan

    mesh = plan.abstract_mesh(MeshConfig(), 1)
    out = {}
    train = TrainConfig(batch_size=shapes.train_batch, max_length=shapes.train_length,
                        compute_dtype="bfloat16" if backend != "cpu" else "float32")
    config = model_config(shapes.train_model, shapes)
    for name, views, logits in (("sft", 1, True), ("ppm", 2, False)):
        out[name] = plan.train_phase(name, config, train, mesh, 1 << 60, views_per_row=views,
                                     with_logits=logits).total
    max_len = 1 << (shapes.prompt + shapes.new - 1).bit_length()
    for name in shapes.models:
        decoded = dataclasses.replace(model_config(name, shapes), dtype=shapes.dtype, param_dtype=shapes.dtype)
        sampler = SamplerConfig(max_batch=max(shapes.batches), max_len=max_len)
        out[f"sample/{name}"] = plan.sample_phase(decoded, None, sampler, 1, mesh, 1 << 60).total
    decoded = dataclasses.replace(config, dtype=shapes.dtype, param_dtype=shapes.dtype)
    scorer = ScorerConfig(max_batch=shapes.score_batch, max_len=shapes.score_length)
    out["score"] = plan.score_phase(decoded, decoded, scorer, mesh, 1 << 60).total
    return out


def compare(planned_bytes: int, measured: int | None) -> dict:
    return {"planned_bytes": planned_bytes, "measured_peak_bytes": measured,
            "planned_over_measured": round(planned_bytes / measured, 3) if measured else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: a CPU smoke test of the check")
    parser.add_argument("--budget_s", type=float, default=450.0, help="steps past this are skipped")
    parser.add_argument("--phase", choices=("score",), help=argparse.SUPPRESS)  # a step's own process
    parser.add_argument("--model", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shapes = TINY if args.tiny else FULL
    if args.phase == "score":
        return score_phase_main(args.model, shapes)

    # This process never opens the device: it would hold memory (90% of it, preallocated) that
    # the steps' own processes need.
    start = time.perf_counter()
    found = run_json(["-c", "import jax, json; print(json.dumps({'backend': jax.default_backend(), "
                            "'device': str(jax.devices()[0].device_kind)}))"], 120,
                     env={"XLA_PYTHON_CLIENT_PREALLOCATE": "false"})
    if "error" in found:
        raise SystemExit(f"device_check: no JAX device: {found['error']}")
    backend, device = found["backend"], found["device"]
    left = lambda: args.budget_s - (time.perf_counter() - start)
    steps: dict[str, dict] = {}

    def step(name: str, argv: list[str], env: dict[str, str] | None = None) -> dict:
        steps[name] = run_json(argv, left(), env) if left() > 5 else {"error": "skipped: out of time"}
        # Each step's result as it lands: a check cut short by its lease still reports what ran.
        print(f"device_check: {name} done at {time.perf_counter() - start:.0f} s: {json.dumps(steps[name])}",
              file=sys.stderr, flush=True)
        return steps[name]

    common = ["--prompt", str(shapes.prompt), "--new", str(shapes.new), "--modes", "greedy", "--repeats", "1",
              "--batches", "", "--dtype", shapes.dtype, "--layers", str(shapes.layers)]
    vllm = not args.tiny and _importable("vllm")
    for name in shapes.models:  # the sampler first: what the search spends its time in
        step(f"sample/{name}", [str(BENCH / "sampler.py"), *common, "--big", name,
                                "--big_batches", ",".join(map(str, shapes.batches)),
                                "--anchor", "vllm" if vllm else "none"],
             env={"XLA_PYTHON_CLIENT_PREALLOCATE": "false"} if vllm else None)
    train = ["--configs", shapes.train_model, "--batch", str(shapes.train_batch), "--length",
             str(shapes.train_length), "--steps", "2", "--anchor", "none", "--layers", str(shapes.layers),
             "--compute_dtype", "bfloat16" if backend != "cpu" else "float32",
             "--peak_dtype", "bfloat16" if backend != "cpu" else "float32",
             "--peak_size", "256" if args.tiny else "8192"]
    step("sft", [str(BENCH / "train_step.py"), *train])
    step("tree", [str(BENCH / "tree_kernel.py"), *shapes.tree])
    step("ppm", [str(BENCH / "train_step.py"), *train, "--task", "ppm"])
    step("score", [str(Path(__file__)), "--phase", "score", "--model", shapes.train_model]
         + (["--tiny"] if args.tiny else []))

    plan = planned(shapes, backend)
    sampler = {}
    memory = {}
    for name in shapes.models:
        result = steps[f"sample/{name}"]
        sampler[name] = ({str(r["batch"]): {k: v for k, v in r.items() if k.endswith("tokens_per_s") or k == "vllm"}
                          for r in result.get("results", [])} or result)
        memory[f"sample/{name}"] = compare(plan[f"sample/{name}"], (result.get("peak_bytes") or {}).get(name))
    train_result = steps["sft"].get(shapes.train_model, steps["sft"])
    ppm_result = steps["ppm"].get(shapes.train_model, steps["ppm"])
    memory["sft"] = compare(plan["sft"], train_result.get("peak_bytes"))
    memory["ppm"] = compare(plan["ppm"], ppm_result.get("peak_bytes"))
    memory["score"] = compare(plan["score"], steps["score"].get("peak_bytes"))
    print(json.dumps({
        "benchmark": "device_check", "tiny": args.tiny, "backend": backend, "device": device,
        "machine": steps["sft"].get("machine"),  # the host, as the steps' processes name it
        "shapes": dataclasses.asdict(shapes),
        "sampler_tokens_per_s": sampler,
        "train": {"model": shapes.train_model, "sft_tokens_per_s": train_result.get("ours_tokens_per_s"),
                  "sft_mfu": train_result.get("ours_mfu"), "ppm_tokens_per_s": ppm_result.get("ours_tokens_per_s"),
                  "matmul_peak_tflops": steps["sft"].get("matmul_peak_tflops"),
                  "peak_dtype": steps["sft"].get("peak_dtype")},
        "tree_kernel": {"anchor": steps["tree"].get("anchor"), "results": steps["tree"].get("results")},
        "score_texts_per_s": steps["score"].get("texts_per_s"),
        "memory": memory,
        "errors": {k: v["error"] for k, v in steps.items() if "error" in v},
        "seconds": round(time.perf_counter() - start, 1),
    }))


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    main()
