"""Tokens/s of one SFT train step (forward + backward + clip + AdamW): ours vs PyTorch HF.

Both run the same Qwen2 model (same config, batch and length, fp32) in one process, one after
the other, on the same backend (CPU, or the GPU when jax has one); ours is
`rstar_jax.training.loop.train_step` with the SFT loss. Model FLOPs utilisation is against the
measured matmul peak of the backend (a large jitted matmul, in `--peak_dtype`).
Prints one JSON line.

    python benchmarks/train_step.py [--configs tiny,0.5b] [--batch 4] [--length 512] [--steps 5]

`--task ppm` times the PPM's pairwise step instead, on `--batch` pairs of a prompt of half of
`--length` and two steps of a quarter: ours packs each pair in one row (`data.collate_pairs`), the
anchor is rStar's layout, two rows per pair (prompt + pos, prompt + neg), through the same model
and train step.

benchmarks/device_check.sh runs it as the train loop runs on an accelerator: `--compute_dtype
bfloat16` (fp32 master weights), `--peak_dtype bfloat16`, `--anchor none`; `peak_bytes` is the
device's peak memory (run one config per process).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
try:  # the anchor; `--anchor none` runs without it
    import torch
    import transformers
except ImportError:
    torch = transformers = None
from flax import nnx

from rstar_jax.config import MeshConfig, ModelConfig, TrainConfig
from rstar_jax.models.decoder import Decoder
from rstar_jax.models.hf import config_to_hf
from rstar_jax.parallel import sharding
from rstar_jax.parallel.hosts import machine
from rstar_jax.parallel.mesh import make_mesh
from rstar_jax.parallel.rules import TRAIN_RULES
from rstar_jax.training import data, losses
from rstar_jax.training.loop import init_state, jit_train_step
from rstar_jax.training.optim import optimizer
from rstar_jax.models.ppm import ProcessRewardModel
from rstar_jax.training.ppm import ppm_loss_fn
from rstar_jax.training.sft import sft_loss_fn

CONFIGS = {
    # The tiny CPU policy of the default self-evolution run.
    "tiny": ModelConfig(vocab_size=512, hidden_size=128, intermediate_size=384, num_hidden_layers=3,
                        num_attention_heads=4, num_key_value_heads=2, attention_bias=True, tie_word_embeddings=True),
    # Qwen2.5-0.5B's shape.
    "0.5b": ModelConfig(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                        num_attention_heads=14, num_key_value_heads=2, attention_bias=True, tie_word_embeddings=True),
    # Qwen2.5-Math-1.5B's and 7B's shapes.
    "1.5b": ModelConfig(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                        num_attention_heads=12, num_key_value_heads=2, attention_bias=True, tie_word_embeddings=True),
    "7b": ModelConfig(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                      num_attention_heads=28, num_key_value_heads=4, attention_bias=True),
}
TRAIN = TrainConfig(learning_rate=1e-5, weight_decay=0.1, max_grad_norm=1.0)


def matmul_peak_flops(n: int = 4096, reps: int = 10, dtype: str = "float32") -> float:
    """FLOP/s of a jitted n x n matmul in `dtype`, the best of a few timings."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def model_flops_per_token(config: ModelConfig, length: int) -> float:
    """6 x matmul parameters + attention scores (PaLM appendix B), forward and backward."""
    d, f, layers, dh = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.resolved_head_dim
    h, hkv = config.num_attention_heads, config.num_key_value_heads
    per_layer = d * h * dh * 2 + d * hkv * dh * 2 + 3 * d * f
    matmul_params = layers * per_layer + d * config.vocab_size  # + LM head
    return 6 * matmul_params + 12 * layers * h * dh * length


