"""Final answers: extraction from generated text and time-limited equivalence with the gold answer.

`is_equivalent` is math-verify (HF's sympy/latex2sympy verifier, tried in both argument orders)
after the normalisations the original's checker stack adds (spec §7): `\\text{}` and units,
degrees, `\\%` and `$`, `\\dfrac`/`\\tfrac`, thousands separators, `x = 3` against `3`, multiple
choice letters, a relative tolerance of 1e-4 (percentage-lenient when either side is a percentage;
integers must match exactly, unlike the original, so 10000 and 10001 stay different).
Every check runs under a deadline on the grader's own work, not on the machine's load: the CPU
time of the grading thread (`time.thread_time`), checked by a SIGALRM tick on the main thread, or
in a killable helper process from other threads (math-verify's own signal-based timeouts only work
on the main thread). A wall-clock backstop, far above the CPU budget, catches a starved or stuck
check. `grade` says None ("unknown") when either runs out, and retries once first when only the
wall clock ran out, so a right answer is never graded wrong because the machine was busy.
(The original has no internal timeout; its callers' pebble pools give 60 s of wall time, spec §7.)
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import math
import multiprocessing
import re
import signal
import threading
import time
from collections.abc import Iterator, Sequence

from rstar_jax.steps import extract_answer

DEFAULT_TIMEOUT_S = 5.0  # CPU seconds of the grading thread
WALL_BACKSTOP_S = 60.0  # wall seconds at least (the original's search pool timeout), see _wall_s
REL_TOL = 1e-4

# --------------------------------------------------------------------------------------------
# Normalisation (the parts of the original's `strip_string`/`math_equal` that math-verify lacks).
# --------------------------------------------------------------------------------------------

_UNITS = (
    "square units|square feet|square inches|square meters|square centimeters|sq units|units|unit|"
    "cm|mm|km|m|meters|meter|kg|g|mg|inches|inch|feet|foot|ft|yards|yard|miles|mile|mph|"
    "hours|hour|minutes|minute|seconds|second|days|day|weeks|week|years|year|"
    "degrees|degree|dollars|dollar|cents|cent|points|point|people|students|pounds|pound"
)
_POWER = r"(?:\^\{?[23]\}?)?"  # square and cubic units: cm^2, m^{3}
_TRAILING_TEXT = re.compile(rf"^(.*?\S)\s*\\(?:text|mbox|mathrm)\{{[^{{}}]*\}}{_POWER}\s*$", re.DOTALL)
_TRAILING_UNIT = re.compile(rf"^([-+]?[\d.,/]*\d)\s*(?:{_UNITS}){_POWER}\.?$", re.IGNORECASE)
_WRAPPER = re.compile(r"\\(?:text|mbox|mathrm|textbf|mathbf)\{([^{}]*)\}")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_CHOICE = re.compile(r"^\(?([A-E])\)?$")
_DECIMAL = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)$")
_INTEGER = re.compile(r"^[-+]?\d+$")
_CHOICES = re.compile(r"^[A-E]{2,}$")  # several correct options, e.g. "ACD"
_EQUATION_LHS = re.compile(r"^\s*([a-zA-Z](?:_\{?\w+\}?)?)\s*=\s*(?!.*=)(.+)$", re.DOTALL)


def _normalise(answer: str) -> tuple[str, bool]:
    """A canonical string for `answer`, and whether it was written as a percentage."""
    s = answer.strip()
    s = re.sub(r"^\\\[(.*)\\\]$|^\\\((.*)\\\)$", lambda m: m.group(1) or m.group(2) or "", s, flags=re.DOTALL)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\left\b|\\right\b", "", s)
    s = re.sub(r"(?<!\\)\\[,!;: ]|~|\{,\}", lambda m: "," if m.group() == "{,}" else "", s)
    s = re.sub(r"\^\s*\{?\\circ\}?|°|\\degree", "", s)
    s = s.replace("\\$", "").replace("$", "")
    percent = "%" in s
    s = s.replace("\\%", "").replace("%", "")
    while (m := _TRAILING_TEXT.match(s)) and not _CHOICE.match(m.group(1).strip()):
        s = m.group(1)
    s = _WRAPPER.sub(r"\1", s).strip()
    if m := _TRAILING_UNIT.match(s):
        s = m.group(1)
    s = s.rstrip(".").strip()
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    return s, percent


def _squash(s: str) -> str:
    """Without any whitespace: the original's string comparison ignored spaces."""
    return re.sub(r"\s+", "", s)


