"""`rstar-jax generate`: sample completions of prompts with a policy from an HF directory.

Prompts come from `--prompt` (one string) or `--prompt_file` (`.jsonl`: one JSON object with a
"prompt" field, or a JSON string, per line; any other file: one prompt per line). Writes
`<workdir>/<output>`: one JSON line per prompt with its samples (text, token ids, finish reason,
summed log-probability, stop string), atomically.

The policy is built by the one model stack (inference/stack.py) from `parallel` (mesh, dtypes,
rules). On several processes (`jax.distributed`, started here) each host samples its slice of the
prompts (every count-th one) on its own devices and writes it as `<output>.p<i>-of-<n>`; process 0
then merges the slices into `<output>` in prompt order and removes them (the workdir must be shared
by the hosts). Sample j of prompt i depends on (seed, i, j) only, so the file does not depend on
the number of hosts or devices.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

from rstar_jax.config import ParallelConfig, SamplerConfig, SamplingConfig


def read_prompts(path: str) -> list[str]:
    """Prompts of a `.jsonl` file ("prompt" field or bare strings) or a text file (one per line)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path}: prompt file not found")
    lines = [line for line in file.read_text().splitlines() if line.strip()]
    if file.suffix != ".jsonl":
        return lines
    prompts = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: not JSON ({e.msg})") from None
        prompt = record.get("prompt") if isinstance(record, dict) else record
        if not isinstance(prompt, str):
            raise ValueError(f"{path}:{number}: expected a string or an object with a string "
                             "'prompt' field")
        prompts.append(prompt)
    return prompts


def generate(workdir: str, model_path: str, prompt: str | None = None,
             prompt_file: str | None = None, output: str = "generations.jsonl",
             num_samples: int = 1, max_new_tokens: int = 256, stop: Sequence[str] | str = (),
             temperature: float = 1.0, top_p: float = 1.0, top_k: int = -1, seed: int = 0,
             sampler: SamplerConfig = SamplerConfig(),
             parallel: ParallelConfig = ParallelConfig()) -> str:
    """Samples `num_samples` completions per prompt; returns the path of the JSONL written.

    The sampling flags (`--max_new_tokens`, `--stop`, `--temperature`, `--top_p`, `--top_k`) make
    one `SamplingConfig`, which the sampler takes whole.
    """
    sampling = SamplingConfig(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
                              stop=stop)
    if (prompt is None) == (prompt_file is None):
        raise ValueError("generate: give exactly one of --prompt and --prompt_file")
    prompts = [prompt] if prompt is not None else read_prompts(prompt_file)
    # The model stack is imported here so that `--help` and prompt errors need no JAX start-up.
    import jax

    from rstar_jax.inference.stack import ModelStack
    from rstar_jax.parallel.hosts import barrier, initialize_distributed, shard

    initialize_distributed()
    index, count = jax.process_index(), jax.process_count()
    mine = shard(range(len(prompts)))
    with ModelStack(model_path, sampler=sampler, exec_workers=0, exec_timeout_s=1.0,
                    parallel=parallel) as stack:
        samples = stack.policy.sample(
            [prompts[i] for i in mine], num_samples, sampling, seed=seed, progress=True, streams=mine)
    path = Path(workdir) / output
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [json.dumps({"index": i, "prompt": prompts[i],
                           "samples": [dataclasses.asdict(c) for c in completions]}, ensure_ascii=False)
               for i, completions in zip(mine, samples)]
    if count == 1:
        _write_lines(path, records)
        return str(path)
    part = lambda p: path.with_name(f"{path.name}.p{p:03d}-of-{count:03d}")
    _write_lines(part(index), records)
    barrier(f"generate: {path} slices written")
    if index == 0:
        slices = [part(p).read_text().splitlines() for p in range(count)]
        merged = sorted((line for lines in slices for line in lines), key=lambda l: json.loads(l)["index"])
        _write_lines(path, merged)
        for p in range(count):
            part(p).unlink()
    barrier(f"generate: {path} merged")
    return str(path)


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    """`lines` as a file, atomically (temporary file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, path)
