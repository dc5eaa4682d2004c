"""Each method through `evaluate_sets` with the oracle policy: sampled votes, best-of-n by PPM,
MCTS and beam-search runs, and the chat format for models that do not know rStar's steps."""

import dataclasses
import json
import os

import pytest
import transformers
from oracle import WRONG, OraclePolicy, WrongSpotterPPM
from tokenizers import Tokenizer, models as tokenizer_models

from rstar_jax.config import EvalConfig, SearchConfig
from rstar_jax.data.problems import load_problem_sets
from rstar_jax.evaluation.run import evaluate_sets
from rstar_jax.evaluation import methods
from rstar_jax.evaluation.methods import Models
from rstar_jax.evaluation.solutions import CHAT_INSTRUCTION, chat_prompt
from rstar_jax.inference.sampler import Completion
from rstar_jax import steps as sf
from rstar_jax.verify.executor import Executor

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "eval_data_sample")
SEARCH = SearchConfig.evaluation(num_rollouts=2, num_candidates=2, max_depth=4)  # trees sized from the budget


@pytest.fixture(scope="module")
def sets():
    return {"GSM8K_test": load_problem_sets(FIXTURES)["GSM8K_test"]}


@pytest.fixture(scope="module")
def executor():
    with Executor(num_workers=1, timeout_s=10.0) as ex:
        yield ex


def _run(tmp_path, sets, models, **config):
    rows = evaluate_sets(str(tmp_path), sets, models, EvalConfig(grade_workers=0, **config),
                         process_index=0, process_count=1)
    records = [json.loads(line) for line in (tmp_path / "GSM8K_test" / config["methods"][0] / "predictions.jsonl")
               .read_text().splitlines()]
    return rows[0], records


def test_sampled_votes_and_pass_at_k(tmp_path, sets, executor):
    policy = OraclePolicy(sets["GSM8K_test"], right_samples={3})  # samples 0-2 wrong, 3 right
    row, records = _run(tmp_path, sets, Models(policy, executor), methods=("sample",), num_samples=4, ks=(1, 2, 4))
    m = row["metrics"]
    assert (m["pass@1"], m["pass@2"], m["pass@4"]) == (25.0, 50.0, 100.0)
    assert m["maj@4"] == 0.0 and row["headline"] == "maj@4" and row["accuracy"] == 0.0
    assert [c["answer"] for c in records[0]["candidates"]] == [WRONG] * 3 + [records[0]["gold"]]
    assert [c["cluster"] for c in records[0]["candidates"]] == [0, 0, 0, 1]


def test_best_of_n_ranks_solutions_by_their_step_scores(tmp_path, sets, executor):
    policy = OraclePolicy(sets["GSM8K_test"], right_samples={3})
    models = Models(policy, executor, ppm=WrongSpotterPPM())
    row, records = _run(tmp_path, sets, models, methods=("best_of_n",), num_samples=4, ks=(1, 4), step_score="min")
    assert row["headline"] == "best@4" and row["accuracy"] == 100.0 and row["metrics"]["best@1"] == 0.0
    right, wrong = records[0]["candidates"][3], records[0]["candidates"][0]
    # Steps: "answer = ...", "print(answer)" + output, the answer step; each prefix is scored.
    assert len(right["step_scores"]) == 3 and right["score"] == pytest.approx(0.7616, abs=1e-4)
    assert wrong["score"] == pytest.approx(-0.7616, abs=1e-4)


def test_split_steps_cuts_after_each_end_of_step():
    block = "<code>\na = 1\n<end_of_step>\n\nb = 2\n<end_of_step>\n\nprint(b)\n<end_of_code>"
    assert methods.split_steps([block, "\n<answer>\\boxed{2}<end_of_answer>"]) == [
        "<code>\na = 1\n<end_of_step>", "\n\nb = 2\n<end_of_step>", "\n\nprint(b)\n<end_of_code>",
        "\n<answer>\\boxed{2}<end_of_answer>"]


@pytest.mark.slow  # compiles the tree kernels: ~15 s per method on 2 CPU cores
@pytest.mark.parametrize("method", ["mcts", "beam"])
def test_search_runs_pick_the_best_scored_answer_of_each_tree(tmp_path, sets, executor, method):
    # Two candidates per step: sample 0 is wrong, sample 1 right; the PPM tells them apart.
    policy = OraclePolicy(sets["GSM8K_test"], right_samples={1})
    models = Models(policy, executor, ppm=WrongSpotterPPM(), search=SEARCH)
    row, records = _run(tmp_path, sets, models, methods=(method,), num_runs=2, ks=(1, 2))
    assert row["headline"] == "top4_maj@2" and row["accuracy"] == 100.0
    assert row["metrics"]["best@1"] == 100.0 and row["metrics"]["leaf_pass@2"] == 100.0
    for record in records:
        assert [c["run"] for c in record["candidates"]] == [0, 1]
        for cand in record["candidates"]:
            assert cand["answer"] == record["gold"] and cand["score"] == pytest.approx(0.7616, abs=1e-4)
            assert cand["steps"][-1].endswith(sf.ANSWER_END) and sf.OUTPUT in "".join(cand["steps"])
            assert cand["leaf_correct"] and cand["finish"] == "answer"


def test_an_mcts_evaluation_never_rewards_answers_by_the_gold(tmp_path, sets, executor):
    """With data generation's rewards the gold answers would pick each tree's answer (pass@n)."""
    models = Models(OraclePolicy(sets["GSM8K_test"]), executor, ppm=WrongSpotterPPM(),
                    search=dataclasses.replace(SEARCH, ground_truth_rewards=True))
    with pytest.raises(ValueError, match="ground_truth_rewards must be False"):
        _run(tmp_path, sets, models, methods=("mcts",))


class ChatOracle:
    """Answers each chat prompt in prose, "The answer is <gold>." (no box)."""

    def __init__(self, tokenizer, problems):
        self.answers = {chat_prompt(tokenizer, p.question): p.golds[0] for p in problems}

    def sample(self, prompts, num_samples, sampling, *, seed, streams):
        assert sampling.stop == ()
        return [[Completion(f"Adding up, the answer is {self.answers[p]}.", [], "eos", 0.0)] * num_samples
                for p in prompts]

    def forget_prefixes(self):
        """Keeps no prefixes: nothing to empty."""


def test_chat_format_for_models_without_rstar_steps(tmp_path, sets, executor):
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(tokenizer_models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")),
        chat_template="{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant] ")
    prompt = chat_prompt(tokenizer, "What is 1+1?")
    assert prompt == f"[system] {CHAT_INSTRUCTION}\n[user] What is 1+1?\n[assistant] "
    models = Models(ChatOracle(tokenizer, sets["GSM8K_test"]), executor, tokenizer=tokenizer)
    row, records = _run(tmp_path, sets, models, methods=("greedy",), prompt_format="chat")
    assert row["accuracy"] == 100.0
    assert records[0]["candidates"][0]["answer"] == records[0]["gold"]


def test_methods_that_need_a_ppm_say_so(tmp_path, sets, executor):
    with pytest.raises(ValueError, match="best_of_n needs a PPM"):
        _run(tmp_path, sets, Models(OraclePolicy(sets["GSM8K_test"]), executor), methods=("best_of_n",))
    with pytest.raises(ValueError, match="EvalConfig.methods: unknown \\['bogus'\\]"):
        _run(tmp_path, sets, Models(OraclePolicy(sets["GSM8K_test"]), executor), methods=("bogus",))
