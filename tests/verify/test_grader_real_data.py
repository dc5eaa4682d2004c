"""The grader on every benchmark's gold answers (../shared/eval_data/*.json from the repo root).

Each gold answer must equal itself, be extracted back from `\\boxed{gold}` inside a sentence, and
survive mechanical rewrites (spacing, `\\left`/`\\right`, `\\dfrac`). All ~16k problems are
checked: most answers are settled by the normalised string comparison, so this takes seconds.
"""

import json
import pathlib
import re

import pytest

from rstar_jax.steps import extract_answer
from rstar_jax.verify.grader import is_equivalent

DATA = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "eval_data"
SETS = ("GSM8K", "MATH", "math500", "aime2024", "amc23", "collegemath", "gaokao2023en",
        "olympiadbench", "omni")


def gold_answers(name: str) -> list[str]:
    path = DATA / f"{name}_test.json"
    if not path.exists():
        pytest.skip(f"benchmark data not found at {path} (it lives outside the repository)")
    return [str(record["answer"]) for record in json.loads(path.read_text())]


def rewrites(gold: str) -> list[str]:
    """Meaning-preserving rewrites a model might produce."""
    return [
        re.sub(r",(?!\\!|\}|\d{3}\b)\s*", ", ", re.sub(r"\s*([=+])\s*", r" \1 ", gold)),  # spacing
        re.sub(r"\\(left|right)(?![a-zA-Z])", "", gold),                 # no \left / \right
        re.sub(r"\\frac(?![a-z])", r"\\dfrac", gold),                   # \dfrac
    ]


def balanced(latex: str) -> bool:
    """Whether the group braces balance (escaped `\\{`, `\\}` do not count)."""
    depth = 0
    for token in re.findall(r"\\.?|[{}]", latex, flags=re.DOTALL):
        if token == "\\":  # a trailing lone backslash would escape the box's closing brace
            return False
        depth += {"{": 1, "}": -1}.get(token, 0)
        if depth < 0:
            return False
    return depth == 0


def check(gold: str) -> None:
    assert is_equivalent(gold, gold), gold
    if not balanced(gold):  # a handful of omni golds are truncated: no box can hold them
        return
    sentence = f"Putting it together, the result is $\\boxed{{{gold}}}$. We are done."
    extracted = extract_answer(sentence)
    # a few golds hold a \boxed{} themselves: the last box is the inner one, as in the original
    assert extracted == (extract_answer(gold) if "\\boxed" in gold else gold.strip()), gold
    assert is_equivalent(extracted, gold), gold
    for rewritten in rewrites(gold):
        assert is_equivalent(rewritten, gold), (rewritten, gold)


@pytest.mark.parametrize("name", SETS)
def test_gold_answers(name):
    for gold in gold_answers(name):
        check(gold)
