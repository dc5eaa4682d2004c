"""A round's search passes: unsolved problems searched again, chunks that survive a kill, process
shards, and a pass that opens like a saved search.
"""

import json
import os

import pytest

from rstar_jax.evolve import search as evolve_search
from rstar_jax.search import io
from stand_ins import ROUND, StandInSearch, problems, search_result, stand_in_tree


def test_stand_in_result_holds_the_stand_in_trees():
    batch = problems(3)
    result = search_result(batch, [stand_in_tree(p, 8) for p in batch])
    assert [result.tree(b) for b in range(3)] == [stand_in_tree(p, 8) for p in batch]


def test_unsolved_problems_get_further_passes(tmp_path):
    search = StandInSearch()
    result = evolve_search.search_round(str(tmp_path), {"level1": problems(9)}, ROUND,
                                 lambda b, n, s: search(b, n, s), seed=0, chunk=4)
    passes = [sorted(i for call in calls for i in call) for calls in
              ([search.calls[0], search.calls[1], search.calls[2]], [search.calls[3], search.calls[4]],
               [search.calls[5]])]
    assert passes == [list(range(9)), [1, 2, 4, 5, 7, 8], [2, 5, 8]]
    assert result == {"trees": 9 + 6 + 3, "unsolved": 0, "ppm": True}


