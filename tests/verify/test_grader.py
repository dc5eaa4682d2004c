"""Answer extraction and equivalence: a hand-made table (with hard negatives) and deadlines."""

import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest

from rstar_jax.steps import extract_answer
from rstar_jax.verify import grader
from rstar_jax.verify.grader import is_equivalent


@pytest.mark.parametrize("text, answer", [
    ("so \\boxed{5}.", "5"),
    ("\\boxed{\\frac{1}{2}} then \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),          # last box
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("We get \\fbox{42}", "42"),
    ("\\boxed 7 is it", "7"),
    ("first \\boxed{1}, broken \\boxed{2", "1"),                                   # unmatched brace
    ("The answer is 42.", "42"),
    ("Thus, the final answer is $\\frac{1}{2}$. Done", "\\frac{1}{2}"),
    ("Answer: (B)", "(B)"),
    ("no answer here", None),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_extract_answer_without_fallbacks():
    assert extract_answer("The answer is 42.", fallbacks=False) is None


def test_gold_list_any_match():
    assert is_equivalent("3", ["2", "3"])
    assert not is_equivalent("4", ["2", "3"])
    assert not is_equivalent(None, "3")


def test_a_number_sympy_cannot_evaluate_is_unequal_not_an_error():
    # sympy's evalf raises PrecisionExhausted on this gold (a real omni answer).
    gold = r"2^{2015}+\left\lfloor\left(\frac{3}{2}\right)^{2015}\right\rfloor-2"
    assert is_equivalent("-987654.3", gold) is False


@pytest.mark.parametrize("pred, gold", [
    ("(a+b+c+d)^{30}", "(a+b+c-d)^{30}"),   # symbolic expansion
    ("3^{3^{20}}", "1"),                     # a number with billions of digits
])
def test_pathological_expressions_hit_the_deadline(pred, gold):
    handler = signal.getsignal(signal.SIGALRM)
    assert is_equivalent(pred, gold, timeout_s=0.5) is False
    assert signal.getsignal(signal.SIGALRM) is handler
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert is_equivalent("\\frac{1}{2}", "0.5")  # grading still works after an interruption


def test_the_deadline_counts_the_graders_cpu_time_not_the_wall_clock(monkeypatch):
    # A check that waits (a busy machine, a descheduled thread) past the budget without using
    # CPU still finishes: the old wall-clock deadline graded this right answer False.
    def slow_but_idle(pred, golds):
        time.sleep(0.6)
        return True

    monkeypatch.setattr(grader, "_equivalent", slow_but_idle)
    assert grader.grade("1", "1", timeout_s=0.2) is True


def test_a_check_out_of_cpu_time_is_unknown_not_wrong():
    assert grader.grade("(a+b+c+d)^{30}", "(a+b+c-d)^{30}", timeout_s=0.3) is None
    assert is_equivalent("(a+b+c+d)^{30}", "(a+b+c-d)^{30}", timeout_s=0.3) is False
    assert grader.grade(None, "1") is False


def test_a_starved_check_is_retried_then_unknown(monkeypatch):
    monkeypatch.setattr(grader, "WALL_BACKSTOP_S", 0.2)
    monkeypatch.setattr(grader, "_wall_s", lambda cpu_s: grader.WALL_BACKSTOP_S)
    calls = []

    def starved_once(pred, golds):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.5)  # past the wall-clock backstop
        return True

    monkeypatch.setattr(grader, "_equivalent", starved_once)
    assert grader.grade("1", "1", timeout_s=5.0) is True and len(calls) == 2

    def always_starved(pred, golds):
        time.sleep(0.5)
        return True

    monkeypatch.setattr(grader, "_equivalent", always_starved)
    assert grader.grade("1", "1", timeout_s=5.0) is None


def test_first_check_with_a_short_deadline_in_a_fresh_process():
    """math-verify's first import takes seconds; a deadline must not cut it half-way."""
    code = ("from rstar_jax.verify.grader import is_equivalent\n"
            "assert not is_equivalent('(a+b+c+d)^{30}', '(a+b+c-d)^{30}', timeout_s=0.2)\n"
            "assert is_equivalent('\\\\frac{1}{2}', '0.5')")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=pathlib.Path(__file__).parents[2])


def test_works_off_the_main_thread():
    results = []
    thread = threading.Thread(target=lambda: results.append(
        (is_equivalent("\\frac{1}{2}", "0.5"), is_equivalent("0.5", "\\frac{1}{3}"))))
    thread.start()
    thread.join()
    assert results == [(True, False)]


# Hand-made (pred, gold, expected) cases by family; hard negatives included.
T, F = True, False

CASES = [
    # --- identical and trivially different strings
    ("5", "5", T), ("5", " 5 ", T), ("-3", "-3", T), ("0", "-0", T), ("Yes", "yes", T),
    ("\\text{yes}", "yes", T), ("5.", "5", T), ("$5$", "5", T), ("\\$5", "5", T), ("5", "6", F),
    ("12", "21", F), ("2", "-2", F), ("1000", "100", F), ("\\text{no}", "yes", F),
    # --- fractions and decimals
    ("\\frac{1}{2}", "0.5", T), ("0.5", "\\frac{1}{2}", T), ("\\dfrac{1}{2}", "\\frac{1}{2}", T),
    ("\\tfrac{3}{4}", "0.75", T), ("1/2", "\\frac{1}{2}", T), ("\\frac12", "\\frac{1}{2}", T),
    ("\\frac{2}{4}", "\\frac{1}{2}", T), ("-\\frac{1}{3}", "\\frac{-1}{3}", T),
    ("\\frac{7}{3}", "2\\frac{1}{3}", T), ("0.25", "\\frac14", T), ("\\frac{20}{3}", "6.6667", T),
    ("0.5", "\\frac{1}{3}", F), ("\\frac{1}{2}", "2", F), ("\\frac{3}{4}", "\\frac{4}{3}", F),
    ("0.33", "\\frac{1}{3}", F), ("\\frac{1}{3}", "0.3", F), ("-\\frac{1}{2}", "\\frac{1}{2}", F),
    # --- numeric tolerance (relative 1e-4), integers exact
    ("3.14159", "\\pi", T), ("3.1416", "\\pi", T), ("1.41421", "\\sqrt{2}", T),
    ("2.71828", "e", T), ("0.333333", "\\frac{1}{3}", T), ("1.00001", "1.0", T),
    ("3.14", "\\pi", F), ("1.4", "\\sqrt{2}", F), ("10001", "10000", F), ("999999", "1000000", F),
    ("2.5", "2.6", F), ("0.001", "0.002", F),
    # --- thousands separators and number formats
    ("1,000", "1000", T), ("1000", "1,000", T), ("1,234,567", "1234567", T), ("1\\,000", "1000", T),
    ("1{,}000", "1000", T), ("1.5\\times10^{3}", "1500", T), ("2^{10}", "1024", T),
    ("10^{3}", "1000", T), ("1,001", "1000", F), ("1.5\\times10^{3}", "150", F),
    # --- percentages (lenient when either side is a percentage)
    ("50\\%", "50", T), ("50", "50\\%", T), ("0.5", "50\\%", T), ("50\\%", "0.5", T),
    ("12.5%", "12.5", T), ("25", "0.25", F), ("50\\%", "5", F), ("40\\%", "0.5", F),
    ("1", "100\\%", T), ("100\\%", "1", T), ("\\frac{3}{1}", "300\\%", T), ("1", "100", F), ("3", "200\\%", F),
    # --- units, text, degrees, dollars
    ("5 cm", "5", T), ("5\\text{ cm}", "5", T), ("5", "5\\text{ cm}", T), ("12 \\text{inches}", "12", T),
    ("\\$12.50", "12.50", T), ("12.5 dollars", "12.5", T), ("90^\\circ", "90", T),
    ("90^{\\circ}", "90", T), ("90°", "90", T), ("45\\text{ degrees}", "45", T),
    ("\\text{Monday}", "Monday", T), ("3 \\text{ hours}", "3", T), ("18\\text{ square units}", "18", T),
    ("\\mbox{7 days}", "7", T), ("5 cm", "6", F), ("90^\\circ", "45", F), ("\\text{Tuesday}", "Monday", F),
    ("25\\text{ cm}^2", "25", T), ("2,500 \\text{ m}^2", "2500", T), ("7\\text{ cm}^{3}", "7", T),
    ("25 cm^2", "25", T), ("25\\text{ cm}^2", "26", F),
    # --- \left / \right and spacing
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", T),
    ("\\left[1, 2\\right]", "[1,2]", T), ("x + 1", "x+1", T), ("2 \\sqrt{2}", "2\\sqrt{2}", T),
    # --- intervals
    ("(1,2)", "[1,2]", F), ("[1,2)", "[1,2]", F), ("(1,2]", "(1,2)", F),
    ("(-\\infty, 3]", "(-\\infty,3]", T), ("(0,\\infty)", "(0, \\infty)", T),
    ("[-2,5]", "[-2, 5]", T), ("(-\\infty,-1)\\cup(1,\\infty)", "(-\\infty,-1) \\cup (1,\\infty)", T),
    ("(-\\infty,-1)\\cup(1,\\infty)", "(-\\infty,-1]\\cup[1,\\infty)", F), ("[0,1]", "[0,2]", F),
    ("(2,5)", "(2, 5.0)", T),
    # --- tuples and points
    ("(1,2)", "(1, 2)", T), ("(1,2)", "(2,1)", F), ("(0.5, 2)", "(\\frac{1}{2}, 2)", T),
    ("(3, 4, 5)", "(3,4,5)", T), ("(3, 4, 5)", "(3,4,6)", F), ("(1,2)", "(1,2,3)", F),
    # --- sets
    ("\\{1,2\\}", "\\{2,1\\}", T), ("\\{1,2,3\\}", "\\{3, 2, 1\\}", T), ("\\{1,2\\}", "\\{1,3\\}", F),
    ("\\{-1, 1\\}", "\\{1, -1\\}", T),
    # --- matrices and vectors
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", T),
    ("\\begin{pmatrix}1&0\\\\0&1\\end{pmatrix}", "\\begin{bmatrix}1&0\\\\0&1\\end{bmatrix}", T),
    ("\\begin{pmatrix}0.5\\\\2\\end{pmatrix}", "\\begin{pmatrix}\\frac{1}{2}\\\\2\\end{pmatrix}", T),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}2\\\\1\\end{pmatrix}", F),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&3\\\\2&4\\end{pmatrix}", F),
    ("\\begin{pmatrix} -18 \\\\ -49 \\\\ 96 \\end{pmatrix}", "\\begin{pmatrix}-18\\\\-49\\\\96\\end{pmatrix}", T),
    # --- equations and assignments
    ("x=3", "3", T), ("3", "x=3", T), ("x = 3", "3", T), ("y = 2x + 1", "2x+1", T),
    ("y=2x+1", "y=1+2x", T), ("x^2+y^2=1", "y^2+x^2=1", T), ("x=2", "y=2", F), ("x=3", "4", F),
    ("y=2x+1", "y=2x-1", F), ("k = \\frac{1}{2}", "0.5", T), ("a_1 = 5", "5", T),
    # --- algebraic and symbolic forms
    ("\\sqrt{8}", "2\\sqrt{2}", T), ("\\sqrt2", "\\sqrt{2}", T), ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2", T),
    ("x^2-1", "(x-1)(x+1)", T), ("(x+1)^2", "x^2+2x+1", T), ("2x+2", "2(x+1)", T),
    ("\\frac{x}{2}", "0.5x", T), ("\\binom{5}{2}", "10", T), ("5!", "120", T), ("e^{2}", "e^2", T),
    ("\\log_2 8", "3", T), ("\\sin^2 x + \\cos^2 x", "1", T), ("\\frac{\\pi}{6}", "30^\\circ", F),
    ("\\sqrt{2}", "2", F), ("x+1", "x-1", F), ("x^2", "x^3", F), ("2\\pi", "\\pi", F),
    ("\\frac{\\pi}{2}", "\\frac{\\pi}{3}", F), ("\\sqrt{3}", "\\sqrt{2}", F), ("a+b", "a-b", F),
    # --- complex numbers
    ("1+2i", "2i+1", T), ("3-4i", "3+4i", F), ("1+i", "i+1", T), ("2i", "-2i", F),
    # --- infinity
    ("\\infty", "\\infty", T), ("-\\infty", "\\infty", F),
    # --- multiple choice
    ("A", "A", T), ("(A)", "A", T), ("\\text{(B)}", "B", T), ("B", "(B)", T), ("The answer is (C)", "C", T),
    ("(D) 12", "D", T), ("A", "B", F), ("(E)", "A", F), ("C", "\\text{(D)}", F), ("A or B", "A", F),
    ("ACD", "ACD", T), ("A, C, D", "ACD", T), ("A, C", "ACD", F),
    # --- lists of answers and ordering inside
    ("2, 3", "3, 2", T), ("1, 2", "1, 3", F), ("-2, 2", "\\pm 2", T),
    # --- odd and empty inputs
    ("", "5", F), ("   ", "5", F), ("\\boxed{}", "5", F), ("\\frac{1}{0}", "1", F),
]


def test_the_table_is_large_and_has_hard_negatives():
    assert len(CASES) >= 150
    assert sum(not expected for _, _, expected in CASES) >= 50


@pytest.mark.parametrize("pred, gold, expected", CASES)
def test_equivalence_table(pred, gold, expected):
    assert is_equivalent(pred, gold) is expected
