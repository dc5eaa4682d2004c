"""rStar's code-augmented chain-of-thought step format (spec §2).

Special tokens, stop strings and prompt templates. Rendering and parsing of steps live here too.
"""

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

# Stop strings per use.
SEARCH_STOP = (STEP_END, CODE_END, ANSWER_END)
BOOTSTRAP_STOP = (STEP_END, CODE_END, OUTPUT_END, ANSWER_END)
GREEDY_STOP = (CODE_END, ANSWER_END)
