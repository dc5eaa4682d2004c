"""Sandboxed parallel execution of candidate programs (spec §2.5) in a pool of warm workers.

Workers are separate Python processes (`rstar_jax.verify.worker`) started with a scrubbed
environment, each in its own scratch dir, with math/sympy/numpy imported once and then confined
(`sandbox.confine`). A program runs inside a worker in a fresh namespace with rStar's output
formatting (`interpreter`); the parent only moves strings, so a trivial program costs a pipe round
trip. The worker enforces the timeout with SIGALRM; if a program is still running `kill_grace_s`
later (stuck in C code, or swallowing the alarm) the parent kills the worker. A worker that dies
(`os._exit`, a segfault, a kill) yields an error result and is replaced in the background; the
pool keeps serving. Identical programs in one `run` are executed once.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait

import rstar_jax
from rstar_jax.verify.interpreter import timeout_message

_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(rstar_jax.__file__)))
_STARTUP_TIMEOUT_S = 120.0


@dataclasses.dataclass(frozen=True)
class ExecResult:
    """What a program printed (formatted as the original), or why it failed."""

    output: str
    error: str | None = None  # "ExcType: message"; None when the program ran to completion
    timed_out: bool = False


def _worker_env(scratch: str) -> dict[str, str]:
    """Nothing of the caller's environment (API keys...) reaches a worker."""
    return {
        "PATH": os.defpath, "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8",
        "PYTHONPATH": _PACKAGE_PARENT, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    }


def _death_message(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        how = f"signal {signal.Signals(-returncode).name}"
    else:
        how = f"exit code {returncode}"
    return f"WorkerDied: the program ended the worker process ({how})"


class _Worker:
    """One worker process, its pipes and scratch dir, and the program it is running."""

    def __init__(self, settings: dict) -> None:
        self.scratch = tempfile.mkdtemp(prefix="rstar_exec_")
        self.log = tempfile.TemporaryFile()
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rstar_jax.verify.worker", str(to_worker_r), str(from_worker_w),
             json.dumps(settings)],
            pass_fds=(to_worker_r, from_worker_w), env=_worker_env(self.scratch), cwd=self.scratch,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log,
            start_new_session=True)
        os.close(to_worker_r)
        os.close(from_worker_w)
        self.requests = Connection(to_worker_w, readable=False)
        self.replies = Connection(from_worker_r, writable=False)
        self.started = time.monotonic()
        self.layers: list[str] | None = None  # set by the "ready" message
        self.program: str | None = None
        self.deadline = 0.0

    def submit(self, program: str, timeout_s: float, grace_s: float) -> None:
        self.program = program
        self.deadline = time.monotonic() + timeout_s + grace_s
        self.requests.send((program, timeout_s))

    def wait_exit(self) -> int:
        """The exit status of a worker that closed its pipe (killed if it lingers)."""
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def startup_error(self) -> str:
        self.log.seek(0)
        return self.log.read()[-4000:].decode(errors="replace")

    def stop(self, kill: bool) -> None:
        """End the process (politely unless `kill`), reap it and remove its files."""
        self.requests.close()
        if kill:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.replies.close()
        self.log.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


def _stop_all(workers: list[_Worker]) -> None:
    for w in workers:
        w.stop(kill=w.program is not None)
    workers.clear()


class Executor:
    """A pool of sandboxed Python workers; `run(programs)` returns one `ExecResult` per program.

    Args:
      num_workers: worker processes (default: CPU count).
      timeout_s: per-program wall-clock limit (the original used 30 s; 10 s by default here).
      memory_mb: address space a program may add on top of the warm worker.
      max_file_mb: largest file a program may write (in its scratch dir).
      kill_grace_s: how long after `timeout_s` a worker that ignores its alarm is killed.
      kernel_sandbox: use Landlock/seccomp when the kernel has them (False: audit hooks only).
    """

    def __init__(self, num_workers: int | None = None, timeout_s: float = 10.0, *,
                 memory_mb: int = 2048, max_file_mb: int = 16, kill_grace_s: float = 1.0,
                 kernel_sandbox: bool = True) -> None:
        if timeout_s <= 0:
            raise ValueError(f"Executor timeout_s must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self.kill_grace_s = kill_grace_s
        self._settings = {"memory_mb": memory_mb, "max_file_mb": max_file_mb, "kernel": kernel_sandbox}
        self._workers = [_Worker(self._settings) for _ in range(num_workers or os.cpu_count() or 1)]
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop all workers and remove their scratch dirs."""
        self._finalizer()

    @property
    def sandbox_layers(self) -> list[str]:
        """The confinement layers active in the workers (waits for the first worker to start)."""
        while True:
            for w in self._workers:
                if w.layers is not None:
                    return list(w.layers)
            self._poll(time.monotonic() + _STARTUP_TIMEOUT_S, {})

    @property
    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def run(self, programs: Sequence[str]) -> list[ExecResult]:
        """Execute each program (identical ones once) in parallel; results in input order."""
        if not self._workers:
            raise RuntimeError("Executor is closed")
        pending = collections.deque(dict.fromkeys(programs))
        results: dict[str, ExecResult] = {}
        total = len(pending)
        while len(results) < total:
            for w in list(self._workers):
                if pending and w.layers is not None and w.program is None:
                    try:
                        w.submit(pending.popleft(), self.timeout_s, self.kill_grace_s)
                    except OSError:  # died while idle (killed from outside): retry elsewhere
                        pending.appendleft(w.program)
                        w.program = None
                        self._respawn(w, kill=True)
            self._poll(None, results)
        return [results[p] for p in programs]

    def _poll(self, until: float | None, results: dict[str, ExecResult]) -> None:
        """Wait for replies (or deadlines), record results, replace dead or stuck workers."""
        busy = [w for w in self._workers if w.program is not None]
        starting = [w for w in self._workers if w.layers is None]
        deadlines = [w.deadline for w in busy] + [w.started + _STARTUP_TIMEOUT_S for w in starting]
        if until is not None:
            deadlines.append(until)
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        by_conn = {w.replies: w for w in busy + starting}
        for conn in wait(list(by_conn), timeout):
            w = by_conn[conn]
            try:
                reply = conn.recv()
            except (EOFError, OSError):
                self._replace(w, results, ExecResult("", _death_message(w.wait_exit())))
                continue
            if w.layers is None:
                w.layers = reply[1]
            else:
                output, error, timed_out = reply
                results[w.program] = ExecResult(output, error, timed_out)
                w.program = None
        now = time.monotonic()
        for w in list(self._workers):
            if w.program is not None and now > w.deadline:
                self._replace(w, results, ExecResult("", timeout_message(self.timeout_s), True), kill=True)
            elif w.layers is None and now > w.started + _STARTUP_TIMEOUT_S:
                self._replace(w, results, None, kill=True)

    def _replace(self, w: _Worker, results: dict[str, ExecResult], result: ExecResult | None,
                 kill: bool = False) -> None:
        if w.program is None:  # died or hung before serving anything: it cannot start here
            error = w.startup_error()
            w.stop(kill=True)
            self._workers.remove(w)
            self.close()
            raise RuntimeError(f"executor worker failed to start:\n{error}")
        results[w.program] = result
        self._respawn(w, kill)

    def _respawn(self, w: _Worker, kill: bool) -> None:
        w.program = None
        w.stop(kill=kill)
        self._workers[self._workers.index(w)] = _Worker(self._settings)
