"""Step format: prompts, rendering, parsing (with the documented quirk decisions), programs."""

import json
import pathlib
import random

import pytest

from rstar_jax import steps as sf
from rstar_jax.verify.interpreter import execute

EXAMPLES = pathlib.Path(__file__).parent / "fixtures" / "rstar_examples" / "sft_data_examples.json"


def test_prompt_is_the_original_training_template():
    # One newline before <|assistant|> at inference too: the template SFT examples and PPM pairs use.
    assert sf.policy_prompt("What is 1+1?") == (
        "<|user|>:\nWhat is 1+1?\n<|assistant|>: Let's think step by step and solve the problem with code.")
    assert sf.policy_prompt("Q", "<code>\nx = 1\n<end_of_step>").endswith("code.<code>\nx = 1\n<end_of_step>")


def test_fewshot_prompt_shuffles_demonstrations_with_the_rng():
    prompts = {sf.fewshot_prompt("Q?", sf.FEWSHOT_EXAMPLES, random.Random(seed)) for seed in range(8)}
    assert len(prompts) == 2  # both orders occur
    for prompt in prompts:
        assert prompt.startswith(sf.FEWSHOT_INSTRUCTIONS)
        assert "The following are 2 demonstration examples." in prompt
        assert prompt.endswith("\nNow! It's your turn.\nQuestion: Q?\n")
    assert sf.fewshot_prompt("Q?", sf.FEWSHOT_EXAMPLES, random.Random(0), "<code>\n").endswith("Q?\n<code>\n")


@pytest.mark.parametrize("demo", sf.FEWSHOT_EXAMPLES)
def test_fewshot_demonstrations_are_consistent(demo):
    """Each demonstration's program prints its shown output and its answer step parses."""
    solution = demo.split("\n", 2)[2]
    program = sf.extract_program(solution.split(sf.OUTPUT)[0])
    shown = solution.split(sf.OUTPUT)[1].split(sf.OUTPUT_END)[0]
    assert execute(program, {}, 10.0) == (shown, None, False)
    answer_step = sf.parse_step(solution[solution.index(sf.ANSWER):])
    assert answer_step.kind == "answer" and answer_step.answer in ("16", "\\frac{20}{3}")


def test_render_steps_rebuild_a_released_trajectory():
    steps = [
        sf.render_code_step("# Step 1: Define x\nx = 2", first=True),
        sf.render_code_step("# Step 2: Square it\ny = x ** 2"),
        sf.render_last_code_step("# Now print the final answer\nprint(y)", "4"),
        sf.render_answer_step("So the answer is \\boxed{4}."),
    ]
    text = "".join(steps)
    assert text == ("<code>\n# Step 1: Define x\nx = 2\n<end_of_step>\n\n# Step 2: Square it\ny = x ** 2\n"
                    "<end_of_step>\n\n# Now print the final answer\nprint(y)\n<end_of_code>\n<output>4"
                    "<end_of_output>\n<answer>So the answer is \\boxed{4}.<end_of_answer>")


def test_wrap_output_closes_the_code_block_when_needed():
    assert sf.wrap_output("print(1)\n<end_of_code>", "1") == "print(1)\n<end_of_code>\n<output>1<end_of_output>"
    assert sf.wrap_output("x = 1/0\n<end_of_step>", "ZeroDivisionError: division by zero") == (
        "x = 1/0\n<end_of_step><end_of_code>\n<output>ZeroDivisionError: division by zero<end_of_output>")


