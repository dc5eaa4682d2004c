"""Generated tokens/s: our sampler vs HF `transformers` `generate` (PyTorch, KV cache).

Both run the same random Qwen2 model (same weights, fp32) in one process:
prompts of `--prompt` random tokens, exactly `--new` new tokens per row (no end-of-sequence
token), greedy and sampled (temperature 1, no top-k/top-p), at several batch sizes; then a
Qwen2.5-0.5B-shaped model at batch 8. After one warm-up run of each (ours compiles there), the two
run in alternation `--repeats` times: the ratio is the median of the paired ratios, so a slow spell
of a shared machine weighs on both sides alike; tokens/s are the best runs. Prints one JSON line.
PyTorch splits each op over its threads, while XLA runs a CPU device's program on about one core:
by default ours gets one CPU device per PyTorch thread (rounded down to a power of two), and the
tiny model's decoding slots are split over them (the 0.5B shape runs on one device, see `main`).

    python benchmarks/sampler.py [--batches 1,16,64] [--prompt 128] [--new 128] [--big_batch 8]
                                 [--cpu_devices N]

On an accelerator (benchmarks/device_check.sh): `--big 1.5b,7b --big_batches 64,256 --dtype
bfloat16 --anchor none` (or `vllm`, if it is installed) times our sampler alone on random bf16
weights of Qwen2.5-Math-1.5B's and 7B's shapes (`--layers N` cuts the layer count), with the
device's peak memory per model (run one model per process for a clean peak).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
import transformers
from flax import nnx
from tokenizers import Tokenizer, models, pre_tokenizers

from rstar_jax.config import MeshConfig, ModelConfig, SamplerConfig, SamplingConfig
from rstar_jax.inference import decode
from rstar_jax.inference.sampler import Sampler
from rstar_jax.models.decoder import Decoder
from rstar_jax.models.hf import config_to_hf, load_hf, save_hf
from rstar_jax.parallel.hosts import machine
from rstar_jax.parallel.mesh import make_mesh

try:  # the anchor; `--anchor none` runs without it
    import torch
except ImportError:
    torch = None

CONFIGS = {
    # The tiny CPU policy of the default self-evolution run (as benchmarks/train_step.py).
    "tiny": ModelConfig(vocab_size=512, hidden_size=128, intermediate_size=384, num_hidden_layers=3,
                        num_attention_heads=4, num_key_value_heads=2, attention_bias=True,
                        tie_word_embeddings=True),
    # Qwen2.5-0.5B's shape.
    "0.5b": ModelConfig(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                        num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                        attention_bias=True, tie_word_embeddings=True),
    # Qwen2.5-Math-1.5B's and 7B's shapes.
    "1.5b": ModelConfig(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                        num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                        attention_bias=True, tie_word_embeddings=True),
    "7b": ModelConfig(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                      num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                      attention_bias=True),
}


def word_tokenizer(vocab_size: int) -> transformers.PreTrainedTokenizerFast:
    """Token i is the word `t{i}`, so a prompt string names its token ids exactly."""
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok)


def build(config: ModelConfig, workdir: str):
    """(HF model, our Decoder, tokenizer) with the same random weights."""
    torch.manual_seed(0)
    hf_model = transformers.AutoModelForCausalLM.from_config(config_to_hf(config)).eval()
    tokenizer = word_tokenizer(config.vocab_size)
    hf_model.save_pretrained(workdir)
    tokenizer.save_pretrained(workdir)
    model, _ = load_hf(workdir)
    return hf_model, model, tokenizer


def paired_times(runs: Sequence[Callable[[], None]], repeats: int) -> list[list[float]]:
    """Seconds of each run in `runs`, `repeats` times, alternating, after one warm-up of each."""
    for run in runs:
        run()  # warm-up (and compile)
    times = [[] for _ in runs]
    for _ in range(repeats):
        for run, out in zip(runs, times):
            start = time.perf_counter()
            run()
            out.append(time.perf_counter() - start)
    return times


def random_model(config: ModelConfig, dtype: str):
    """Our Decoder with random weights in `dtype` (no HF model), and a word tokenizer."""
    config = dataclasses.replace(config, dtype=dtype, param_dtype=dtype)
    return Decoder(config, rngs=nnx.Rngs(0)), word_tokenizer(config.vocab_size)


def vllm_tokens_per_s(model: Decoder, tokenizer, batch: int, prompt: int, new: int, repeats: int) -> dict:
    """vLLM's greedy tokens/s on the same weights (saved as an HF directory), if vLLM is installed."""
    try:
        import vllm
    except ImportError:
        return {"vllm": "not installed"}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            save_hf(model, tokenizer, workdir)
            llm = vllm.LLM(model=workdir, dtype=model.config.dtype, skip_tokenizer_init=True,
                           max_model_len=prompt + new, gpu_memory_utilization=0.5, enforce_eager=False)
            ids = np.random.default_rng(batch).integers(1, model.config.vocab_size, (batch, prompt)).tolist()
            params = vllm.SamplingParams(max_tokens=new, min_tokens=new, ignore_eos=True, temperature=0.0)
            run = lambda: llm.generate([{"prompt_token_ids": p} for p in ids], params, use_tqdm=False)
            (best,) = [min(t) for t in paired_times([run], repeats)]
            del llm
        return {"vllm_tokens_per_s": round(batch * new / best, 1)}
    except Exception as e:  # an optional anchor: report why, keep ours
        return {"vllm": f"failed: {type(e).__name__}: {str(e)[:200]}"}


