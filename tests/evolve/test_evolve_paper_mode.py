"""Paper mode (`rstar-jax evolve --base_model HF_DIR --train_problems ... --test_problems ...`) end
to end with tiny models, a round that solves nothing, and kill -9 at five points of a round.

The bases come from experiments/smoke.gin: its run (curriculum, two rounds) gives a random init
(round0/init, solves nothing) and a tokenizer; fine-tuning that init for a few seconds on one code
step and then `\\boxed{1}` or `\\boxed{2}` (each question with both) gives a base that knows the
step format and answers right about half the time, so its trees hold both correct and wrong
trajectories, hence SFT records and PPM pairs. The test sets mix curriculum questions with real
benchmark problems (tests/fixtures) made longer than the sampler's max_len.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from rstar_jax import steps as sf
from rstar_jax.config import EvolveConfig, RoundConfig, SearchConfig
from rstar_jax.data import records
from rstar_jax.data.problems import load_problem_sets
from rstar_jax.evolve import extract as evolve_extract
from rstar_jax.evolve import run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "eval_data_sample")
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
MAX_LEN = 320  # experiments/smoke.gin: SamplerConfig.max_len


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rstar_jax.cli", *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True)


def write_json(path, obj) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)
    return str(path)


def long_benchmark_problems(n: int) -> list[dict]:
    """Real benchmark text (the fixture sets), five problems per question: far past MAX_LEN tokens."""
    problems = sorted((p for ps in load_problem_sets(FIXTURES).values() for p in ps), key=lambda p: -len(p.question))
    return [{"index": k, "question": " ".join(p.question for p in problems[k:k + 5]),
             "answer": problems[k + 4].golds[0]} for k in range(n)]


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """The smoke run, a random and a format-knowing base, and paper-mode problem directories."""
    work = tmp_path_factory.mktemp("paper")
    smoke = work / "smoke"
    done = cli("evolve", "--gin_file", "smoke", "--workdir", smoke)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [row["round"] for row in json.load(open(smoke / "report.json"))["rounds"]] == [0, 1, 2]
    problems = smoke / "problems"
    questions = {split: [p["question"] for level in (1, 2)
                         for p in json.load(open(problems / split / f"level{level}.json"))]
                 for split in ("train", "test")}
    seed = [r.query for r in records.read_sft(str(problems / "seed.json"))]
    answers = [sf.render_code_step("x = 1", first=True) + sf.render_answer_step(f"The answer is \\boxed{{{d}}}.")
               for d in "12"]
    sft_file = str(work / "format_sft.json")
    records.write_records(sft_file, [records.SFTRecord(q, a) for q in seed + questions["train"] + questions["test"]
                                     for a in answers])
    train = [f"config.TrainConfig.{k} = {v}" for k, v in dict(
        max_steps=120, schedule="'constant'", learning_rate=1e-2, weight_decay=0.0, batch_size=8, num_epochs=1000,
        max_length=256, compute_dtype="'float32'", checkpoint_every=1000, log_every=40).items()]
    done = cli("train-sft", "--workdir", work / "format", "--base_model", smoke / "round0" / "init",
               "--train_file", sft_file, *[a for b in train for a in ("--gin_bindings", b)])
    assert done.returncode == 0, done.stderr[-3000:]
    one = lambda qs: [{"index": i, "question": q, "answer": "1"} for i, q in enumerate(qs)]  # noqa: E731
    write_json(work / "train" / "curriculum.json", one(questions["train"] + seed[:8]))
    write_json(work / "test" / "curriculum.json", one(questions["test"]))
    write_json(work / "test" / "benchmark.json", long_benchmark_problems(2))
    return {"random": smoke / "round0" / "init", "formatted": work / "format" / "hf",
            "train": work / "train", "test": work / "test"}


def paper_args(workdir, base, paper, *extra: str) -> list[str]:
    return ["evolve", "--gin_file", "smoke", "--workdir", str(workdir), "--base_model", str(base),
            "--train_problems", str(paper["train"]), "--test_problems", str(paper["test"]), *extra]


def stages(workdir) -> dict:
    return json.load(open(workdir / "manifest.json"))["stages"]


# Runs `rstar-jax <argv[2:]>` and SIGKILLs itself (kill -9) at one point of round 1, argv[1].
KILLER = r'''
import os, signal, sys

point, argv = sys.argv[1], sys.argv[2:]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if point == "search":  # mid-chunk: the pass's second chunk saved under its temporary name, not renamed
    from rstar_jax.search import io
    save, saved = io.save, []

    def hooked(result, path, *args, **kwargs):
        save(result, path, *args, **kwargs)
        saved.append(path)
        if len(saved) == 2:
            die()
    io.save = hooked
elif point == "extract":  # the third record file half written under its temporary name
    from rstar_jax.data import records
    write, written = records.write_records, []

    def hooked(path, recs):
        written.append(path)
        if len(written) == 3:
            with open(f"{path}.tmp.{os.getpid()}", "w") as f:
                f.write('[{"prompt": "half a rec')
            die()
        write(path, recs)
    records.write_records = hooked
elif point in ("policy", "ppm"):  # mid-training: round 1's first checkpoint saved
    from rstar_jax.training import checkpoint
    save = checkpoint.Checkpoints.save

    def hooked(self, step, state, position):
        save(self, step, state, position)
        if os.path.join("round1", point, "checkpoints") in str(self.manager.directory):
            self.manager.wait_until_finished()
            die()
    checkpoint.Checkpoints.save = hooked
elif point == "evaluate":  # mid-evaluation: round 1's first batch of results written
    from rstar_jax.evaluation import results
    append = results.ShardWriter.append

    def hooked(self, recs):
        append(self, recs)
        if os.sep + "round1" + os.sep in self.path:
            die()
    results.ShardWriter.append = hooked
else:
    raise SystemExit(f"unknown kill point {point}")
from rstar_jax import cli
sys.exit(cli.main(argv))
'''
KILL_POINTS = ("search", "extract", "policy", "ppm", "evaluate")


def outputs(workdir) -> dict[str, object]:
    """What must not depend on kills: stage names, every search chunk, record file, evaluation
    record and the report (less its seconds and which stages were resumed)."""
    out: dict[str, object] = {"stages": list(stages(workdir))}
    for path in sorted(workdir.glob("round*/search/pass*/*/*")):
        if path.suffix == ".npz":  # zip entries carry a time
            with np.load(path) as arrays:
                out[str(path.relative_to(workdir))] = {k: (arrays[k].shape, arrays[k].tobytes()) for k in arrays.files}
        else:
            out[str(path.relative_to(workdir))] = path.read_text()
    for path in sorted([*workdir.glob("round*/*.json"), *workdir.glob("round*/eval/**/predictions.jsonl")]):
        out[str(path.relative_to(workdir))] = path.read_text()
    report = json.load(open(workdir / "report.json"))
    out["report"] = {**report, "rounds": [{k: v for k, v in row.items() if k not in ("seconds", "resumed")}
                                          for row in report["rounds"]]}
    return out


@pytest.mark.slow
def test_paper_mode_killed_at_five_points_resumes_to_the_same_records_and_report(paper, tmp_path):
    """A base that knows the step format; SIGKILL mid-search chunk, mid-extract, mid-SFT, mid-PPM and
    mid-evaluation of round 1, each run resumed by the next; the end equals the uninterrupted run."""
    clean = tmp_path / "clean"
    done = cli(*paper_args(clean, paper["formatted"], paper))
    assert done.returncode == 0, done.stderr[-3000:]
    results = {name: s["result"] for name, s in stages(clean).items()}
    assert results["round1/extract"]["coverage_all"] > 0 and results["round1/policy"]["trained"]
    assert results["round1/ppm"]["trained"], "no PPM pairs: the mid-PPM kill point would not be reached"
    assert set(results["round1/evaluate"]["accuracy"]) >= {"greedy", "mcts"}
    chunks = [json.loads(line) for line in open(clean / "round1" / "search" / "metrics.jsonl")]
    # every chunk counts its prompt tokens (none where every prompt was longer than the context)
    assert all("search/reused_tokens" in c for c in chunks) and sum(c["search/prefill_tokens"] for c in chunks) > 0
    for r in (0, 1, 2):  # the long benchmark problems are counted, not fatal
        assert results[f"round{r}/evaluate"]["accuracy"]["greedy"]["benchmark"] == 0.0
    predictions = clean / "round1" / "eval" / "benchmark" / "greedy" / "predictions.jsonl"
    benchmark = [json.loads(line) for line in open(predictions)]
    assert [c["answer"] for r in benchmark for c in r["candidates"]] == [None, None]  # no room to answer in
    assert not {c["finish"] for r in benchmark for c in r["candidates"]} & {"stop", "eos"}

    killed = tmp_path / "killed"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    for point in KILL_POINTS:
        proc = subprocess.run([sys.executable, str(script), point, *paper_args(killed, paper["formatted"], paper)],
                              cwd=ROOT, env=ENV, capture_output=True, text=True)
        assert proc.returncode == -signal.SIGKILL, f"{point}: not killed\n{proc.stderr[-3000:]}"
        assert f"round1/{point}" not in stages(killed)
    resumed = cli(*paper_args(killed, paper["formatted"], paper))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert outputs(killed) == outputs(clean)
    resumed_stages = [row["resumed"] for row in json.load(open(killed / "report.json"))["rounds"]]
    assert resumed_stages == [[], list(KILL_POINTS), []]
    leftovers = [str(p) for p in killed.glob("round*/**/*") if ".tmp" in p.name]
    assert leftovers == []
    assert (killed / "report.md").exists() and (killed / "accuracy.png").exists()


@pytest.mark.slow
def test_paper_mode_with_a_base_that_solves_nothing_carries_the_models_forward(paper, tmp_path):
    """A random init: round 1 extracts no record and no pair, trains nothing, says so, and goes on."""
    workdir = tmp_path / "run"
    done = cli(*paper_args(workdir, paper["random"], paper,
                           "--gin_bindings", "config.EvolveConfig.rounds = (@r1/config.RoundConfig(),)"))
    assert done.returncode == 0, done.stderr[-3000:]
    results = {name: s["result"] for name, s in stages(workdir).items()}
    assert results["round1/extract"]["sft_records"] == 0 and results["round1/extract"]["coverage_all"] == 0
    assert results["round1/policy"]["model"] == str(paper["random"]) and not results["round1/policy"]["trained"]
    assert results["round1/ppm"]["model"] is None and not results["round1/ppm"]["trained"]
    assert "sft.json holds no records" in results["round1/policy"]["reason"]
    assert "round 1 policy: not trained" in done.stderr and "round 1 PPM: not trained" in done.stderr
    report = json.load(open(workdir / "report.json"))
    assert [(row["round"], row["coverage_all"]) for row in report["rounds"]] == [(0, None), (1, 0.0)]


def test_a_round_without_records_carries_the_previous_models_forward(tmp_path, monkeypatch, caplog):
    """Round 1 solves nothing (no SFT record, no pair): nothing is trained and round 2 searches and
    evaluates with the base model and no PPM; round 2 trains both; round 3 has records but no pairs."""
    import rstar_jax.models.hf as hf

    monkeypatch.setattr(hf, "check_hf_dir", lambda path: None)
    monkeypatch.setattr(run, "search_stage", lambda round_dir, sets, rc, config, policy, ppm, seed:
                        {"policy": policy, "ppm": ppm})
    found = {1: (0, 0), 2: (3, 2), 3: (1, 0)}  # round -> (SFT records, pairs)

    def extract(round_dir, sets, config, seed_file, earlier_pairs, earlier_sft, heldout_sets):
        r = int(os.path.basename(round_dir)[len("round"):])
        n_sft, n_pairs = found[r]
        records.write_records(os.path.join(round_dir, evolve_extract.SFT_TRAIN), [records.SFTRecord("q", "a")] * n_sft)
        pair = records.PreferencePair("p", "a", "b", 1, 1)
        for name in (evolve_extract.PPM_TRAIN, evolve_extract.PPM_HELDOUT):
            records.write_records(os.path.join(round_dir, name), [pair] * n_pairs)
        return {"coverage": {"set": float(n_sft > 0)}, "coverage_all": float(n_sft > 0), "sft_records": n_sft,
                "ppm_pairs": n_pairs}

    trained = []
    monkeypatch.setattr(run, "extract_round", extract)
    monkeypatch.setattr(run, "train_policy", lambda run_dir, *args: trained.append(run_dir) or run_dir)
    monkeypatch.setattr(run, "train_reward_model", lambda run_dir, *args: trained.append(run_dir) or run_dir)
    evaluated = []
    monkeypatch.setattr(run, "evaluate_round", lambda eval_dir, sets, config, policy, ppm, heldout, search_methods=True: (
        evaluated.append((os.path.relpath(policy, tmp_path), ppm and os.path.relpath(ppm, tmp_path)))
        or {"accuracy": {"greedy": {"set": 0.0}}, "ppm_heldout_accuracy": None}))
    problems = [{"question": "1 + 0?", "answer": "1"}]
    train, test = write_json(tmp_path / "train.json", problems), write_json(tmp_path / "test.json", problems)
    rounds = (RoundConfig(SearchConfig(use_ppm=False)),) + (RoundConfig(SearchConfig(use_ppm=True)),) * 2
    workdir = tmp_path / "run"
    with caplog.at_level("WARNING"):
        run.evolve(str(workdir), config=EvolveConfig(rounds=rounds, round_base="previous"),
                   base_model=str(tmp_path / "base"), train_problems=train, test_problems=test)
    assert [os.path.relpath(d, workdir) for d in trained] == ["round2/policy", "round2/ppm", "round3/policy"]
    assert evaluated == [("base", None), ("base", None), ("run/round2/policy", "run/round2/ppm"),
                         ("run/round3/policy", "run/round2/ppm")]
    results = {name: s["result"] for name, s in stages(workdir).items()}
    assert results["round1/policy"] == {
        "model": str(tmp_path / "base"), "trained": False, "records": 0,
        "reason": "round1/sft.json holds no records (the search solved no problem, or none gave a pair)"}
    assert results["round2/search"] == {"policy": str(tmp_path / "base"), "ppm": None}  # no PPM yet: terminal-guided
    assert results["round3/ppm"]["model"] == str(workdir / "round2" / "ppm") and not results["round3/ppm"]["trained"]
    assert results["round2/policy"] == {"model": str(workdir / "round2" / "policy"), "trained": True, "records": 3}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith("round 1 policy: not trained, keeping") for m in warnings)
    assert any(m.startswith("round 3 PPM: not trained, keeping") for m in warnings)
    assert run.model_of("older/manifest/path") == "older/manifest/path"  # manifests before "trained"
