"""A simulated pod: two processes x 4 fake CPU devices, joined by jax.distributed on localhost, run
the smoke evolve (experiments/smoke.gin), `rstar-jax eval` (greedy, and MCTS with a PPM) and
`rstar-jax generate` on the mesh path: training on the global 8-device mesh, sampling and scoring
on each process's 4 devices, each process on its slice of the problems and prompts; then
`rstar-jax train-ppm` on the global mesh. One process on one device runs the same commands; the two
must agree.

What "agree" means, and why:
- Search and evaluation batches are per process. A problem's samples draw from random streams
  named by the problem, but its batch-mates still set the shapes its rows are computed in, and those
  move float roundings (below) that can reach a sampled token. Both runs therefore search and
  evaluate one problem per batch (`EvolveConfig.search_chunk = 1`, `EvalConfig.batch_size = 1`);
  `generate` passes each prompt's index in the whole file as its stream, so it needs nothing.
- Training splits each batch over the 8 devices and sums the gradients across them, in another
  order than one device sums them: the trained weights differ in the last bits of float32
  (tests/training/test_sharded.py bounds that). So everything after the first training can differ
  only where the smoke model's decisions sit that close to a tie. The test asserts that the texts,
  trees, records, predictions, report and generations are identical, and that floats in them
  (sampling priors, log-probabilities, PPM values and scores) agree to 1e-5.
- Even with the same weights, a process's rows fill batches of other shapes on 4 devices than on 1,
  and XLA's CPU matmuls round differently per shape: summed log-probabilities of the same tokens
  differ in the 7th digit. Measured: the round-1 priors (from the bootstrap policy trained on 8
  devices) differ by at most one float32 ulp, generate's log-probability sums by ~1e-7 relative;
  every text, token and record is equal.
- The smoke models rarely reach an answer, so few PPM scores reach the predictions; the PPM scores
  every MCTS step all the same (its values start Q and steer selection), so equal trees and
  predictions mean the sharded scorer agreed. tests/inference/test_sampler_mesh.py compares the
  scores themselves across 8 devices and 1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # three smoke runs' worth of CPU: a few minutes on 2 cores

ROOT = Path(__file__).resolve().parents[1]
ONE_PROBLEM_BATCHES = ["--gin_bindings", "config.EvolveConfig.search_chunk = 1",
                       "--gin_bindings", "config.EvalConfig.batch_size = 1"]


def launch(argv: list[str], processes: int, devices: int, log: Path) -> None:
    """`python -m rstar_jax.cli *argv` as `processes` jax.distributed processes of `devices` CPU
    devices each; fails with the log's tail if any process fails."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    procs = []
    for i in range(processes):
        if processes > 1:
            env = {**env, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": str(processes),
                   "JAX_PROCESS_ID": str(i)}
        out = open(f"{log}.p{i}", "w")
        procs.append((subprocess.Popen([sys.executable, "-m", "rstar_jax.cli", *argv], cwd=ROOT, env=env,
                                       stdout=out, stderr=subprocess.STDOUT), out))
    for proc, out in procs:
        proc.wait(timeout=1200)
        out.close()
    for i, (proc, _) in enumerate(procs):
        text = Path(f"{log}.p{i}").read_text()
        assert proc.returncode == 0, f"process {i} of {processes}: {text[-4000:]}"


