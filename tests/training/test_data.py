"""Tokenised SFT / PPM examples, batching order and collation (host side, no compilation)."""

import numpy as np
import pytest

from rstar_jax.data.records import PreferencePair, SFTRecord
from rstar_jax import steps as sf
from rstar_jax.training import data


def test_sft_example_is_prompt_response_eos_with_loss_on_response_and_eos(policy_dir):
    from rstar_jax.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(policy_dir)
    record = SFTRecord("What is 1+1?", "<code>\nprint(2)\n<end_of_code><answer>\\boxed{2}<end_of_answer>")
    (example,) = data.encode_sft([record], tokenizer, max_length=512)
    prompt_ids = tokenizer(sf.policy_prompt(record.query), add_special_tokens=False)["input_ids"]
    assert example.prompt_len == len(prompt_ids)
    assert list(example.ids[: example.prompt_len]) == prompt_ids
    assert example.ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(example.ids[example.prompt_len:-1]) == record.response

    batch = data.collate_sft([example, None], length=128)
    n = len(example.ids)
    targets, weights = batch["targets"][0], batch["weights"][0]
    # Target t is token t+1; exactly the response and EOS tokens are learned.
    assert weights.sum() == n - example.prompt_len
    np.testing.assert_array_equal(targets[weights > 0], example.ids[example.prompt_len:])
    assert batch["mask"][0].sum() == n and not batch["mask"][1].any() and not batch["weights"][1].any()


def test_an_example_without_a_prompt_learns_every_token_after_its_first():
    """A plain record with an empty query, from a tokenizer that adds no BOS: prompt_len 0."""
    ids = np.array([5, 6, 7, 8], np.int32)
    for learned in (None, np.array([True, True, False, True])):
        batch = data.collate_sft([data.SFTExample(ids, prompt_len=0, learned=learned)], length=8)
        np.testing.assert_array_equal(batch["targets"][0][:3], [6, 7, 8])
        np.testing.assert_array_equal(batch["weights"][0][:4], [1, 0, 1, 0] if learned is not None else [1, 1, 1, 0])


def test_plain_text_examples_take_the_query_as_their_prompt(policy_dir):
    from rstar_jax.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(policy_dir)
    record = SFTRecord("(1) Tom has 3 apples.", "\n# (1) Tom has 3 apples.")
    (example,) = data.encode_sft([record], tokenizer, max_length=512, chat=False)
    assert tokenizer.decode(example.ids[:example.prompt_len], skip_special_tokens=True) == record.query
    assert tokenizer.decode(example.ids[example.prompt_len:-1]) == record.response
    assert sf.USER not in tokenizer.decode(example.ids)


def test_interpreter_output_can_carry_no_loss(policy_dir):
    from rstar_jax.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(policy_dir)
    step = sf.render_last_code_step("x = 40 + 2\nprint(x)", "42", first=True)
    answer = sf.render_answer_step("The answer is \\boxed{42}.")
    record = SFTRecord("What is 40+2?", step + answer)
    (full,) = data.encode_sft([record], tokenizer, max_length=512)
    (masked,) = data.encode_sft([record], tokenizer, max_length=512, train_on_outputs=False)
    np.testing.assert_array_equal(full.ids, masked.ids)
    batch = data.collate_sft([masked], length=128)
    learned = tokenizer.decode(batch["targets"][0][batch["weights"][0] > 0])
    # everything the policy writes is learned, the interpreter's text is not
    assert learned == tokenizer.decode(tokenizer(step.split("\n<output>")[0] + answer)["input_ids"]
                                       + [tokenizer.eos_token_id])
    assert "42<end_of_output>" not in learned and "boxed{42}" in learned
    # truncation keeps the mask aligned with the ids
    (short,) = data.encode_sft([record], tokenizer, max_length=full.prompt_len + 5, train_on_outputs=False)
    assert len(short.learned) == len(short.ids)


def test_sft_drops_examples_whose_prompt_fills_max_length(policy_dir):
    from rstar_jax.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(policy_dir)
    assert data.encode_sft([SFTRecord("a long question " * 20, "x")], tokenizer, max_length=16) == []


def test_pair_weights_follow_rstar():
    assert data.pair_weight(2, 2) == 0.25
    assert data.pair_weight(1, 4) == 0.25
    assert data.pair_weight(0, 3) == pytest.approx(1 / 3)


def test_pairs_share_the_prompt_and_keep_the_beginning(policy_dir):
    from rstar_jax.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(policy_dir)
    pair = PreferencePair("<|user|>:\nQ", "<code>\nx = 1<end_of_step>", "<code>\ny = 2 + 2<end_of_step>", 2, 2)
    prompt_ids = tokenizer(pair.prompt, add_special_tokens=False)["input_ids"]
    (example,) = data.encode_pairs([pair], tokenizer, max_length=len(prompt_ids) + 2)
    assert list(example.prompt) == prompt_ids and len(example.pos) == len(example.neg) == 2
    assert data.encode_pairs([pair], tokenizer, max_length=len(prompt_ids)) == []  # nothing to compare

    batch = data.collate_pairs([example, None], length=len(prompt_ids) + 8)
    p = len(prompt_ids)
    assert batch["tokens"].shape == (2, p + 8) and list(batch["weights"]) == [0.25, 0.0]
    assert list(batch["tokens"][0, :p + 4]) == prompt_ids + list(example.pos) + list(example.neg)
    assert list(batch["positions"][0, p:p + 4]) == [p, p + 1, p, p + 1]  # neg continues the prompt too
    assert list(batch["branches"][0, p - 1:p + 5]) == [0, 1, 1, 2, 2, 0]
    assert list(batch["ends"][0]) == [p + 1, p + 3] and batch["mask"][0].sum() == p + 4
    assert not batch["mask"][1].any()
    empty_neg = data.PairExample(np.array([1, 2, 3]), np.array([4]), np.array([], np.int32), 1.0)
    assert list(data.collate_pairs([empty_neg], length=8)["ends"][0]) == [3, 2]  # an empty step: the prompt's score


def test_epoch_batches_are_deterministic_full_and_length_sorted():
    lengths = list(np.random.default_rng(0).integers(1, 500, size=100))
    a = data.epoch_batches(lengths, 8, seed=1, epoch=0)
    assert all(np.array_equal(x, y) for x, y in zip(a, data.epoch_batches(lengths, 8, seed=1, epoch=0)))
    assert not all(np.array_equal(x, y) for x, y in zip(a, data.epoch_batches(lengths, 8, seed=1, epoch=1)))
    assert len(a) == 12 and len(np.unique(np.concatenate(a))) == 96
    assert all(np.all(np.diff(np.asarray(lengths)[b]) >= 0) for b in a)


def test_heldout_split():
    train, held = data.split_heldout(100, 0.05, seed=42)
    assert len(held) == 5 and len(set(train) | set(held)) == 100
    assert len(data.split_heldout(10, 0.0, seed=42)[1]) == 0
    assert [list(b) for b in data.eval_batches(5, 4)] == [[0, 1, 2, 3], [4, -1, -1, -1]]