def _choice(answer: str) -> str | None:
    """The option letter A-E a multiple-choice answer names, if it names exactly one."""
    s = _WRAPPER.sub(r"\1", answer).strip().strip("$").strip()
    if m := _CHOICE.match(s):
        return m.group(1)
    letters = re.findall(r"\(([A-E])\)|\b([A-E])\b", s)
    found = {a or b for a, b in letters}
    return found.pop() if len(found) == 1 else None


def _split_equation(s: str) -> tuple[str | None, str]:
    """`x = 3` -> ('x', '3'); anything else -> (None, s)."""
    m = _EQUATION_LHS.match(s)
    return (m.group(1), m.group(2).strip()) if m else (None, s)


# --------------------------------------------------------------------------------------------
# Comparison.
# --------------------------------------------------------------------------------------------


class _DropTimerWarning(logging.Filter):
    """math-verify warns once that its timers are off; ours replace them (see `_deadline`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimerWarning())


@functools.cache
def _math_verify():
    """math_verify, imported and exercised once on first use (sympy and antlr take seconds), never
    under a deadline: an import cut short by the alarm leaves the parser half-initialised."""
    import math_verify

    warm = math_verify.parse("$\\frac{1}{2}$", parsing_timeout=None)
    math_verify.verify(warm, warm, timeout_seconds=None)
    return math_verify


@functools.lru_cache(maxsize=4096)  # a gold is compared with many candidates
def _parse(s: str) -> tuple:
    """The sympy value of an answer (math-verify's LaTeX/expression parser), or ()."""
    # Our deadline covers the whole check, so math-verify's own timers stay off. Its string
    # fallback (second element) is dropped: string equality is checked before.
    return tuple(_math_verify().parse("\\boxed{" + s + "}", parsing_timeout=None)[:1])


def _close(x: complex, y: complex, percent: bool) -> bool:
    """Relative 1e-4 (and x100, /100 when a side is a percentage)."""
    scales = (1.0, 100.0, 0.01) if percent else (1.0,)
    return any(math.isclose(x.real, y.real * k, rel_tol=REL_TOL, abs_tol=1e-12)
               and math.isclose(x.imag, y.imag * k, rel_tol=REL_TOL, abs_tol=1e-12) for k in scales)


def _integers_equal(a: int, b: int, percent: bool) -> bool:
    """Exact (and x100, /100 when a side is a percentage)."""
    return a == b or percent and (a == 100 * b or 100 * a == b)


def _numbers_close(a, b, percent: bool) -> bool:
    """Numeric equality of two sympy values: exact for integers, `_close` otherwise."""
    import sympy

    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr) and a.is_number and b.is_number):
        return False
    if a.is_Integer and b.is_Integer:
        return _integers_equal(int(a), int(b), percent)
    try:
        return _close(complex(sympy.N(a, 20)), complex(sympy.N(b, 20)), percent)
    except (TypeError, ValueError, ArithmeticError):  # ArithmeticError: sympy's PrecisionExhausted
        return False


def _decimals_equal(pred: str, gold: str, percent: bool) -> bool:
    """The same rule for two plain decimal numbers, without sympy."""
    if _INTEGER.match(pred) and _INTEGER.match(gold):
        return _integers_equal(int(pred), int(gold), percent)
    return _close(float(pred), float(gold), percent)


def _math_equal(pred: str, gold: str, percent: bool) -> bool:
    """math-verify in both orders, then the numeric tolerance on the parsed values."""
    verify = _math_verify().verify
    p, g = _parse(pred), _parse(gold)
    if not p or not g or isinstance(p[0], str) or isinstance(g[0], str):
        return False
    if verify(list(g), list(p), timeout_seconds=None) or verify(list(p), list(g), timeout_seconds=None):
        return True
    return _numbers_close(p[0], g[0], percent)


def _unbox(answer: str) -> str:
    """A whole solution or a boxed answer reduces to the box content (some golds are boxed)."""
    return extract_answer(answer, fallbacks=False) if "\\boxed" in answer or "\\fbox" in answer else answer