@pytest.mark.parametrize("text, expected", [
    ("<code>\n# Step 1\nx = 2\n<end_of_step>", sf.ParsedStep("code", code="# Step 1\nx = 2")),
    ("\n\n# Step 2\ny = x + 1\n<end_of_step>", sf.ParsedStep("code", code="# Step 2\ny = x + 1")),
    ("\n\n# Now print the final answer\nprint(y)\n<end_of_code>",
     sf.ParsedStep("code", code="# Now print the final answer\nprint(y)")),
    ("\n<answer>From the result, the answer is \\boxed{\\frac{1}{2}}.<end_of_answer>",
     sf.ParsedStep("answer", answer="\\frac{1}{2}")),
    # the last box wins; no cut at the first ".\n" (the original would answer "We computed 5")
    ("\n<answer>We computed 5.\nSo it is \\boxed{5}, i.e. \\boxed{6}.<end_of_answer>", sf.ParsedStep("answer", answer="6")),
    # code that prints the word "boxed" is code, not an answer
    ("\n\nprint('\\\\boxed{3}')\n<end_of_code>", sf.ParsedStep("code", code="print('\\\\boxed{3}')")),
    ("\n\nboxed = 3\n<end_of_step>", sf.ParsedStep("code", code="boxed = 3")),
    # a last code step with its output already appended
    ("\n\nprint(y)\n<end_of_code>\n<output>4<end_of_output>", sf.ParsedStep("code", code="print(y)")),
    # few-shot bootstrap models may answer without tags
    ("Therefore the answer is $\\boxed{12}$.", sf.ParsedStep("answer", answer="12")),
    ("\n<answer>I give up.<end_of_answer>", sf.UNPARSABLE),
    ("\n\n# Step 3: more thinking but the generation was cut by the length lim", sf.UNPARSABLE),
    ("<code>\n# Step 1: a block's first step cut by the length lim", sf.UNPARSABLE),
    ("<code>\n# (1)}.<end_of_answer>", sf.UNPARSABLE),  # stopped at an answer's end, with no answer
    ("\n\n<end_of_step>", sf.UNPARSABLE),
    ("", sf.UNPARSABLE),
])
def test_parse_step(text, expected):
    assert sf.parse_step(text) == expected


def test_build_program_concatenates_the_block():
    prev = ["<code>\n# Step 1\nx = 2\n<end_of_step>", "\n\n# Step 2\ny = x * 3\n<end_of_step>"]
    program = sf.build_program(prev, "\n\n# Now print the final answer\nprint(y)\n<end_of_code>")
    assert program == "# ========\n# Step 1\nx = 2\n\n\n# Step 2\ny = x * 3\n\n\n# Now print the final answer\nprint(y)"
    assert execute(program, {}, 10.0) == ("6", None, False)
    assert sf.build_program([], "x = 1\nprint(x)\n<end_of_step>") == "x = 1\nprint(x)"  # no <code> line


def test_a_step_closes_its_code_block_with_end_of_code_or_the_block_output():
    assert sf.closes_code_block("\n\nprint(y)\n<end_of_code>\n<output>4<end_of_output>")
    assert sf.closes_code_block("\n\nprint(y)\n<end_of_code>")  # not yet run
    assert not sf.closes_code_block("<code>\n# Step 1\nx = 2\n<end_of_step>")


def test_released_trajectories_reparse_and_reexecute():
    """The released SFT examples: the block's program prints the recorded output (multi-print
    format included) and the answer step parses."""
    if not EXAMPLES.exists():
        pytest.skip(f"{EXAMPLES} is absent")
    reproduced = 0
    for record in json.loads(EXAMPLES.read_text()):
        code_part, rest = record["response"].split(sf.CODE_END, 1)
        recorded = rest.split(sf.OUTPUT, 1)[1].split(sf.OUTPUT_END, 1)[0]
        output, error, _ = execute(sf.extract_program(code_part + sf.CODE_END), {}, 10.0)
        # One example uses a name no step defines; the original's shared globals() had it from an
        # earlier program. A fresh namespace reports the NameError instead.
        if not (error or "").startswith("NameError"):
            assert (error or output) == recorded
            reproduced += 1
        answer = sf.parse_step(rest.split(sf.OUTPUT_END, 1)[1])
        assert answer.kind == "answer" and answer.answer
    assert reproduced >= 7


def test_a_ppm_scores_a_step_alone_and_a_final_answer_over_its_solution():
    """What each PPM pair kind trains on: a step pair's prompt is the path before the step, a
    final-answer pair's the bare question."""
    code = sf.render_code_step("x = 2", first=True)
    answer = sf.render_answer_step("The answer is \\boxed{2}.")
    text, start = sf.scored_step("What is 2?", "", code)
    assert text == sf.policy_prompt("What is 2?", code) and text[start:] == code
    text, start = sf.scored_step("What is 2?", code, answer)
    assert text == sf.policy_prompt("What is 2?", code + answer)
    assert text[:start] == sf.QUESTION_TEMPLATE.format(question="What is 2?")
