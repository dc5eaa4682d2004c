"""Executor worker: warm imports, confinement, then one program at a time from a pipe.

Started by `Executor` as `python -m rstar_jax.verify.worker REQUEST_FD REPLY_FD SETTINGS_JSON` with
a scrubbed environment and the scratch dir as cwd. Each program gets a fresh namespace; the
process-wide state that math code commonly changes (numpy print options and error modes, decimal
and mpmath precision, recursion limit, cwd, environment, sys.path, warnings filters, stdio, the
builtins/math/cmath modules) is put back after every program and the scratch dir is emptied, so
nothing a program does is seen by the next one. The `random` and `numpy.random` generators are
re-seeded (0) after programs that mention "rand", so seeded or not, a program draws the same
numbers on any worker. Attributes patched onto other library modules are not undone.
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
import random
import resource
import shutil
import signal
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

    def restore(self, reseed: bool) -> None:
        """Put everything back; compare first where setting is the expensive part."""
        os.chdir(self.cwd)
        if os.environ != self.environ:
            os.environ.clear()
            os.environ.update(self.environ)
        sys.path[:] = self.path
        sys.setrecursionlimit(self.recursion_limit)
        if reseed:
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


def main() -> None:
    requests = Connection(int(sys.argv[1]), writable=False)
    replies = Connection(int(sys.argv[2]), readable=False)
    settings = json.loads(sys.argv[3])
    scratch = os.getcwd()
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
        state.restore(reseed="rand" in code)
        _empty(scratch)
        replies.send(result)


if __name__ == "__main__":
    main()