def random_ppm(policy_dir: str, out_dir: str) -> None:
    """A PPM on the round's policy with a random value head: evaluation then runs MCTS with scores."""
    from flax import nnx

    from rstar_jax.models.hf import load_hf, save_ppm_hf
    from rstar_jax.models.ppm import ProcessRewardModel

    model, tokenizer = load_hf(policy_dir)
    save_ppm_hf(ProcessRewardModel(model.config, rngs=nnx.Rngs(3), backbone=model), tokenizer, out_dir)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pod")
    out = {}
    for name, processes, devices in (("one", 1, 1), ("pod", 2, 4)):
        work = base / name
        launch(["evolve", "--gin_file", "smoke", "--workdir", str(work / "evolve"), *ONE_PROBLEM_BATCHES],
               processes, devices, base / f"{name}.evolve")
        if name == "one":  # both evaluate the same models: the single process's round-2 policy
            stages = json.loads((work / "evolve" / "manifest.json").read_text())["stages"]
            policy = stages["round2/policy"]["result"]["model"]
            ppm = str(base / "ppm")
            random_ppm(policy, ppm)
            pairs = base / "pairs.json"  # rStar's step pairs, from the smoke's test questions
            questions = [p["question"] for f in sorted((work / "evolve" / "problems" / "test").glob("*.json"))
                         for p in json.loads(f.read_text())]
            pairs.write_text(json.dumps([{"prompt": f"<|user|>:\n{q}\n", "pos": f"x = {i}<end_of_step>",
                                          "neg": f"y = {i + 1}<end_of_step>", "pos_count": 1, "neg_count": 1}
                                         for i, q in enumerate(questions * 4)]))
            prompts = base / "prompts.txt"
            prompts.write_text("".join(f"{q}\n" for q in ("Zoe has 6 marbles.", "What is 1 + 2?", "x = 3",
                                                          "print(2 * 4)", "Mia has 8 apples.")))
        launch(["eval", "--workdir", str(work / "eval"), "--problems", str(work / "evolve" / "problems" / "test"),
                "--policy_path", policy, "--ppm_path", ppm,
                "--gin_bindings", "config.EvalConfig.methods = ('greedy', 'mcts')",
                "--gin_bindings", "config.EvalConfig.batch_size = 1",
                "--gin_bindings", "config.EvalConfig.sampling = @evaluation/config.SamplingConfig()",
                "--gin_bindings", "evaluation/config.SamplingConfig.max_new_tokens = 48",
                "--gin_bindings", "evaluation/config.SamplingConfig.stop = ('<end_of_code>', '<end_of_answer>')",
                "--gin_bindings", "config.EvalConfig.ks = (1,)",
                "--gin_bindings", "config.EvalConfig.grade_workers = 0",
                "--gin_bindings", "config.EvalConfig.exec_workers = 1",
                "--gin_bindings", "rstar_jax.evaluation.run.evaluate.search = @rstar_jax.config.SearchConfig()",
                "--gin_bindings", "config.SearchConfig.ground_truth_rewards = False",
                "--gin_bindings", "config.SearchConfig.num_rollouts = 2",
                "--gin_bindings", "config.SearchConfig.num_candidates = 2",
                "--gin_bindings", "config.SearchConfig.max_depth = 3",
                "--gin_bindings", "config.SearchConfig.sampling = @search/config.SamplingConfig()",
                "--gin_bindings", "search/config.SamplingConfig.max_new_tokens = 16",
                "--gin_bindings", "search/config.SamplingConfig.stop = ('<end_of_step>', '<end_of_code>', '<end_of_answer>')",
                "--gin_bindings", "config.SearchConfig.max_nodes = 64",
                "--gin_bindings", "config.SamplerConfig.max_batch = 16",
                "--gin_bindings", "config.SamplerConfig.max_len = 512",
                "--gin_bindings", "config.ScorerConfig.max_batch = 16",
                "--gin_bindings", "config.ScorerConfig.max_len = 512"],
               processes, devices, base / f"{name}.eval")
        launch(["generate", "--workdir", str(work / "generate"), "--model_path", policy,
                "--prompt_file", str(prompts), "--num_samples", "3", "--max_new_tokens", "12",
                "--temperature", "1.0", "--seed", "5"], processes, devices, base / f"{name}.generate")
        launch(["train-ppm", "--workdir", str(work / "ppm"), "--policy_model", policy, "--train_file", str(pairs),
                *[arg for binding in ("batch_size = 8", "max_steps = 3", "num_epochs = 1", "max_length = 128",
                                      "compute_dtype = 'float32'", "log_every = 1", "checkpoint_every = 100")
                  for arg in ("--gin_bindings", f"config.TrainConfig.{binding}")]],
               processes, devices, base / f"{name}.ppm")
        out[name] = work
    return out


