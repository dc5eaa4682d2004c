"""Inspection helpers and the inspect_tree notebook, on a tree made by the fake search."""

from __future__ import annotations

import pytest
from fake_search import run_fake_kernels

from rstar_jax.config import SearchConfig
from rstar_jax.data.problems import Problem
from rstar_jax.search import inspect as si
from rstar_jax.search import io
from rstar_jax.search.io import NodeRecord, SearchResult
from rstar_jax.search.tree import NodeKind


@pytest.fixture(scope="module")
def result() -> SearchResult:
    config = SearchConfig.data_generation(2, num_rollouts=6, num_candidates=4)
    tree = run_fake_kernels(4, config, seed=5, capacity=64)  # the kernel tests' shapes: no recompilation
    nodes = []
    for b in range(4):
        recs = [NodeRecord()]
        for i in range(1, int(tree.node_count[b])):
            kind, value = int(tree.kind[b, i]), float(tree.value[b, i])
            answer = "7" if value > 0 else "8"
            recs.append(NodeRecord(f"\n# step {i} <b>&\n<end_of_step>", answer=answer if kind == NodeKind.ANSWER else None,
                                   correct=(value > 0) if kind == NodeKind.ANSWER else None))
        nodes.append(recs)
    problems = [Problem(b, f"What is 3 + 4? ({b})", "7", "toy") for b in range(4)]
    return SearchResult.from_tree(problems, tree, nodes)


def test_table_picture_and_trajectories(result):
    df = si.to_dataframe(result, 0)
    assert len(df) == result.num_nodes(0) and {"N", "Q", "ppm_value", "kind", "text"} <= set(df.columns)
    svg = si.draw_tree(result, 0)._repr_html_()
    num_answers = int((df.kind == "ANSWER").sum())
    assert svg.count("<polygon") == num_answers and svg.count("<circle") == len(df) - num_answers
    assert "&lt;b&gt;&amp;" in svg  # step text is escaped in the hover titles
    ranked = si.ranked_trajectories(result, 0)
    assert [t.mean_q for t in ranked] == sorted((t.mean_q for t in ranked), reverse=True)
    best = si.best_trajectory(result, 0)
    assert best.startswith("Q: What is 3 + 4?") and "=> ANSWER" in best
    assert "treescope-container" in si.render_arrays(result, 0)


@pytest.mark.slow
def test_notebook_runs_on_a_saved_search(result, tmp_path, run_inspect_notebook):
    io.save(result, str(tmp_path / "search"))
    html = run_inspect_notebook(str(tmp_path / "search"))
    assert "<svg" in html and "treescope" in html.lower()
