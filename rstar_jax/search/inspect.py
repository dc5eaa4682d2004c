"""Looking at searched trees in a notebook: a table, trajectories as text, an SVG picture, and a
treescope view of the arrays. Trajectories come from `result.tree(b)`, the host view that record
extraction reads, ranked as the SFT extractor ranks them.

The picture is plain SVG (one circle per node, coloured by Q; answers drawn as diamonds with a
green / red outline when graded; hovering a node shows its step), so it renders in Jupyter, in
exported HTML and on GitHub without a JavaScript widget.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import treescope
from matplotlib import colormaps, colors

from rstar_jax.data.trees import Trajectory
from rstar_jax.search.io import SearchResult
from rstar_jax.search.tree import NO_NODE, ROOT, NodeKind


def to_dataframe(result: SearchResult, b: int) -> pd.DataFrame:
    """One row per node of tree b: structure, statistics, flags and the step's text."""
    count, a = result.num_nodes(b), result.arrays
    recs = result.nodes[b]
    return pd.DataFrame({
        "node": np.arange(count),
        "parent": a["parent"][b, :count],
        "depth": a["depth"][b, :count],
        "N": a["visit_count"][b, :count],
        "Q": result.q_values(b),
        "value": a["value"][b, :count],
        "ppm_value": a["ppm_value"][b, :count],
        "kind": [NodeKind(int(k)).name for k in a["kind"][b, :count]],
        "terminal": a["terminal"][b, :count],
        "code_error": a["code_error"][b, :count],
        "consecutive_errors": a["consecutive_errors"][b, :count],
        "answer": [r.answer for r in recs],
        "correct": [r.correct for r in recs],
        "text": [r.text for r in recs],
        "output": [r.output for r in recs],
    }).set_index("node")


def ranked_trajectories(result: SearchResult, b: int) -> list[Trajectory]:
    """Trajectories that end in a terminal, best first by (mean Q, min Q) as the SFT extractor."""
    done = [t for t in result.tree(b).trajectories() if t.kind != NodeKind.STEP]
    return sorted(done, key=lambda t: t.rank_key, reverse=True)


def format_trajectory(result: SearchResult, b: int, trajectory: Trajectory) -> str:
    """The question and each step with its Q, N and node id, ready to print."""
    lines = [f"Q: {result.problems[b].question}", ""]
    for node, step, q, n in zip(trajectory.nodes, trajectory.steps, trajectory.q_values, trajectory.visit_counts):
        lines.append(f"--- node {node}  Q={q:+.3f}  N={n}")
        lines.append(step.strip("\n"))
    verdict = {True: "correct", False: "wrong", None: "ungraded"}[trajectory.correct]
    lines += ["", f"=> {trajectory.kind.name}: {trajectory.answer!r} ({verdict})"]
    return "\n".join(lines)


def best_trajectory(result: SearchResult, b: int) -> str:
    """The trajectory of the selected answer (highest-scored valid answer), as text."""
    node = result.best_answer_node(b)
    if node == NO_NODE:
        return "(no answer found)"
    return format_trajectory(result, b, result.tree(b).trajectory(node))


class TreePicture:
    """An SVG drawing of one tree; displays itself in Jupyter."""

    def __init__(self, svg: str):
        self.svg = svg

    def _repr_html_(self) -> str:
        return f'<div style="overflow:auto;max-height:720px">{self.svg}</div>'


def _layout(children: np.ndarray, count: int) -> dict[int, float]:
    """x position per node: leaves left to right in depth-first order, parents centred above."""
    xs: dict[int, float] = {}
    next_leaf = 0.0
    stack = [(ROOT, False)]
    while stack:
        node, visited = stack.pop()
        kids = [int(c) for c in children[node] if c != NO_NODE and c < count]
        if not kids:
            xs[node], next_leaf = next_leaf, next_leaf + 1
        elif visited:
            xs[node] = (xs[kids[0]] + xs[kids[-1]]) / 2
        else:
            stack.append((node, True))
            stack.extend((k, False) for k in reversed(kids))
    return xs


def draw_tree(result: SearchResult, b: int, *, dx: float = 18, dy: float = 56, radius: float = 6) -> TreePicture:
    """Tree b: colour = Q (red -1 .. green +1), diamonds = answers, hover = the node's step."""
    count, a = result.num_nodes(b), result.arrays
    xs = _layout(a["children"][b], count)
    q = result.q_values(b)
    cmap, norm = colormaps["RdYlGn"], colors.Normalize(-1, 1)
    width, height = (max(xs.values()) + 2) * dx, (int(a["depth"][b, :count].max()) + 1) * dy + 2 * radius
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
             f'font-family="monospace" font-size="10">']
    pos = {i: ((xs[i] + 1) * dx, int(a["depth"][b, i]) * dy + 2 * radius) for i in range(count)}
    for i in range(1, count):
        (x0, y0), (x1, y1) = pos[int(a["parent"][b, i])], pos[i]
        parts.append(f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" stroke="#999"/>')
    for i, rec in enumerate(result.nodes[b]):
        x, y = pos[i]
        kind = NodeKind(int(a["kind"][b, i]))
        fill = colors.to_hex(cmap(norm(q[i]))) if a["visit_count"][b, i] else "#dddddd"
        stroke = {True: "#006400", False: "#b00000"}.get(rec.correct, "#333")
        tip = html.escape(f"node {i}  depth {a['depth'][b, i]}  N={a['visit_count'][b, i]}  Q={q[i]:+.3f}  "
                          f"{kind.name}{'  answer=' + str(rec.answer) if rec.answer else ''}\n{rec.text}")
        if kind == NodeKind.ANSWER:
            r = radius * 1.4
            shape = (f'<polygon points="{x},{y - r} {x + r},{y} {x},{y + r} {x - r},{y}" fill="{fill}" '
                     f'stroke="{stroke}" stroke-width="2">')
            parts.append(f"{shape}<title>{tip}</title></polygon>")
        else:
            dash = ' stroke-dasharray="2,2"' if kind != NodeKind.STEP else ""
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{fill}" stroke="{stroke}"{dash}>'
                         f"<title>{tip}</title></circle>")
    parts.append("</svg>")
    return TreePicture("".join(parts))


def render_arrays(result: SearchResult, b: int | None = None) -> str:
    """treescope HTML of the tree arrays (all trees, or tree b only) for `IPython.display.HTML`."""
    arrays = result.arrays if b is None else {k: v[b] for k, v in result.arrays.items()}
    return treescope.render_to_html(arrays)
