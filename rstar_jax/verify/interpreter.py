"""rStar's Python-tool semantics (spec §2.5): what a program's "output" is, run in-process.

The executor's workers call `execute`; it is pure Python so the output rules can be tested without
processes. The rules are those of the original's `python_tool.py` `_base_run`:
- 0 or 1 top-level print statements: run all statements but the last with stdout discarded, then
  the last one with stdout captured; the output is its value if it is an expression with a
  non-None value, else the captured stdout (so `x=5; print(x); y=3` gives '').
- 2+ print statements: the program is cut after each print and each piece run the same way (stdout
  of the piece's last statement only); each piece writes `"{print arguments}: {stdout}"` (e.g.
  `"a is:", a: a is: 1`), as the released SFT data shows. Statements after the last print never run
  (`zip([-1] + print_indexs, print_indexs)` in the original), so `print(1)\nprint(2)\nz=undefined`
  gives `1: 1\n2: 2`, not a NameError.
- A print node is a top-level `print(...)` call, or an `if`/`while`/`for`/`def` whose body (not its
  `else`) holds one at any depth.
- `truncate_string` per piece: a string that parses as a float becomes `round(x, 4)` + newline
  unless the string is shorter; a value that is not a string (`x = 1/3; x`) is left as it is; over
  1024 characters keeps the first and last 512. The joined output is then stripped (the original's
  `str(tool(...)).strip()` in `tree.py`), and not cut again. Errors become `"ExcType: message"`.
Deliberate differences: when evaluating the last expression raises, the original executed the
statement a second time; we report the error without running it twice. Errors are cut at 1024
characters like outputs (the original sends them whole), so no program can flood the pipe.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import signal

MAX_OUTPUT_CHARS = 1024
_KEEP = MAX_OUTPUT_CHARS // 2
_PRINT_ARGS = re.compile(r"print\((.*?)\)")
_SANITIZE_HEAD = re.compile(r"^(\s|`)*(?i:python)?\s*")
_SANITIZE_TAIL = re.compile(r"(\s|`)*$")


class Timeout(BaseException):
    """Raised into the program when its time is up; a BaseException so `except Exception` in the
    program does not swallow it."""


def timeout_message(timeout_s: float) -> str:
    return f"TimeoutError: Execution of the code snippet has timed out for exceeding {timeout_s:g} seconds."


class CappedOutput(io.TextIOBase):
    """A stdout replacement that keeps the head and tail of what is written, so printing gigabytes
    costs no memory; `getvalue()` is already cut to first 512 + '...' + last 512 when too long."""

    def __init__(self) -> None:
        self._head: list[str] = []
        self._head_len = 0
        self._tail = ""
        self._total = 0

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self._total += len(s)
        if self._head_len <= MAX_OUTPUT_CHARS:
            self._head.append(s)
            self._head_len += len(s)
        self._tail = (self._tail + s)[-_KEEP:]
        return len(s)

    def getvalue(self) -> str:
        head = "".join(self._head)
        if self._total <= MAX_OUTPUT_CHARS:
            return head
        return head[:_KEEP] + "..." + self._tail


def truncate(value: object) -> str:
    """The original's `truncate_string`: a string that parses as a float is rounded to 4 places
    (`round(x, 4)` + newline, kept unless the string is shorter); a non-string value is not
    rounded; anything over 1024 characters keeps the first and last 512."""
    if isinstance(value, str):
        try:
            rounded = f"{round(float(value), 4)}\n"
            if len(value) >= len(rounded):
                value = rounded
        except (ValueError, OverflowError):
            pass
    text = str(value)
    if len(text) > MAX_OUTPUT_CHARS:
        text = text[:_KEEP] + "..." + text[-_KEEP:]
    return text


def format_output(text: str) -> str:
    """One output string as the policy sees it: `truncate` + strip."""
    return truncate(text).strip()


def sanitize(code: str) -> str:
    """Strip leading backticks/whitespace/"python" and trailing backticks/whitespace."""
    return _SANITIZE_TAIL.sub("", _SANITIZE_HEAD.sub("", code))


def _contains_print(node: ast.AST) -> bool:
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        func = node.value.func
        if isinstance(func, ast.Name) and func.id == "print":
            return True
    if isinstance(node, (ast.If, ast.While, ast.For, ast.FunctionDef)):
        return any(_contains_print(child) for child in node.body)  # `body` only, as the original
    return False


def _exec(nodes: list[ast.stmt], namespace: dict, stdout: io.TextIOBase) -> None:
    code = compile(ast.Module(nodes, type_ignores=[]), "<string>", "exec")
    with contextlib.redirect_stdout(stdout):
        exec(code, namespace)


def _run_piece(nodes: list[ast.stmt], namespace: dict) -> str:
    """The original's `_sub_run`: all but the last statement with stdout discarded, then the last
    one captured; its value if it is an expression with a non-None value, else its stdout."""
    if len(nodes) > 1:
        _exec(nodes[:-1], namespace, CappedOutput())
    out = CappedOutput()
    last = nodes[-1]
    if isinstance(last, ast.Expr):
        with contextlib.redirect_stdout(out):
            value = eval(compile(ast.Expression(last.value), "<string>", "eval"), namespace)
        return truncate(out.getvalue() if value is None else value)
    _exec([last], namespace, out)
    return truncate(out.getvalue())


def run_program(code: str, namespace: dict) -> str:
    """The output of `code` run in `namespace`, each piece truncated, not yet stripped;
    exceptions propagate."""
    code = sanitize(code)
    body = ast.parse(code, "<string>").body
    if not body:
        return ""
    prints = [i for i, node in enumerate(body) if _contains_print(node)]
    if len(prints) <= 1:
        return _run_piece(body, namespace)
    pieces, start = [], 0
    for i in prints:  # what follows the last print never runs, as in the original
        output = _run_piece(body[start:i + 1], namespace)
        source = ast.get_source_segment(code, body[i]) or ""
        args = _PRINT_ARGS.findall(source)
        pieces.append(f"{' '.join(args) + ':' if args else ''} {output}")
        start = i + 1
    return "".join(pieces)


def _on_alarm(signum, frame):
    raise Timeout


_alarm_installed = False


def execute(code: str, namespace: dict, timeout_s: float) -> tuple[str, str | None, bool]:
    """Run `code` with a SIGALRM deadline; returns (output, error, timed_out), all formatted."""
    global _alarm_installed
    # (Re)install the handler on the first call and after any program that named `signal`, the
    # only way to replace it; getsignal() on every call would cost more than a trivial program.
    if not _alarm_installed:
        signal.signal(signal.SIGALRM, _on_alarm)
        _alarm_installed = True
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        try:
            output = run_program(code, namespace)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            _alarm_installed = "signal" not in code
    except Timeout:
        return "", timeout_message(timeout_s), True
    except BaseException as e:  # the program's own failure, SystemExit and KeyboardInterrupt included
        return "", format_output(f"{type(e).__name__}: {e}"), False
    return output.strip(), None, False
