"""rStar's code-augmented chain-of-thought step format (spec §2).

Special tokens, stop strings and prompt templates. Rendering and parsing of steps live here too,
and `NodeKind`, what a search node turned out to be, with the sentinel answers of its terminals.
"""

from __future__ import annotations

import dataclasses
import enum
import random
import re
from collections.abc import Sequence
from typing import Literal


CODE = "<code>"
STEP_END = "<end_of_step>"
CODE_END = "<end_of_code>"
OUTPUT = "<output>"
OUTPUT_END = "<end_of_output>"
ANSWER = "<answer>"
ANSWER_END = "<end_of_answer>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
REFINE = "<refine>"
REFINE_END = "<end_of_refine>"
NEWLINE_ASSISTANT = "\n<|assistant|>"  # one atomic token, leading newline included
ERROR_INFO = "<error_info>"
ERROR_INFO_END = "<end_of_error_info>"
BACK = "<BACK>"

# The 15 special tokens that SFT training adds, in the original's order (train_SFT.py L298-303);
# PPM training uses the first 12.
SPECIAL_TOKENS = (
    CODE, STEP_END, CODE_END, OUTPUT, OUTPUT_END, ANSWER, ANSWER_END, USER, ASSISTANT,
    REFINE, REFINE_END, NEWLINE_ASSISTANT, ERROR_INFO, ERROR_INFO_END, BACK,
)

# Terminal sentinel answers (typo in TOO_MANY_STEPS kept from the original for data compatibility).
TOO_MANY_CODE_ERRORS = "Too many consecutive steps have code errors."
TOO_MANY_STEPS = "Fail to sove the problem within limited steps."
NO_VALID_CHILD = "Fail to generate parsable text for next step."


class NodeKind(enum.IntEnum):
    """What a search node is; every kind but STEP is terminal when the node is created (spec §3.6).

    The one spelling of a node's kind: the tree kernels store it (int8), the host view of a
    searched tree and the record extractor read it."""

    STEP = 0  # an ordinary reasoning / code step
    ANSWER = 1  # a valid final answer (the step text contains "boxed")
    CODE_ERRORS = 2  # too many consecutive code errors (TOO_MANY_CODE_ERRORS)
    TOO_DEEP = 3  # depth > max_depth (TOO_MANY_STEPS)
    UNPARSABLE = 4  # a sample that is neither code nor an answer (NO_VALID_CHILD)


# The original's `final_answer` for terminals that are not answers.
SENTINELS = {
    NodeKind.CODE_ERRORS: TOO_MANY_CODE_ERRORS,
    NodeKind.TOO_DEEP: TOO_MANY_STEPS,
    NodeKind.UNPARSABLE: NO_VALID_CHILD,
}

# Stop strings per use.
SEARCH_STOP = (STEP_END, CODE_END, ANSWER_END)
BOOTSTRAP_STOP = (STEP_END, CODE_END, OUTPUT_END, ANSWER_END)
GREEDY_STOP = (CODE_END, ANSWER_END)

# --------------------------------------------------------------------------------------------
# Prompt templates (spec §2.3).
# --------------------------------------------------------------------------------------------

_INSTRUCTION = "Let's think step by step and solve the problem with code."
# The user turn alone: a final-answer pair's prompt in rStar's released RM format, which moves the
# rest of the template into both continuations.
QUESTION_TEMPLATE = USER + ":\n{question}"
# One template for training and inference. The original adds its step delimiter "\n" to the
# question at inference only: two newlines before <|assistant|> there, one in its SFT and PPM data.
# A small policy trained from scratch answers that unseen token with runaway programs (spec §2.3,
# with the measurement).
PROMPT_TEMPLATE = QUESTION_TEMPLATE + "\n" + ASSISTANT + ": " + _INSTRUCTION


def policy_prompt(question: str, steps_text: str = "") -> str:
    """Template + the steps so far: what search and evaluation continue, and what SFT examples
    and PPM pairs start with."""
    return PROMPT_TEMPLATE.format(question=question) + steps_text


def scored_step(question: str, steps_before: str, step: str) -> tuple[str, int]:
    """The text a PPM scores `step` by (after `steps_before`), and where in it the scored part
    starts: a final answer's is its whole solution, as the final-answer pairs (prompt: the bare
    question) train it; any other step's is the step itself, as the step pairs train it."""
    text = policy_prompt(question, steps_before + step)
    if ANSWER in step:
        return text, len(QUESTION_TEMPLATE.format(question=question))
    return text, len(text) - len(step)


