"""`rstar-jax generate`: prompt files in, one JSON line per prompt out."""

import json

import pytest

from rstar_jax import cli
from rstar_jax.inference.generate import read_prompts

from test_sampler import CONFIG, PROMPTS


def test_generate_command_writes_greedy_samples(tiny_dir, tiny, tmp_path):
    texts = PROMPTS + [p[::-1] for p in PROMPTS]  # the greedy test's prompts: same programs
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in texts[:-1])
                       + json.dumps(texts[-1]) + "\n")
    workdir = tmp_path / "run"
    # The sampler tests' SamplerConfig (bound through gin), so their programs are reused.
    rc = cli.main(["generate", "--workdir", str(workdir), "--model_path", str(tiny_dir[0]),
                   "--prompt_file", str(prompts), "--num_samples", "2", "--max_new_tokens", "32",
                   "--temperature", "0", "--stop", "o",
                   "--gin_bindings", f"rstar_jax.inference.generate.generate.sampler = "
                                     f"@rstar_jax.config.SamplerConfig()",
                   *[arg for k, v in vars(CONFIG).items() for arg in (
                       "--gin_bindings", f"rstar_jax.config.SamplerConfig.{k} = {v!r}")]])
    cli.gin.clear_config()
    assert rc == 0
    lines = (workdir / "generations.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["prompt"] for r in records] == texts
    for record in records:
        first, second = record["samples"]
        assert first == second and first["finish_reason"] in ("stop", "eos", "length")
        assert first["finish_reason"] != "stop" or first["text"].endswith("o")


def test_prompt_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "a"}\n{"question": "b"}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:2: expected a string"):
        read_prompts(str(bad))
    text = tmp_path / "p.txt"
    text.write_text("one\n\ntwo\n")
    assert read_prompts(str(text)) == ["one", "two"]
