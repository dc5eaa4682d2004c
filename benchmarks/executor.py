"""Executor throughput: programs/s on typical step programs vs one `python -c` subprocess each.

Run: python benchmarks/executor.py [--programs 256] [--workers 2]
Prints one JSON line. Programs are distinct (no dedup) and shaped like rStar step programs:
a code block prefix of arithmetic/sympy/numpy steps plus a final print. The pool's own cost is
measured on trivial programs, as wall time and as CPU time of the parent plus the workers (the
CPU figure does not depend on how busy the machine is).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import psutil

from rstar_jax.parallel.hosts import machine
from rstar_jax.verify.executor import Executor

_TEMPLATES = (
    "# Step 1: total weight\ntotal = 2 * 20 * {i}\n# Step 2: per lift\nper = 2 * 15\n"
    "# Now print the final answer\nprint(total / per)",
    "from sympy import symbols, Eq, solve\nx = symbols('x')\n"
    "# Step 1: solve the equation\nsol = solve(Eq(3 * (x - 2), {i}), x)[0]\nprint(sol)",
    "import math\n# Step 1: combinations\nways = math.comb({i} + 5, 3)\nprint(ways % 1000)",
    "import numpy as np\n# Step 1: a small linear system\na = np.array([[2, 1], [1, 3]])\n"
    "b = np.array([{i}, 1])\nprint(np.linalg.solve(a, b).round(4).tolist())",
)


def typical_programs(n: int) -> list[str]:
    return [_TEMPLATES[i % len(_TEMPLATES)].format(i=i) for i in range(n)]


def naive_run(programs: list[str], workers: int) -> list[int]:
    """The anchor: one fresh `python -c` per program, `workers` at a time; exit codes."""
    def one(program: str) -> int:
        return subprocess.run([sys.executable, "-c", program], capture_output=True,
                              timeout=60).returncode
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, programs))


def _cpu_s(workers: list[psutil.Process]) -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime + sum(sum(w.cpu_times()[:2]) for w in workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=256)
    parser.add_argument("--naive_programs", type=int, default=32, help="the anchor is slow")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    programs = typical_programs(args.programs)

    with Executor(num_workers=args.workers, timeout_s=30) as executor:
        executor.run(["1"])  # workers started and warm, as in a search loop
        start = time.perf_counter()
        results = executor.run(programs)
        ours_s = time.perf_counter() - start
        trivial = [f"{i}" for i in range(2000)]
        workers = [psutil.Process(pid) for pid in executor.worker_pids]
        start, cpu_start = time.perf_counter(), _cpu_s(workers)
        executor.run(trivial)
        trivial_ms = (time.perf_counter() - start) / len(trivial) * 1e3
        trivial_cpu_ms = (_cpu_s(workers) - cpu_start) / len(trivial) * 1e3
    assert all(r.error is None for r in results), [r for r in results if r.error][:3]

    naive_programs = programs[:args.naive_programs]
    start = time.perf_counter()
    naive = naive_run(naive_programs, args.workers)
    naive_s = time.perf_counter() - start
    assert not any(naive)

    ours = len(programs) / ours_s
    anchor = len(naive_programs) / naive_s
    print(json.dumps({
        "benchmark": "executor", "machine": machine(), "workers": args.workers, "programs": len(programs),
        "programs_per_s": round(ours, 1), "anchor": "subprocess python -c per program",
        "anchor_programs_per_s": round(anchor, 2), "ratio": round(ours / anchor, 1),
        "trivial_program_ms": round(trivial_ms, 3), "trivial_program_cpu_ms": round(trivial_cpu_ms, 3),
    }))


if __name__ == "__main__":
    main()