FEWSHOT_INSTRUCTIONS = """\
You are a powerful agent with broad math knowledge and great python programming skills. You need to use python interpreter to do accurate calculation on math equations.

!!! Remember:
1. Use code solve the problem step by step. The solution should include three parts: <code>, <output>, and <answer>.
2. All calculations should be done in python code. Provide concise reasoning and thinking in the comments of the code.
3. The most related python packages include `math`, `sympy`, `scipy`, and `numpy`.
4. Please use the following template:

Question: the input question

<code>
# Step 1: a short explanation of this step
python code of this step
<end_of_step>

# Step 2: a short explanation of this step
python code of this step
<end_of_step>

# Now print the final answer
print(final_answer)
<end_of_code>
<output>the output of the code<end_of_output>
<answer>a concise final answer in \\boxed{}<end_of_answer>
"""

# Two demonstrations in the format above (after the original's Terrell-weights and sympy-equation
# examples, spec §2.3), written for this project.
FEWSHOT_EXAMPLES = (
    """\
Question: Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many times must Terrell lift them in order to lift the same total weight?

<code>
# Step 1: Total weight lifted with the two 20-pound weights
total_weight = 2 * 20 * 12
<end_of_step>

# Step 2: Weight lifted per repetition with the two 15-pound weights
weight_per_lift = 2 * 15
<end_of_step>

# Step 3: Repetitions needed to lift the same total weight
lifts = total_weight // weight_per_lift
<end_of_step>

# Now print the final answer
print(lifts)
<end_of_code>
<output>16<end_of_output>
<answer>Terrell must lift the 15-pound weights \\boxed{16} times.<end_of_answer>
""",
    """\
Question: Solve for $x$: $3(x - 2) = 14$.

<code>
# Step 1: Define the unknown and the equation
from sympy import symbols, Eq, solve
x = symbols('x')
equation = Eq(3 * (x - 2), 14)
<end_of_step>

# Step 2: Solve the equation for x
solution = solve(equation, x)[0]
<end_of_step>

# Now print the final answer
print(solution)
<end_of_code>
<output>20/3<end_of_output>
<answer>The solution is $x = \\boxed{\\frac{20}{3}}$.<end_of_answer>
""",
)


def fewshot_prompt(question: str, examples: Sequence[str], rng: random.Random,
                   steps_text: str = "") -> str:
    """Round-1 bootstrap prompt: instructions, the demonstrations in random order, the question.

    Assembled as the original's `mcts_prompt.json` (spec §2.3); pass `FEWSHOT_EXAMPLES` for the
    built-in demonstrations.
    """
    shuffled = rng.sample(list(examples), len(examples))
    header = "\n".join([FEWSHOT_INSTRUCTIONS,
                        f"The following are {len(examples)} demonstration examples.",
                        *shuffled, ""])
    return header + "\nNow! It's your turn.\nQuestion: " + question + "\n" + steps_text


# --------------------------------------------------------------------------------------------
# Rendering steps (spec §2.2). A trajectory is one code block split into steps; only the step that
# closes the block carries the interpreter output.
# --------------------------------------------------------------------------------------------

STEP_DELIM = "\n"


def render_code_step(code: str, *, first: bool = False) -> str:
    """An intermediate code step: `<code>` opens the first one, "\\n\\n" separates the others."""
    return (CODE + "\n" if first else "\n\n") + code.strip("\n") + "\n" + STEP_END


def render_last_code_step(code: str, observation: str, *, first: bool = False) -> str:
    """The step that closes the code block, followed by its interpreter output."""
    step = (CODE + "\n" if first else "\n\n") + code.strip("\n") + "\n" + CODE_END
    return wrap_output(step, observation)


def render_answer_step(text: str) -> str:
    """The final-answer step; `text` should contain the `\\boxed{}` answer."""
    return STEP_DELIM + ANSWER + text + ANSWER_END


def wrap_output(step: str, observation: str) -> str:
    """Append the interpreter output to a step, closing the code block if the step did not.

    The original writes `step (+ <end_of_code> if missing) + "\\n<output>{obs}<end_of_output>"`
    both for the block's last step and for a step that ends a branch with a code error (§2.6).
    """
    if not step.endswith(CODE_END):
        step += CODE_END
    return step + STEP_DELIM + OUTPUT + observation + OUTPUT_END


# --------------------------------------------------------------------------------------------
# Parsing generated steps (spec §2.4), with the original's quirks decided:
# - The final answer is the content of the LAST `\boxed{}` of the answer text; the original cut the
#   text at the first ".\n" first, which lost boxes after an explanatory sentence. We do not cut.
# - A step is an answer only when it carries `<answer>`, or, without any step-format marker, a
#   `\boxed{}` (few-shot bootstrap models). Code that merely prints the word "boxed" stays code;
#   the original made it terminal.
# - `<answer>` without a `\boxed{}`, and text with neither a step's stop marker (`<end_of_step>`,
#   `<end_of_code>`) nor a box (e.g. cut by the length limit, even after a block's `<code>`), are
#   'unparsable'; so is a code step without any code.
# - Whether a code step failed is decided by the executor (the code raised or timed out,
#   `ExecResult.error is not None`), not by the word "error" in its output as in the original.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ParsedStep:
    """One generated step: its kind, its Python code (code steps), its final answer (answers)."""

    kind: Literal["code", "answer", "unparsable"]
    code: str | None = None
    answer: str | None = None


