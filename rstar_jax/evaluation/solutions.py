"""Whole solutions sampled step by step from a policy (no tree): the greedy / sampling methods.

rStar format (the original's greedy mode, spec §3.9 `sft_eval_greedy`): each generation call stops
at `<end_of_code>` or `<end_of_answer>`, so a solution is one code block, its execution output and
an answer step. A step that ends the block is executed (the whole block, `build_program`) and its
output appended, exactly as in search; a step that stops on `<end_of_step>` is kept and continued.
A solution whose prompt (question + steps so far) leaves no room in the policy's context ends with
finish "context_full" (the sampler returns an empty "length" completion, as vLLM does for a
prompt over max_model_len; the original would append empty steps until max_depth).

Chat format (models not trained on rStar's format): the tokenizer's chat template with a
"put the final answer in \\boxed{}" instruction, one call, the answer extracted from the text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from rstar_jax.config import SamplingConfig
from rstar_jax.data.problems import stream_id
from rstar_jax.evaluation.results import Candidate
from rstar_jax import steps as sf
from rstar_jax.search.driver import CodeRunner, StepGenerator as Policy  # Executor and Sampler interfaces

CHAT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CONTEXT_FULL = "context_full"  # Candidate.finish of a solution that outgrew the policy's context


@dataclasses.dataclass
class _Partial:
    """A solution being written: its steps so far, and its Candidate once it has ended."""

    steps: list[str] = dataclasses.field(default_factory=list)
    result: Candidate | None = None


def rstar_solutions(
    questions: Sequence[str], policy: Policy, executor: CodeRunner, sampling: SamplingConfig, *, num_samples: int,
    max_depth: int, seed: int = 0, streams: Sequence[int] | None = None,
) -> list[list[Candidate]]:
    """`num_samples` rStar-format solutions per question, at most `max_depth` generation calls each.

    Each call samples as `sampling` says (its stop strings end a call: `steps.GREEDY_STOP` in the
    original's greedy mode); call `d` of a rollout gets seed `seed + d`. Rollout s of question q
    draws from stream (`streams[q]`, s) (default: q), whichever questions share its batch.
    """
    streams = list(range(len(questions))) if streams is None else list(streams)
    partials = [[_Partial() for _ in range(num_samples)] for _ in questions]
    for depth in range(max_depth):
        if depth == 0:  # one prompt per question, forked into num_samples samples
            outputs = policy.sample([sf.policy_prompt(q) for q in questions], num_samples, sampling, seed=seed,
                                    streams=streams)
            pending = [(partials[q][s], c) for q, cs in enumerate(outputs) for s, c in enumerate(cs)]
        else:
            active = [(q, s, p) for q, ps in enumerate(partials) for s, p in enumerate(ps) if p.result is None]
            if not active:
                break
            outputs = policy.sample([sf.policy_prompt(questions[q], "".join(p.steps)) for q, _, p in active], 1,
                                    sampling, seed=seed + depth,
                                    streams=[stream_id(streams[q], s) for q, s, _ in active])
            pending = [(p, cs[0]) for (_, _, p), cs in zip(active, outputs, strict=True)]
        _advance(pending, executor)
    return [[dataclasses.replace(p.result or Candidate(None, tuple(p.steps), "too_many_steps"), run=s)
             for s, p in enumerate(ps)] for ps in partials]


def _advance(pending: Sequence[tuple[_Partial, Any]], executor: CodeRunner) -> None:
    """Appends one generated step to each partial solution; executes the steps that close a block."""
    to_run: list[tuple[_Partial, str, str]] = []
    for partial, completion in pending:
        text = completion.text  # the matched stop string is kept
        parsed = sf.parse_step(text)
        if completion.finish_reason == "length" and not completion.token_ids:  # no room left
            partial.result = Candidate(answer=None, steps=tuple(partial.steps), finish=CONTEXT_FULL)
        elif parsed.kind == "answer":
            partial.steps.append(text)
            partial.result = Candidate(answer=parsed.answer, steps=tuple(partial.steps), finish="answer")
        elif parsed.kind == "code" and sf.CODE_END in text:
            to_run.append((partial, text, sf.build_program(_open_block(partial.steps), text)))
        elif parsed.kind == "code" and completion.stop_string == sf.STEP_END:
            partial.steps.append(text)
        else:  # unparsable, or the model stopped (EOS / length) without an answer
            partial.steps.append(text)
            partial.result = Candidate(answer=None, steps=tuple(partial.steps), finish=completion.finish_reason)
    results = executor.run([program for _, _, program in to_run])
    for (partial, text, _), result in zip(to_run, results, strict=True):
        partial.steps.append(sf.wrap_output(text, _observation(result)))


def _open_block(steps: Sequence[str]) -> Sequence[str]:
    """The steps after the last closed code block: the code a new code step continues."""
    closed = [i for i, step in enumerate(steps) if sf.closes_code_block(step)]
    return steps[closed[-1] + 1:] if closed else steps


def _observation(result) -> str:
    """What the model sees after its code: the printed output, or the "ExcType: message" error."""
    return result.output if result.error is None else result.error


def chat_prompt(tokenizer, question: str) -> str:
    """A plain chat-template prompt for models that do not know rStar's format (spec §8, issue #30)."""
    messages = [{"role": "system", "content": CHAT_INSTRUCTION}, {"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chat_solutions(
    questions: Sequence[str], policy: Policy, tokenizer, sampling: SamplingConfig, *, num_samples: int,
    seed: int = 0, streams: Sequence[int] | None = None,
) -> list[list[Candidate]]:
    """`num_samples` free-form solutions per question, answers from `\\boxed{}` / "The answer is";
    question q draws from stream `streams[q]` (default: q)."""
    outputs = policy.sample([chat_prompt(tokenizer, q) for q in questions], num_samples, sampling, seed=seed,
                            streams=streams)
    solutions = []
    for completions in outputs:
        solutions.append([])
        for s, c in enumerate(completions):
            answer = sf.extract_answer(c.text)
            finish = "answer" if answer is not None else "no_answer"
            if c.finish_reason == "length" and not c.token_ids:
                finish = CONTEXT_FULL
            solutions[-1].append(Candidate(answer=answer, steps=(c.text,), finish=finish, run=s))
    return solutions