def sft_batch(config: ModelConfig, batch: int, length: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    examples = [data.SFTExample(rng.integers(0, config.vocab_size, size=length).astype(np.int32), prompt_len=1)
                for _ in range(batch)]
    return data.collate_sft(examples, length)


def time_steps(step, steps: int) -> float:
    """Seconds per step: one warm-up (compile) call, then the mean of `steps` calls."""
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def ppm_pairs(config: ModelConfig, batch: int, length: int) -> list[data.PairExample]:
    """Pairs of a `length`-token packed row: a prompt of half the row and two steps of a quarter."""
    rng = np.random.default_rng(0)
    ids = lambda n: rng.integers(0, config.vocab_size, size=n).astype(np.int32)
    return [data.PairExample(ids(length // 2), ids(length // 4), ids(length - length // 2 - length // 4), 1.0)
            for _ in range(batch)]


def two_row_batch(pairs: list[data.PairExample]) -> dict[str, np.ndarray]:
    """The anchor's layout (rStar's trainer): each pair as two rows, prompt + pos and prompt + neg."""
    views = [np.concatenate([p.prompt, step]) for p in pairs for step in (p.pos, p.neg)]
    length = max(len(v) for v in views)
    tokens = np.stack([np.pad(v, (0, length - len(v))) for v in views]).reshape(len(pairs), 2, length)
    mask = (np.arange(length) < np.array([len(v) for v in views])[:, None]).reshape(len(pairs), 2, length)
    return {"tokens": tokens.astype(np.int32), "mask": mask, "weights": np.ones(len(pairs), np.float32)}


def two_row_loss_fn(model: ProcessRewardModel, batch, train: bool):
    """The pairwise loss over `two_row_batch`: pos and neg rows run as 2B rows of one forward."""
    b, _, t = batch["tokens"].shape
    tokens, mask = batch["tokens"].reshape(2 * b, t), batch["mask"].reshape(2 * b, t)
    raw = model(tokens, jnp.broadcast_to(jnp.arange(t), tokens.shape), mask, deterministic=not train).reshape(b, 2)
    loss, count, correct = losses.ppm_loss(raw[:, 0], raw[:, 1], batch["weights"])
    return loss, count, {"accuracy": correct}


def ours(config: ModelConfig, host: dict[str, np.ndarray], steps: int, loss_fn) -> float:
    """The train loop's own jitted step, data parallel over the CPU devices (one on an accelerator)."""
    tx = optimizer(TRAIN)
    devices = jax.devices() if jax.default_backend() == "cpu" else jax.devices()[:1]
    mesh = make_mesh(MeshConfig(), devices)
    model = Decoder(config, rngs=nnx.Rngs(0))
    if loss_fn is not sft_loss_fn:
        model = ProcessRewardModel(config, rngs=nnx.Rngs(1), backbone=model)
    graphdef, state, shardings = init_state(model, tx, mesh, TRAIN_RULES)
    step_fn = jit_train_step(graphdef, shardings, loss_fn, tx)
    batch = sharding.global_batch({k: v[None] for k, v in host.items()}, mesh, TRAIN_RULES, 1)  # one micro-batch

    def step():
        nonlocal state
        state, metrics = step_fn(state, batch, np.float32(TRAIN.learning_rate))
        jax.block_until_ready(metrics)

    return time_steps(step, steps)


def pytorch(config: ModelConfig, host: dict[str, np.ndarray], steps: int, device: str) -> float:
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(config_to_hf(config)).float().train().to(device)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": TRAIN.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=TRAIN.learning_rate)
    tokens = torch.from_numpy(host["tokens"]).long().to(device)
    labels = torch.from_numpy(np.where(host["weights"] > 0, host["targets"], -100)).long().to(device)
    mask = torch.from_numpy(host["mask"]).long().to(device)

    def step():
        logits = model(input_ids=tokens, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), TRAIN.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    return time_steps(step, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tiny,0.5b")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--layers", type=int, default=0, help="> 0: override the layer count (memory)")
    parser.add_argument("--task", choices=("sft", "ppm"), default="sft", help="ppm: `--batch` pairs, each packed in a `--length` row")
    parser.add_argument("--compute_dtype", default="float32", help="activations (parameters stay float32)")
    parser.add_argument("--remat", action="store_true", help="rematerialise decoder layers in the backward pass")
    parser.add_argument("--peak_dtype", default="float32", help="dtype of the matmul peak MFU is measured against")
    parser.add_argument("--peak_size", type=int, default=4096, help="n of the n x n matmul peak")
    parser.add_argument("--anchor", choices=("torch", "none"), default="torch",
                        help="sft: PyTorch HF; ppm: the two-row layout (any value but none)")
    parser.add_argument("--cpu_devices", type=int, default=0,
                        help="JAX CPU devices the step is split over, data parallel (default: one per "
                             "PyTorch thread, as a power of two that divides --batch; see benchmarks/sampler.py)")
    args = parser.parse_args()
    devices = args.cpu_devices
    if not devices:
        devices = 1 << ((torch.get_num_threads() if torch else 1).bit_length() - 1)
        while args.batch % devices:
            devices //= 2
    jax.config.update("jax_num_cpu_devices", devices)  # before the backend starts

    peak = matmul_peak_flops(args.peak_size, dtype=args.peak_dtype)
    torch_device = "cuda" if jax.default_backend() == "gpu" else "cpu"  # the anchor runs where ours does
    if args.anchor == "torch":
        torch.backends.cuda.matmul.allow_tf32 = True  # as XLA's default fp32 matmul precision on GPU
    result = {"backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind), "machine": machine(),
              "jax_devices": len(jax.devices()) if jax.default_backend() == "cpu" else 1,
              "torch_device": torch_device, "torch_threads": torch.get_num_threads() if torch else None,
              "batch": args.batch, "length": args.length, "task": args.task, "compute_dtype": args.compute_dtype,
              "peak_dtype": args.peak_dtype, "matmul_peak_tflops": peak / 1e12}
    for name in args.configs.split(","):
        config = CONFIGS[name]
        if args.layers:
            config = dataclasses.replace(config, num_hidden_layers=args.layers)
        config = dataclasses.replace(config, dtype=args.compute_dtype, remat=args.remat)
        if args.task == "ppm":
            pairs = ppm_pairs(config, args.batch, args.length)
            host, loss_fn = data.collate_pairs(pairs, args.length), ppm_loss_fn
        else:
            host, loss_fn = sft_batch(config, args.batch, args.length), sft_loss_fn
        tokens = args.batch * args.length
        ours_s = ours(config, host, args.steps, loss_fn)
        gc.collect()
        stats = jax.devices()[0].memory_stats() or {}  # None on CPU
        flops = model_flops_per_token(config, args.length) * tokens
        result[name] = {
            "layers": config.num_hidden_layers,
            "ours_tokens_per_s": tokens / ours_s,
            "ours_mfu": flops / ours_s / peak,
            "peak_bytes": stats.get("peak_bytes_in_use"),
        }
        if args.anchor != "none" and args.task == "ppm":
            two_row_s = ours(config, two_row_batch(pairs), args.steps, two_row_loss_fn)
            gc.collect()
            result[name].update(ours_pairs_per_s=args.batch / ours_s, two_row_pairs_per_s=args.batch / two_row_s,
                                ratio=two_row_s / ours_s)
        if args.anchor == "torch" and args.task == "sft":
            torch_s = pytorch(dataclasses.replace(config, dtype="float32"), host, args.steps, torch_device)
            gc.collect()
            result[name].update(pytorch_tokens_per_s=tokens / torch_s, ratio=torch_s / ours_s,
                                pytorch_mfu=flops / torch_s / peak)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
