"""Executor workers and the zygote process that forks them.

`Executor` starts the zygote as `python -m rstar_jax.verify.worker SOCKET_FD SETTINGS_JSON` with a
scrubbed environment. The zygote imports math/sympy/numpy/scipy once and forks a worker for each
request (a few ms instead of seconds of imports), reaps the workers and reports their exit
statuses. A worker confines itself (`sandbox.confine`) and then runs one program at a time from
its request pipe. The zygote protocol, over a SOCK_SEQPACKET socket (one pickle per message):
  parent -> zygote: scratch dir path, with the worker's request/reply pipe fds attached
  zygote -> parent: ("forked", pid) | ("exited", pid, exit code; negative: killed by signal)

Each program gets a fresh namespace; the process-wide state that math code commonly changes
(numpy print options and error modes, decimal and mpmath precision, recursion limit, cwd,
environment, sys.path, warnings filters, stdio, the builtins/math/cmath modules) is put back after
every program and the scratch dir is emptied, so nothing a program does is seen by the next one.
The environment is compared and the `random` and `numpy.random` generators re-seeded (0) only
after programs that name them ("env", "rand"), which keeps a trivial program cheap; seeded or
not, a program draws the same numbers on any worker.
Attributes patched onto other library modules are not undone.
"""

from __future__ import annotations

import builtins
import cmath
import decimal
import fractions  # noqa: F401  (warm import)
import itertools  # noqa: F401  (warm import)
import json
import math
import os
import pickle
import random
import select
import resource
import shutil
import signal
import socket
import sys
import warnings
from multiprocessing.connection import Connection

import mpmath
import numpy as np
import scipy.special  # noqa: F401  (warm import; scipy.optimize etc. load on first use)
import sympy  # noqa: F401  (warm import)
import sympy.abc  # noqa: F401  (warm import; programs often use `from sympy.abc import x`)

from rstar_jax.verify import interpreter, sandbox

_RESTORED_MODULES = (builtins, math, cmath)


class _ProcessState:
    """A snapshot of the process-wide state programs may change, and its restoration."""

    def __init__(self) -> None:
        self.cwd = os.getcwd()
        self.environ = dict(os.environ)
        self.path = list(sys.path)
        self.recursion_limit = sys.getrecursionlimit()
        self.np_print = np.get_printoptions()
        self.np_err = np.geterr()
        self.decimal = decimal.getcontext().copy()
        self.mp_prec = mpmath.mp.prec
        self.warnings = list(warnings.filters)
        self.stdio = (sys.stdin, sys.stdout, sys.stderr)
        self.modules = [(vars(m), dict(vars(m))) for m in _RESTORED_MODULES]

    def restore(self, code: str) -> None:
        """Put everything back after running `code`. The environment, costly to compare, is reset
        only when the program names it; the RNGs always (libraries draw from them unnamed)."""
        os.chdir(self.cwd)
        if "env" in code and os.environ != self.environ:
            os.environ.clear()
            os.environ.update(self.environ)
        sys.path[:] = self.path
        sys.setrecursionlimit(self.recursion_limit)
        _seed()
        if np.get_printoptions() != self.np_print:
            np.set_printoptions(**self.np_print)
        if np.geterr() != self.np_err:
            np.seterr(**self.np_err)
        decimal.setcontext(self.decimal.copy())
        mpmath.mp.prec = self.mp_prec
        warnings.filters[:] = self.warnings
        sys.stdin, sys.stdout, sys.stderr = self.stdio
        for live, saved in self.modules:
            if live != saved:
                live.clear()
                live.update(saved)


def _seed() -> None:
    random.seed(0)
    np.random.seed(0)


def _empty(directory: str) -> None:
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def serve(requests: Connection, replies: Connection, scratch: str, settings: dict) -> None:
    """Worker main loop: confine this process, then run programs until the parent hangs up."""
    os.chdir(scratch)
    os.environ.update(HOME=scratch, TMPDIR=scratch)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes raise OSError instead
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    layers = sandbox.confine(scratch, memory_mb=settings["memory_mb"],
                             max_file_mb=settings["max_file_mb"], kernel=settings["kernel"])
    _seed()
    sys.stdin = open(os.devnull)
    sys.stderr = interpreter.CappedOutput()  # warnings and tracebacks of programs are dropped
    state = _ProcessState()
    replies.send(("ready", layers))
    while True:
        try:
            code, timeout_s = requests.recv()
        except EOFError:
            return
        # CPU backstop for code the parent cannot reach in time (SIGXCPU ends the process).
        cpu_limit = int(_cpu_seconds() + timeout_s) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, resource.RLIM_INFINITY))
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        result = interpreter.execute(code, namespace, timeout_s)
        del namespace
        state.restore(code)
        _empty(scratch)
        replies.send(result)


def _fork_worker(sock: socket.socket, wakeup: tuple[int, int], scratch: str, fds: list[int],
                 settings: dict) -> int:
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        return pid
    status = 0
    try:  # the child keeps nothing of the zygote's plumbing
        sock.close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in wakeup:
            os.close(fd)
        serve(Connection(fds[0], writable=False), Connection(fds[1], readable=False), scratch, settings)
    except BaseException:
        import traceback

        traceback.print_exc()  # to the zygote's log, which the parent shows if a start fails
        status = 1
    os._exit(status)


def _reap(sock: socket.socket) -> bool:
    """Report every exited child; False once there are none left."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True
        sock.send(pickle.dumps(("exited", pid, os.waitstatus_to_exitcode(status))))


def main() -> None:
    """The zygote: fork workers on request until the parent closes the socket, then reap them."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    settings = json.loads(sys.argv[2])
    wakeup = os.pipe()
    os.set_blocking(wakeup[1], False)
    signal.set_wakeup_fd(wakeup[1])  # SIGCHLD wakes up the select below
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while True:
            readable, _, _ = select.select([sock, wakeup[0]], [], [])
            if wakeup[0] in readable:
                os.read(wakeup[0], 4096)
                _reap(sock)
            if sock in readable:
                message, fds, _, _ = socket.recv_fds(sock, 4096, 2)
                if not message:
                    break
                pid = _fork_worker(sock, wakeup, message.decode(), fds, settings)
                sock.send(pickle.dumps(("forked", pid)))
    except (BrokenPipeError, ConnectionResetError):
        pass
    while True:  # the parent is gone or closing: workers end when their request pipes close
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


if __name__ == "__main__":
    main()
