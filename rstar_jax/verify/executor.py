"""Sandboxed parallel execution of candidate programs (spec §2.5) in a pool of warm workers.

Workers are processes forked from a zygote that has math/sympy/numpy/scipy imported and was
started with a scrubbed environment (`rstar_jax.verify.worker`); each runs in its own scratch dir
and confines itself (`sandbox.confine`). A program runs inside a worker in a fresh namespace with
rStar's output formatting (`interpreter`); the parent only moves strings and keeps two programs
queued per worker, so a trivial program costs a fraction of a millisecond. The worker enforces
the timeout with SIGALRM and is replaced afterwards; if a program is still running
`kill_grace_s` later (stuck in C code, or swallowing the alarm) the parent kills the worker. A
worker that dies (`os._exit`, a segfault, a kill) yields an error result and is replaced by a
fresh fork within milliseconds; the pool keeps serving. Identical programs in one `run` are
executed once. `sys.exit` is an ordinary error.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait

import rstar_jax
from rstar_jax.verify.interpreter import timeout_message

_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(rstar_jax.__file__)))
_STARTUP_TIMEOUT_S = 120.0
_PIPELINE_DEPTH = 2


@dataclasses.dataclass(frozen=True)
class ExecResult:
    """What a program printed (formatted as the original), or why it failed."""

    output: str
    error: str | None = None  # "ExcType: message"; None when the program ran to completion
    timed_out: bool = False


def _zygote_env(home: str) -> dict[str, str]:
    """Nothing of the caller's environment (API keys...) reaches the zygote or the workers."""
    return {
        "PATH": os.defpath, "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8",
        "PYTHONPATH": _PACKAGE_PARENT, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    }


def _death_message(exit_code: int | None) -> str:
    if exit_code is None:
        how = "exit status unknown"
    elif exit_code < 0:
        how = f"signal {signal.Signals(-exit_code).name}"
    else:
        how = f"exit code {exit_code}"
    return f"WorkerDied: the program ended the worker process ({how})"


class _Zygote:
    """The process that forks warm workers (`rstar_jax.verify.worker.main`), and its exit reports."""

    def __init__(self, settings: dict) -> None:
        self.home = tempfile.mkdtemp(prefix="rstar_exec_")
        self.log = tempfile.TemporaryFile()
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rstar_jax.verify.worker", str(theirs.fileno()), json.dumps(settings)],
            pass_fds=(theirs.fileno(),), env=_zygote_env(self.home), cwd=self.home,
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        theirs.close()
        self.exit_codes: dict[int, int] = {}

    def _receive(self, timeout: float | None) -> tuple | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        if not data:
            raise RuntimeError(f"executor zygote process died:\n{self.log_tail()}")
        message = pickle.loads(data)
        if message[0] == "exited":
            self.exit_codes[message[1]] = message[2]
        return message

    def fork(self, scratch: str, fds: tuple[int, int]) -> int:
        """Start a worker in `scratch` talking over `fds`; returns its pid."""
        socket.send_fds(self.sock, [scratch.encode()], list(fds))
        while True:
            message = self._receive(_STARTUP_TIMEOUT_S)
            if message is None:
                raise RuntimeError(f"executor zygote did not answer:\n{self.log_tail()}")
            if message[0] == "forked":
                return message[1]

    def exit_code(self, pid: int) -> int | None:
        """The exit code of a worker that ended (waits briefly for the zygote's report)."""
        deadline = time.monotonic() + 5
        while pid not in self.exit_codes and time.monotonic() < deadline:
            self._receive(max(0.0, deadline - time.monotonic()))
        return self.exit_codes.pop(pid, None)

    def log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-4000:].decode(errors="replace")

    def close(self) -> None:
        self.sock.close()  # the zygote reaps its workers and exits
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)


class _Worker:
    """One worker process, its pipes and scratch dir, and the programs sent to it (in order)."""

    def __init__(self, zygote: _Zygote) -> None:
        self.zygote = zygote
        self.scratch = tempfile.mkdtemp(prefix="rstar_exec_")
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        try:
            self.pid = zygote.fork(self.scratch, (to_worker_r, from_worker_w))
        finally:
            os.close(to_worker_r)
            os.close(from_worker_w)
        self.requests = Connection(to_worker_w, readable=False)
        self.replies = Connection(from_worker_r, writable=False)
        self.started = time.monotonic()
        self.layers: list[str] | None = None  # set by the "ready" message
        self.in_flight: collections.deque[str] = collections.deque()  # [0] is running
        self.deadline = 0.0  # for in_flight[0]

    def submit(self, program: str, timeout_s: float, grace_s: float) -> None:
        self.in_flight.append(program)
        if len(self.in_flight) == 1:
            self.deadline = time.monotonic() + timeout_s + grace_s
        self.requests.send((program, timeout_s))

    def finished(self, timeout_s: float, grace_s: float) -> str:
        """The running program replied: pop it, start the clock of the next one."""
        self.deadline = time.monotonic() + timeout_s + grace_s
        return self.in_flight.popleft()

    def stop(self, kill: bool) -> int | None:
        """End the process (politely unless `kill`), remove its files; returns its exit code."""
        self.requests.close()
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.replies.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
        return self.zygote.exit_code(self.pid) if kill else None