def measure(hf_model, sampler: Sampler, vocab: int, batch: int, prompt: int, new: int,
            greedy: bool, repeats: int) -> dict:
    ids = np.random.default_rng(batch).integers(1, vocab, (batch, prompt))
    texts = [" ".join(f"t{i}" for i in row) for row in ids]
    temperature = 0.0 if greedy else 1.0

    def ours():
        # Distinct prompts, one sample each: the same work as HF's batch.
        out = sampler.sample(texts, 1, SamplingConfig(temperature=temperature, max_new_tokens=new), seed=1)
        assert all(len(c[0].token_ids) == new for c in out)

    sampling = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=1.0,
                                                         top_k=0, top_p=1.0)

    def hf():
        with torch.no_grad():
            out = hf_model.generate(torch.tensor(ids), attention_mask=torch.ones_like(
                torch.tensor(ids)), max_new_tokens=new, min_new_tokens=new, pad_token_id=0,
                **sampling)
        assert out.shape == (batch, prompt + new)

    tokens = batch * new
    if hf_model is None:  # ours alone
        (ours_s,) = paired_times([ours], repeats)
        return {"batch": batch, "mode": "greedy" if greedy else "sampled",
                "ours_tokens_per_s": round(tokens / min(ours_s), 1)}
    ours_s, hf_s = paired_times([ours, hf], repeats)
    return {"batch": batch, "mode": "greedy" if greedy else "sampled",
            "ours_tokens_per_s": round(tokens / min(ours_s), 1),
            "hf_tokens_per_s": round(tokens / min(hf_s), 1),
            "ratio": round(float(np.median(np.array(hf_s) / np.array(ours_s))), 2),
            "paired_ratios": [round(h / o, 2) for o, h in zip(ours_s, hf_s)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,16,64", help="tiny-model batch sizes; '' skips the tiny model")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--big_batch", type=int, default=8, help="0 skips the 0.5B shape")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big", default="0.5b", help="model shapes run at --big_batches, one device")
    parser.add_argument("--big_batches", default="", help="default: --big_batch")
    parser.add_argument("--dtype", default="float32", help="the big models' weights and compute")
    parser.add_argument("--layers", type=int, default=0, help="> 0: the big models' layer count")
    parser.add_argument("--anchor", choices=("hf", "none", "vllm"), default="hf",
                        help="hf: transformers beside ours (fp32); vllm: vLLM greedy, if installed")
    parser.add_argument("--modes", default="greedy,sampled")
    threads = torch.get_num_threads() if torch else 1
    parser.add_argument("--cpu_devices", type=int, default=1 << (threads.bit_length() - 1),
                        help="JAX CPU devices; > 1 splits the tiny model's decoding slots over "
                             "them, data parallel (default: one per PyTorch thread, the cores it "
                             "uses, rounded down to a power of two so that the slots split evenly)")
    args = parser.parse_args()
    jax.config.update("jax_num_cpu_devices", args.cpu_devices)  # before the backend starts
    data_parallel = make_mesh(MeshConfig()) if args.cpu_devices > 1 else None
    results = []
    plans = []
    if args.batches:
        plans.append(("tiny", [int(b) for b in args.batches.split(",")], data_parallel))
    big_batches = [int(b) for b in (args.big_batches or str(args.big_batch)).split(",") if int(b)]
    if big_batches:
        # One device: a batch-8 step of the 0.5B shape mostly reads its 2 GB of weights, and every
        # data-parallel replica reads them again (--new 32: 14 tok/s on one device, 9.5 on two,
        # 12.6 tensor parallel over two).
        plans += [(name, big_batches, None) for name in args.big.split(",") if name]
    modes = [m == "greedy" for m in args.modes.split(",")]
    peaks = {}
    for name, batches, mesh in plans:
        config = CONFIGS[name]
        if args.layers and name != "tiny":
            config = dataclasses.replace(config, num_hidden_layers=args.layers)
        if args.anchor == "hf" and (name == "tiny" or args.dtype == "float32"):
            with tempfile.TemporaryDirectory() as workdir:
                hf_model, model, tokenizer = build(config, workdir)
        else:
            hf_model, (model, tokenizer) = None, random_model(config, args.dtype if name != "tiny" else "float32")
        max_len = 1 << (args.prompt + args.new - 1).bit_length()
        sampler = Sampler(model, tokenizer, SamplerConfig(max_batch=max(batches), max_len=max_len), mesh=mesh)
        for batch in batches:
            for greedy in modes:
                row = measure(hf_model, sampler, config.vocab_size, batch, args.prompt,
                              args.new, greedy, args.repeats)
                if args.anchor == "vllm" and greedy and name != "tiny":
                    row.update(vllm_tokens_per_s(model, tokenizer, batch, args.prompt, args.new, args.repeats))
                results.append({"model": name, "layers": config.num_hidden_layers,
                                "devices": mesh.size if mesh else 1, **row})
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # progress
        peaks[name] = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")  # None on CPU
        del hf_model, model, sampler
        gc.collect()
    print(json.dumps({
        "benchmark": "sampler", "backend": jax.default_backend(), "machine": machine(),
        "jax_devices": jax.device_count(),
        "torch_threads": torch.get_num_threads() if torch else None, "prompt": args.prompt, "new": args.new,
        "dtype": args.dtype, "peak_bytes": peaks,
        "compiled": {"decode_chunk": decode.decode_chunk._cache_size(),
                     "refill": decode.refill._cache_size()},
        "results": results}))


if __name__ == "__main__":
    main()
