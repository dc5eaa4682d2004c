"""rStar's output rules (spec §2.5), in-process."""

import pytest

from rstar_jax.verify.interpreter import execute, format_output, sanitize


@pytest.mark.parametrize("code, expected", [
    ("1/3", "0.3333333333333333"),             # a value that is not a string is not rounded
    ("x = 1/3\nx", "0.3333333333333333"),
    ("'0.333333333'", "0.3333"),               # a string value is, as printed output is
    ("print(1/3)", "0.3333"),
    ("print(5)", "5"),                         # rounding only when shorter ("5.0" is not)
    ("x = 5\nprint(x)", "5"),
    ("x = 5\nprint(x)\ny = 3", ""),            # the single print is not last: output lost
    ("x = [1, 2]\nx", "[1, 2]"),
    ("import sympy\nsympy.Rational(2, 6)", "1/3"),
    ("def f():\n    print('in f')\n    return None\nf()", "in f"),   # value None -> stdout
    ("a=1\nprint(\"a is:\", a)\nb=a+1\nprint(b)", '"a is:", a: a is: 1\nb: 2'),  # multi-print
    ("for i in range(2):\n    print(i)\nprint('done')", "i: 0\n1\n'done': done"),
    ("print(1)\nprint(2)\nz = 3\nprint('tail')\nw = 4", "1: 1\n2: 2\n'tail': tail"),
    # statements after the last of 2+ prints never run (python_tool.py zips the print indices)
    ("print(1)\nprint(2)\nz = undefined", "1: 1\n2: 2"),
    ("print(1/3)\nprint(2/3)", "1/3: 0.3333\n2/3: 0.6667"),   # each print's output rounded
    ("print('1.00001')\nprint('a')", "'1.00001': 1.0\n'a': a"),
    ("print (1)\nprint (2)", "1\n 2"),      # no `print(` match: no label, the space remains
    # a piece keeps only its last statement's stdout
    ("def g():\n    return print('g')\ng()\nprint(1)\nprint(2)", "1: 1\n2: 2"),
    ("def g():\n    print('g')\ng()\nprint(1)\nprint(2)", "'g': 1: 1\n2: 2"),  # a def is a print node
    # only an if/while/for/def *body* makes a print node, not its else branch
    ("if True:\n    y = 1\nelse:\n    print(3)\nprint(4)", "4"),
    ("```python\nprint(7)\n```", "7"),         # markdown fences are sanitised
    ("", ""),
])
def test_outputs(code, expected):
    assert execute(code, {}, 5.0) == (expected, None, False)


@pytest.mark.parametrize("code, error", [
    ("1/0", "ZeroDivisionError: division by zero"),
    ("x = 1\ny = x + z", "NameError: name 'z' is not defined"),
    ("print(", "SyntaxError: '(' was never closed (<string>, line 1)"),
    ("raise ValueError('bad input')", "ValueError: bad input"),
    ("import sys\nsys.exit(1)", "SystemExit: 1"),
    ("raise KeyboardInterrupt", "KeyboardInterrupt:"),
])
def test_errors(code, error):
    assert execute(code, {}, 5.0) == ("", error, False)


def test_timeout_even_when_the_program_catches_exceptions():
    code = "while True:\n    try:\n        pass\n    except Exception:\n        pass"
    assert execute(code, {}, 0.2) == (
        "", "TimeoutError: Execution of the code snippet has timed out for exceeding 0.2 seconds.", True)


def test_timeout_survives_a_program_that_replaced_the_alarm_handler():
    execute("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)", {}, 5.0)
    assert execute("while True:\n    pass", {}, 0.2)[2] is True


def test_each_print_is_cut_alone_and_the_joined_output_is_not():
    output, error, _ = execute("print('x' * 3000)\nprint('y' * 3000)", {}, 5.0)
    assert error is None
    assert output == ("'x' * 3000: " + "x" * 512 + "..." + "x" * 511 + "\n"
                      + "'y' * 3000: " + "y" * 512 + "..." + "y" * 511)


def test_namespace_is_the_callers():
    namespace = {}
    execute("x = 3", namespace, 5.0)
    assert namespace["x"] == 3


@pytest.mark.parametrize("raw, formatted", [
    ("0.30000000000000004\n", "0.3"),
    ("2\n", "2"),
    ("1e-07\n", "0.0"),         # the original's rule: tiny floats round to 0.0 (shorter)
    ("nan\n", "nan"),
    ("x" * 2000, "x" * 512 + "..." + "x" * 512),
    ("  text  \n", "text"),
])
def test_format_output(raw, formatted):
    assert format_output(raw) == formatted


def test_sanitize():
    assert sanitize("```python\nx = 1\n```\n") == "x = 1"
    assert sanitize("  Python x = 1") == "x = 1"