def test_killed_search_resumes_without_losing_or_duplicating(tmp_path):
    sets = {"level1": problems(10), "level2": problems(5, "level2")}
    clean = StandInSearch()
    evolve_search.search_round(str(tmp_path / "clean"), sets, ROUND, clean, seed=0, chunk=4)
    killed = StandInSearch(fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        evolve_search.search_round(str(tmp_path / "killed"), sets, ROUND, killed, seed=0, chunk=4)
    leftover = tmp_path / "killed" / "search" / "pass0" / "p000-of-001.s00008.tmp"  # killed while saving
    leftover.mkdir()
    (leftover / "problems.jsonl").write_text("{half a line")
    resumed = StandInSearch()
    evolve_search.search_round(str(tmp_path / "killed"), sets, ROUND, resumed, seed=0, chunk=4)
    assert resumed.calls[0] == clean.calls[2]  # the two finished chunks are not searched again
    for k in range(3):
        a = evolve_search.read_pass(str(tmp_path / "clean" / "search" / f"pass{k}"))
        b = evolve_search.read_pass(str(tmp_path / "killed" / "search" / f"pass{k}"))
        assert a == b
    assert not [f for f in os.listdir(tmp_path / "killed" / "search" / "pass0") if ".tmp" in f]


def test_a_search_resumed_with_another_chunk_size_searches_each_missing_problem_once(tmp_path):
    sets = {"level1": problems(10)}
    with pytest.raises(KeyboardInterrupt):  # killed after two chunks of two
        evolve_search.search_round(str(tmp_path / "killed"), sets, ROUND, StandInSearch(fail_on_call=2), seed=0,
                                   chunk=2)
    resumed = StandInSearch()
    evolve_search.search_round(str(tmp_path / "killed"), sets, ROUND, resumed, seed=0, chunk=4)
    assert resumed.calls[:2] == [[4, 5, 6, 7], [8, 9]]  # pass 0: what no saved chunk holds, once
    evolve_search.search_round(str(tmp_path / "clean"), sets, ROUND, StandInSearch(), seed=0, chunk=4)
    key = lambda t: (t.set, t.index)  # noqa: E731
    for k in range(3):
        trees = [sorted(evolve_search.read_pass(str(tmp_path / run / "search" / f"pass{k}")), key=key)
                 for run in ("killed", "clean")]
        assert trees[0] == trees[1]


def _evolve_search(workdir) -> str:
    """Round 1's search of a small run with the stand-in; returns its first pass directory."""
    sets = {"level1": problems(5), "level2": problems(3, "level2")}
    evolve_search.search_round(os.path.join(workdir, "round1"), sets, ROUND, StandInSearch(), seed=0, chunk=2)
    return os.path.join(workdir, "round1", "search", "pass0")


def test_an_evolve_pass_opens_like_a_saved_search(tmp_path):
    """What the inspect_tree notebook does, on `<workdir>/round1/search/pass0`."""
    from rstar_jax.search import inspect as si

    result = io.load(_evolve_search(str(tmp_path)))
    assert len(os.listdir(tmp_path / "round1" / "search" / "pass0")) == 4  # chunks of two problems
    assert [(p.source, p.index) for p in result.problems] == [("level1", i) for i in range(5)] + [
        ("level2", i) for i in range(3)]
    assert [result.pass_at_n(b) for b in range(len(result))] == [p.index % 3 == 0 for p in result.problems]
    table = si.to_dataframe(result, 0)
    assert list(table.kind) == ["STEP", "STEP", "ANSWER", "CODE_ERRORS", "ANSWER"]
    assert si.draw_tree(result, 0)._repr_html_().count("<polygon") == 2
    assert "=> ANSWER: 'x' (correct)" in si.best_trajectory(result, 0)
    assert "treescope-container" in si.render_arrays(result, 0)


@pytest.mark.slow
def test_notebook_runs_on_an_evolve_pass(tmp_path, run_inspect_notebook):
    html = run_inspect_notebook(_evolve_search(str(tmp_path)))
    assert "<svg" in html and "level2" in html


def test_process_shards_cover_every_problem_once(tmp_path):
    todo = [("level1", p) for p in problems(11)]
    search = StandInSearch()
    for index in range(3):
        evolve_search.search_pass(str(tmp_path / "three"), todo, lambda b, s: search(b, 4, s),
                           seed=0, chunk=2, process=(index, 3))
    evolve_search.search_pass(str(tmp_path / "one"), todo, lambda b, s: search(b, 4, s), seed=0, chunk=2, process=(0, 1))
    key = lambda t: (t.set, t.index)  # noqa: E731
    three = sorted(evolve_search.read_pass(str(tmp_path / "three")), key=key)
    assert three == sorted(evolve_search.read_pass(str(tmp_path / "one")), key=key)
    assert [t.index for t in three] == list(range(11))
    # a run resumed with another process count searches nothing again and reads each problem once
    calls = len(search.calls)
    evolve_search.search_pass(str(tmp_path / "three"), todo, lambda b, s: search(b, 4, s), seed=0, chunk=2, process=(0, 1))
    assert len(search.calls) == calls
    assert sorted(evolve_search.read_pass(str(tmp_path / "three")), key=key) == three
    assert len(io.load(str(tmp_path / "three"))) == 11  # the notebook's view: each problem once too


WORKER = """
import importlib.util, json, sys
import jax
from rstar_jax.parallel.hosts import initialize_distributed
initialize_distributed()
from rstar_jax.evolve import extract, runner
from rstar_jax.evolve import search as evolve_search
from rstar_jax.config import EvolveConfig
spec = importlib.util.spec_from_file_location("stand_ins", sys.argv[1])
te = importlib.util.module_from_spec(spec)
spec.loader.exec_module(te)
workdir = sys.argv[2]
sets = {"level1": te.problems(9), "level2": te.problems(4, "level2")}
search = te.StandInSearch()
manifest = runner.Manifest.load(workdir)
manifest.run("round1/search", lambda: evolve_search.search_round(workdir + "/round1", sets, te.ROUND, search, 0, 2))
main = jax.process_index() == 0
result = manifest.run("round1/extract", lambda: extract.extract_round(
    workdir + "/round1", sets, EvolveConfig(), None) if main else None)
with open(f"{workdir}/process{jax.process_index()}.json", "w") as f:
    json.dump({"count": jax.process_count(), "calls": search.calls, "extract": result}, f)
"""


def test_two_processes_search_their_shards_and_process0_extracts(tmp_path):
    """Two local CPU processes joined by jax.distributed (gloo collectives for the barriers)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    procs = [subprocess.Popen(
        [sys.executable, str(script), os.path.join(here, "stand_ins.py"), str(tmp_path)], cwd=root,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": root, "JAX_NUM_PROCESSES": "2",
             "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_PROCESS_ID": str(i)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    for p in procs:
        out, _ = p.communicate()
        assert p.returncode == 0, out
    outs = [json.load(open(tmp_path / f"process{i}.json")) for i in range(2)]
    assert [o["count"] for o in outs] == [2, 2]
    searched = sorted(i for o in outs for call in o["calls"] for i in call)
    # pass 0: 9 + 4 problems; pass 1: the 6 + 2 with index % 3 > 0; pass 2: the 3 + 1 with index % 3 == 2
    assert len(searched) == 13 + 8 + 4
    assert all(o["calls"] for o in outs)  # both processes searched a share
    assert outs[0]["extract"]["coverage"] == {"level1": 1.0, "level2": 1.0}
    assert outs[1]["extract"] is None
    assert list(json.load(open(tmp_path / "manifest.json"))["stages"]) == ["round1/search", "round1/extract"]


def test_a_chunk_logs_coverage_tree_sizes_tokens_and_phase_times(tmp_path):
    from rstar_jax.training.metrics import MetricsWriter

    batch = problems(3)
    result = search_result(batch, [stand_in_tree(p, 4) for p in batch])
    metrics = evolve_search.chunk_metrics(result, {"wall_s": 2.0, "generated_tokens": 100, "sample_s": 1.5})
    assert metrics["search/coverage"] == 1 / 3 and metrics["search/tokens_per_s"] == 50.0
    assert metrics["search/nodes_max"] == max(result.num_nodes(b) for b in range(3)) and metrics["search/sample_s"] == 1.5
    for _ in range(2):  # a resumed stage appends after what the killed one wrote
        writer = MetricsWriter.appending(str(tmp_path))
        writer.append(metrics)
        writer.close()
    with open(tmp_path / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2]