UNPARSABLE = ParsedStep("unparsable")


def parse_step(text: str) -> ParsedStep:
    """Classify a generated step (stop string included) as code, final answer or unparsable."""
    if ANSWER in text:
        answer_text = text.split(ANSWER, 1)[1].split(ANSWER_END, 1)[0]
        answer = extract_answer(answer_text, fallbacks=False)
        return ParsedStep("answer", answer=answer) if answer is not None else UNPARSABLE
    if STEP_END in text or CODE_END in text:  # `<code>` alone is no stop: a step cut short
        code = text.split(OUTPUT, 1)[0]
        for marker in (CODE, STEP_END, CODE_END):
            code = code.replace(marker, "")
        code = code.strip("\n").rstrip()
        return ParsedStep("code", code=code) if code.strip() else UNPARSABLE
    answer = extract_answer(text, fallbacks=False)
    return ParsedStep("answer", answer=answer) if answer is not None else UNPARSABLE


def extract_program(text: str) -> str:
    """The Python program in a piece of trajectory text (the original's `extract_program`).

    `<end_of_step>` markers are removed; lines between a `<code>` line and an `<end_of_code>` line
    are kept (marker lines dropped whole, each `<code>` line becomes a "# ========" separator);
    text without any `<code>` line is all code.
    """
    text = text.replace(STEP_END, "")
    program, inside = [], False
    for line in text.split("\n"):
        if CODE in line:
            program.append("\n# ========\n")
            inside = True
        elif CODE_END in line:
            inside = False
        elif inside:
            program.append(line + "\n")
    return ("".join(program) or text).strip()


def closes_code_block(step_text: str) -> bool:
    """Whether a step ended its code block (it holds `<end_of_code>`, or the block's output): the
    code of later steps starts afresh after it."""
    return CODE_END in step_text or OUTPUT_END in step_text


def build_program(prev_step_texts: Sequence[str], step_text: str) -> str:
    """The program that verifies a candidate step: the current code block so far plus the step.

    `prev_step_texts` are the texts of the steps since the last closed code block (the caller
    walks up the tree, as the original's `collect_action_inputs`).
    """
    return extract_program("".join(prev_step_texts) + step_text)


# --------------------------------------------------------------------------------------------
# Final answers in text: the last box, or (for models not trained on the format) an answer phrase.
# --------------------------------------------------------------------------------------------

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_FALLBACK_PATTERNS = (
    re.compile(r"final answer is[:\s]*(.+)", re.IGNORECASE | re.DOTALL),
    re.compile(r"the answer is[:\s]*(.+)", re.IGNORECASE | re.DOTALL),
    re.compile(r"answer:\s*(.+)", re.IGNORECASE | re.DOTALL),
)


def extract_answer(text: str, *, fallbacks: bool = True) -> str | None:
    """The content of the last `\\boxed{...}`/`\\fbox{...}` (brace-matched) in `text`.

    Without a box and with `fallbacks`, the phrase after the last "final answer is", "the answer
    is" or "answer:" up to the end of its sentence (for models not trained on rStar's format).
    """
    starts = [(m.start(), m.end()) for cmd in _BOX_COMMANDS for m in re.finditer(re.escape(cmd), text)]
    for start, end in sorted(starts, reverse=True):
        content = _box_content(text, end)
        if content is not None:
            return content.strip()
    if not fallbacks:
        return None
    for pattern in _FALLBACK_PATTERNS:
        matches = list(pattern.finditer(text))
        if matches:
            phrase = re.split(r"\.\s|\n", matches[-1].group(1), maxsplit=1)[0]
            phrase = phrase.strip().strip("$").rstrip(".").strip()
            if phrase:
                return phrase
    return None


def _box_content(text: str, pos: int) -> str | None:
    """Content of the box whose command ends at `pos`: `{...}` brace-matched, or `\\boxed 5`.

    Escaped characters (`\\{`, `\\}`, `\\\\`) do not count as braces, so `\\left\\{ ... \\right.` works.
    """
    spaced = re.match(r" +", text[pos:])
    if spaced and text[pos + spaced.end():pos + spaced.end() + 1] != "{":
        token = re.match(r" +([^\s$]+)", text[pos:])
        return token.group(1) if token else None
    pos += spaced.end() if spaced else 0
    if pos >= len(text) or text[pos] != "{":
        return None
    depth, i = 0, pos
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return text[pos + 1:i]
        i += 1
    return None
