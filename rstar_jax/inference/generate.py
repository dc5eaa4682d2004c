"""`rstar-jax generate`: sample completions of prompts with a policy from an HF directory.

Prompts come from `--prompt` (one string) or `--prompt_file` (`.jsonl`: one JSON object with a
"prompt" field, or a JSON string, per line; any other file: one prompt per line). Writes
`<workdir>/<output>`: one JSON line per prompt with its samples (text, token ids, finish reason,
summed log-probability, stop string), atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

from rstar_jax.config import MeshConfig, SamplerConfig


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
             sampler: SamplerConfig = SamplerConfig(), mesh: MeshConfig | None = None) -> str:
    """Samples `num_samples` completions per prompt; returns the path of the JSONL written."""
    if (prompt is None) == (prompt_file is None):
        raise ValueError("generate: give exactly one of --prompt and --prompt_file")
    prompts = [prompt] if prompt is not None else read_prompts(prompt_file)
    # The model stack is imported here so that `--help` and prompt errors need no JAX start-up.
    from rstar_jax.inference.sampler import Sampler
    from rstar_jax.models.hf import load_hf
    from rstar_jax.parallel.mesh import make_mesh

    device_mesh = make_mesh(mesh) if mesh is not None else None
    model, tokenizer = load_hf(model_path, mesh=device_mesh)
    policy = Sampler(model, tokenizer, sampler, mesh=device_mesh)
    samples = policy.sample(prompts, num_samples, max_new_tokens=max_new_tokens,
                            stop=[stop] if isinstance(stop, str) else list(stop),
                            temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                            progress=True)
    path = Path(workdir) / output
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        for i, (text, completions) in enumerate(zip(prompts, samples)):
            record = {"index": i, "prompt": text,
                      "samples": [dataclasses.asdict(c) for c in completions]}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return str(path)