def _floats_close(a, b, path="") -> None:
    """`a == b`, except that floats may differ by 1e-5 (see the module docstring); NaN == NaN
    (e.g. the PPM value of a node searched without a PPM)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-5, nan_ok=True), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _floats_close(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _floats_close(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def searched_trees(workdir: Path) -> dict[str, dict]:
    """Every searched tree by (round, pass, set, problem): its nodes and its slice of the arrays,
    whichever process and chunk searched it."""
    trees = {}
    for chunk in sorted(workdir.glob("round[1-9]/search/pass*/*")):
        if not (chunk / "trees.npz").exists():
            continue
        problems = [json.loads(line) for line in (chunk / "problems.jsonl").read_text().splitlines()]
        nodes = [json.loads(line) for line in (chunk / "nodes.jsonl").read_text().splitlines()]
        with np.load(chunk / "trees.npz") as arrays:
            per_tree = {k: arrays[k] for k in arrays.files}
        for b, problem in enumerate(problems):
            key = f"{chunk.parent.parent.parent.name}/{chunk.parent.name}/{problem['source']}/{problem['index']}"
            trees[key] = {"problem": problem, "nodes": [n for n in nodes if n["tree"] == b],
                          "arrays": {k: v[b].tolist() for k, v in per_tree.items()
                                     if v.ndim and v.shape[0] == len(problems)}}
    return trees


def _json(path: Path, workdir: Path):
    """A JSON file's records, with the run's own workdir (in paths it names) written as <workdir>."""
    return json.loads(path.read_text().replace(str(workdir), "<workdir>"))


def _no_host(record):
    """A record less what tells the runs' hosts apart: seconds, and the machines (the pod's devices
    are spread over processes)."""
    if isinstance(record, dict):
        return {k: _no_host(v) for k, v in record.items() if k not in ("seconds", "machines")}
    if isinstance(record, list):
        return [_no_host(v) for v in record]
    return record


def test_pod_evolve_has_the_single_device_stages_trees_and_records(runs):
    one, pod = runs["one"] / "evolve", runs["pod"] / "evolve"
    stages = lambda w: list(json.loads((w / "manifest.json").read_text())["stages"])
    assert stages(pod) == stages(one)
    trees_one, trees_pod = searched_trees(one), searched_trees(pod)
    assert sorted(trees_pod) == sorted(trees_one) and trees_one
    # The pod's chunks are its processes' own: p000-of-002.*, p001-of-002.*
    assert {p.name.split(".")[0] for p in pod.glob("round1/search/pass0/*")} == {"p000-of-002", "p001-of-002"}
    _floats_close(trees_pod, trees_one)
    for path in sorted(one.glob("round[1-9]/*.json")):
        _floats_close(_json(pod / path.relative_to(one), pod), _json(path, one), str(path.relative_to(one)))
    _floats_close(_no_host(_json(pod / "report.json", pod)), _no_host(_json(one / "report.json", one)),
                  "report.json")
    for path in sorted(one.glob("round[0-9]/eval/**/predictions.jsonl")):
        _floats_close([json.loads(x) for x in (pod / path.relative_to(one)).read_text().splitlines()],
                      [json.loads(x) for x in path.read_text().splitlines()], str(path.relative_to(one)))


def test_pod_eval_writes_the_single_device_predictions_and_summary(runs):
    one, pod = runs["one"] / "eval", runs["pod"] / "eval"
    predictions = sorted(p.relative_to(one) for p in one.glob("*/*/predictions.jsonl"))
    assert {p.parent.name for p in predictions} == {"greedy", "mcts"}
    for path in predictions:
        _floats_close([json.loads(x) for x in (pod / path).read_text().splitlines()],
                      [json.loads(x) for x in (one / path).read_text().splitlines()], str(path))
    _floats_close(json.loads((pod / "summary.json").read_text()), json.loads((one / "summary.json").read_text()))


def test_pod_generate_merges_the_single_device_generations(runs):
    one, pod = runs["one"] / "generate", runs["pod"] / "generate"
    assert (pod / "generations.jsonl").exists() and not list(pod.glob("generations.jsonl.*"))  # slices merged
    records = [json.loads(x) for x in (one / "generations.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(5))
    _floats_close([json.loads(x) for x in (pod / "generations.jsonl").read_text().splitlines()], records)


def test_pod_trains_the_ppm_like_one_device(runs):
    """PPM training on the 2 x 4 mesh (batch split 8 ways, dropout included) follows one device's
    losses to float32 reduction-order noise, as tests/training/test_sharded.py on one process."""
    losses = {name: [json.loads(x)["loss"] for x in (work / "ppm" / "metrics.jsonl").read_text().splitlines()
                     if "loss" in json.loads(x)] for name, work in runs.items()}
    assert len(losses["one"]) == 3
    np.testing.assert_allclose(losses["pod"], losses["one"], rtol=1e-5)
    assert (runs["pod"] / "ppm" / "hf" / "value_head.safetensors").exists()