def _stop_all(zygote: _Zygote, workers: list[_Worker]) -> None:
    for w in workers:
        w.stop(kill=bool(w.in_flight))
    workers.clear()
    zygote.close()


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
        for name, value in (("timeout_s", timeout_s), ("memory_mb", memory_mb), ("max_file_mb", max_file_mb)):
            if not value > 0:
                raise ValueError(f"Executor {name} must be positive, got {value!r}")
        self.timeout_s = timeout_s
        self.kill_grace_s = kill_grace_s
        self._settings = {"memory_mb": memory_mb, "max_file_mb": max_file_mb, "kernel": kernel_sandbox}
        self._lock = threading.Lock()  # one `run` at a time: workers are not shared between calls
        self._zygote = _Zygote(self._settings)
        self._workers: list[_Worker] = []
        self._finalizer = weakref.finalize(self, _stop_all, self._zygote, self._workers)
        for _ in range(num_workers or os.cpu_count() or 1):
            self._workers.append(_Worker(self._zygote))

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
            self._poll(time.monotonic() + _STARTUP_TIMEOUT_S, {}, collections.deque())

    @property
    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def run(self, programs: Sequence[str]) -> list[ExecResult]:
        """Execute each program (identical ones once) in parallel; results in input order."""
        with self._lock:
            return self._run(programs)

    def _run(self, programs: Sequence[str]) -> list[ExecResult]:
        if not self._workers:
            raise RuntimeError("Executor is closed")
        pending = collections.deque(dict.fromkeys(programs))
        results: dict[str, ExecResult] = {}
        total = len(pending)
        while len(results) < total:
            for w in list(self._workers):
                # Two in flight per worker: the next program is already waiting in the pipe when
                # one finishes, so a busy parent does not stall the workers.
                while pending and w.layers is not None and len(w.in_flight) < _PIPELINE_DEPTH:
                    try:
                        w.submit(pending.popleft(), self.timeout_s, self.kill_grace_s)
                    except OSError:  # died while idle (killed from outside): retry elsewhere
                        pending.extendleft(reversed(w.in_flight))
                        self._respawn(w)
                        break
            self._poll(None, results, pending)
        return [results[p] for p in programs]

    def _poll(self, until: float | None, results: dict[str, ExecResult],
              pending: collections.deque[str]) -> None:
        """Wait for replies (or deadlines), record results, replace dead or stuck workers."""
        busy = [w for w in self._workers if w.in_flight]
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
                self._replace(w, results, pending, None)
                continue
            if w.layers is None:
                w.layers = reply[1]
                continue
            result = results[w.finished(self.timeout_s, self.kill_grace_s)] = ExecResult(*reply)
            if result.timed_out:  # interrupted at an arbitrary point (an import, a cache update...):
                pending.extendleft(reversed(w.in_flight))  # do not trust that process again
                self._respawn(w)
        now = time.monotonic()
        for w in list(self._workers):
            if w.in_flight and now > w.deadline:
                self._replace(w, results, pending, ExecResult("", timeout_message(self.timeout_s), True))
            elif w.layers is None and now > w.started + _STARTUP_TIMEOUT_S:
                self._replace(w, results, pending, None)

    def _replace(self, w: _Worker, results: dict[str, ExecResult], pending: collections.deque[str],
                 result: ExecResult | None) -> None:
        """Kill `w`, record `result` (None: the worker died by itself) for the program it was
        running, send its queued programs back to `pending` and start a new worker in its place."""
        if not w.in_flight:  # died or hung before serving anything: it cannot start here
            w.stop(kill=True)
            self._workers.remove(w)
            error = self._zygote.log_tail()
            self.close()
            raise RuntimeError(f"executor worker failed to start:\n{error}")
        running, *queued = w.in_flight
        pending.extendleft(reversed(queued))
        exit_code = self._respawn(w)
        results[running] = result or ExecResult("", _death_message(exit_code))

    def _respawn(self, w: _Worker) -> int | None:
        """Kill `w` and put a new worker in its place; returns `w`'s exit code."""
        exit_code = w.stop(kill=True)
        self._workers[self._workers.index(w)] = _Worker(self._zygote)
        return exit_code