def _equivalent_one(pred: str, gold: str) -> bool:
    if pred.strip() == gold.strip():
        return True
    pred, gold = _unbox(pred) or "", _unbox(gold) or ""
    bare_gold = _WRAPPER.sub(r"\1", gold).strip().strip("$").strip()
    if gold_choice := _CHOICE.match(bare_gold):
        return _choice(pred) == gold_choice.group(1)
    if _CHOICES.match(bare_gold):
        return "".join(sorted(re.findall(r"\b[A-E]\b", pred))) == "".join(sorted(bare_gold))
    (p, p_pct), (g, g_pct) = _normalise(pred), _normalise(gold)
    if p and (p.casefold() == g.casefold() or _squash(p) == _squash(g)):
        return True
    (p_var, p_rhs), (g_var, g_rhs) = _split_equation(p), _split_equation(g)
    if p_var and g_var:
        if p_var != g_var:
            return False
    elif p_var or g_var:  # `x = 3` against `3`: compare the right-hand side
        p, g = p_rhs, g_rhs
    if _DECIMAL.match(p) and _DECIMAL.match(g):
        return _decimals_equal(p, g, p_pct or g_pct)
    return bool(p and g) and _math_equal(p, g, p_pct or g_pct)


def _equivalent(pred: str | None, golds: Sequence[str]) -> bool:
    return pred is not None and any(_equivalent_one(pred, g) for g in golds)


# --------------------------------------------------------------------------------------------
# Deadlines.
# --------------------------------------------------------------------------------------------


class _Deadline(BaseException):
    """Raised by the timer; a BaseException so sympy's and math-verify's `except Exception` don't
    swallow it. `wall` tells whether the wall-clock backstop (not the CPU budget) ran out."""

    def __init__(self, wall: bool):
        super().__init__(wall)
        self.wall = wall


def _wall_s(cpu_s: float) -> float:
    """The wall-clock backstop for a CPU budget: generous, so only a starved or stuck check hits it."""
    return max(WALL_BACKSTOP_S, 10.0 * cpu_s)


@contextlib.contextmanager
def _deadline(cpu_s: float, wall_s: float) -> Iterator[None]:
    """Raises `_Deadline` once this thread has used `cpu_s` seconds of CPU, or `wall_s` have passed.

    A thread's CPU time never runs ahead of the wall clock, so the first SIGALRM comes after
    `cpu_s` wall seconds, then every 50 ms (which also covers library code that swallows one)."""

    armed = True
    cpu0, wall0 = time.thread_time(), time.monotonic()

    def on_alarm(signum, frame):
        if not armed:
            return
        if time.thread_time() - cpu0 >= cpu_s:
            raise _Deadline(wall=False)
        if time.monotonic() - wall0 >= wall_s:
            raise _Deadline(wall=True)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, min(cpu_s, wall_s), 0.05)
    try:
        yield
    finally:
        try:
            armed = False
        finally:  # runs even if the alarm fired just before `armed = False`
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def _grade_here(pred: str | None, golds: list[str], cpu_s: float, wall_s: float) -> bool | None:
    """One check on the main thread: True / False, or None when a deadline ran out; a wall-clock
    run-out is retried once (the thread was starved, not busy)."""
    _math_verify()
    for attempt in range(2):
        try:
            with _deadline(cpu_s, wall_s):
                return _equivalent(pred, golds)
        except _Deadline as out:
            if not out.wall:
                return None
    return None


_pool = None
_pool_lock = threading.Lock()


def _grade_in_helper(pred: str | None, golds: list[str], cpu_s: float, wall_s: float) -> bool | None:
    """Run the check in a helper process (off the main thread signals are unavailable)."""
    global _pool
    with _pool_lock:  # one helper, one check at a time
        if _pool is None:
            _pool = multiprocessing.get_context("spawn").Pool(1)
            atexit.register(_pool.terminate)
        job = _pool.apply_async(_grade_here, (pred, golds, cpu_s, wall_s))
        try:
            return job.get(timeout=2 * wall_s + 30)  # the helper's retry and its start-up
        except multiprocessing.TimeoutError:
            _pool.terminate()  # stuck in C code that ignores the alarm
            _pool.join()
            _pool = None
            return None


def grade(pred: str | None, gold: str | Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> bool | None:
    """Whether the predicted answer equals the gold answer (any of them, if a list); None when
    the check could not finish: more than `timeout_s` seconds of the grader's CPU time, or the
    wall-clock backstop twice. False when `pred` is None. Safe on any thread."""
    golds = [gold] if isinstance(gold, str) else list(gold)
    if pred is None:
        return False
    if threading.current_thread() is not threading.main_thread():
        return _grade_in_helper(pred, golds, timeout_s, _wall_s(timeout_s))
    return _grade_here(pred, golds, timeout_s, _wall_s(timeout_s))


def is_equivalent(pred: str | None, gold: str | Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """`grade` as a plain bool: a check that could not finish counts as not equivalent.
    Callers that reward answers use `grade` and keep "unknown" apart."""
    return grade(pred, gold, timeout_s) is True
