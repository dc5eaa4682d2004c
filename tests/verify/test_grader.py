"""Answer extraction and equivalence: a hand-made table (with hard negatives) and deadlines."""

import threading

import pytest

from rstar_jax.verify.grader import extract_answer, is_equivalent


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


def test_works_off_the_main_thread():
    results = []
    thread = threading.Thread(target=lambda: results.append(
        (is_equivalent("\\frac{1}{2}", "0.5"), is_equivalent("0.5", "\\frac{1}{3}"))))
    thread.start()
    thread.join()
    assert results == [(True, False)]
