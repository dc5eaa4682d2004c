"""PPM scores in bucketed batches equal HF hidden states through the value head; long inputs."""

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from rstar_jax.config import PPMConfig, ScorerConfig
from rstar_jax.inference import scorer as scorer_lib
from rstar_jax.inference.scorer import PPMScorer
from rstar_jax.models.ppm import ProcessRewardModel
from rstar_jax.models.tokenizer import encode
from rstar_jax import steps as sf

TEXTS = [sf.policy_prompt("What is 12 + 30?", "<code>\nx = 12 + 30\n<end_of_step>"),
         "hello", sf.policy_prompt("héllo wörld " * 3), "the quick brown fox " * 5,
         sf.policy_prompt("1 + 2", "<answer>3<end_of_answer>")]


@pytest.fixture(scope="module")
def ppm(tiny):
    _, model, _ = tiny
    ppm = ProcessRewardModel(model.config, rngs=nnx.Rngs(0), backbone=model)
    linear = ppm.value_head.linear  # a non-tiny head, so scores differ between texts
    linear.kernel.set_value(jax.random.normal(jax.random.key(1), linear.kernel.shape))
    linear.bias.set_value(linear.bias.get_value() + 0.5)
    return ppm


@pytest.fixture(scope="module")
def mean_ppm(ppm):
    """`ppm` reading its head's mean over a step's tokens."""
    mean_ppm = ProcessRewardModel(ppm.backbone.config, PPMConfig(readout="step_mean"), rngs=nnx.Rngs(0),
                                  backbone=ppm.backbone)
    mean_ppm.value_head = ppm.value_head
    return mean_ppm


def head_values(tiny, ppm, ids):
    """The value head over the HF model's hidden state at every position of `ids`."""
    with torch.no_grad():
        h = tiny[0].model(torch.tensor([ids])).last_hidden_state[0].numpy()
    linear = ppm.value_head.linear
    return h @ np.asarray(linear.kernel.get_value())[:, 0] + float(linear.bias.get_value()[0])


def reference_raw(tiny, ppm, ids):
    return head_values(tiny, ppm, ids)[-1]


def test_batched_scores_equal_hf_hidden_states_through_the_head(tiny, ppm):
    scorer = PPMScorer(ppm, tiny[2], ScorerConfig(max_batch=4, min_bucket=16))
    raw, value = scorer.score(TEXTS)
    expected = [reference_raw(tiny, ppm, tiny[2](t)["input_ids"]) for t in TEXTS]
    np.testing.assert_allclose(raw, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(value, np.tanh(raw / 5.0), rtol=1e-6)
    assert raw.dtype == value.dtype == np.float32 and np.ptp(raw) > 0.1

    sizes = scorer_lib._raw_scores._cache_size()
    np.testing.assert_allclose(scorer.score(TEXTS[::-1])[0], raw[::-1], rtol=1e-5)
    assert scorer_lib._raw_scores._cache_size() == sizes  # same buckets: no new program


def test_long_input_keeps_prompt_and_end_of_solution(tiny, ppm):
    tokenizer = tiny[2]
    prompt = sf.policy_prompt("What is 12 + 30?")
    text = prompt + "".join(f"<code>\nx{i} = {i}\n<end_of_step>" for i in range(40))
    scorer = PPMScorer(ppm, tokenizer, ScorerConfig(max_len=96, min_bucket=16))
    ids, full = scorer.tokenize(text), tokenizer(text)["input_ids"]
    head = len(tokenizer(prompt)["input_ids"])
    assert len(full) > 96 and len(ids) == 96
    assert ids[:head] == full[:head] and ids[head:] == full[-(96 - head):]
    np.testing.assert_allclose(scorer.score([text])[0], [reference_raw(tiny, ppm, ids)],
                               rtol=1e-4, atol=1e-4)
    # Without the prompt header, a long text simply keeps its end.
    assert scorer.tokenize(text[len(prompt):]) == tokenizer(text[len(prompt):])["input_ids"][-96:]


def tree_like_texts(depth: int) -> list[list[str]]:
    """Texts scored the way a search scores its new nodes: each call's texts extend the last
    call's by one step (three children of some), and a new question joins at every level."""
    calls, parents = [], [sf.policy_prompt("What is 12 + 30?"), sf.policy_prompt("héllo wörld")]
    for level in range(depth):
        children = [p + f"<code>\nx{level} = {j} + {level}\n<end_of_step>" for p in parents for j in range(3)]
        calls.append(children + [sf.policy_prompt(f"What is {level} + 1?")])
        parents = children[::2]
    return calls


@pytest.mark.parametrize("rows", [4, 32])
def test_the_prefix_pool_changes_no_score_and_runs_only_the_new_step(tiny, ppm, rows):
    """With a prefix pool a child text runs only past its parent's cached tokens; every score
    equals the scorer's without one (a pool of 4 rows keeps evicting what later texts need)."""
    plain = PPMScorer(ppm, tiny[2], ScorerConfig(max_batch=4, min_bucket=16))
    pooled = PPMScorer(ppm, tiny[2], ScorerConfig(max_batch=4, min_bucket=16, prefix_cache_rows=rows))
    for texts in tree_like_texts(4):
        np.testing.assert_allclose(pooled.score(texts)[0], plain.score(texts)[0], rtol=1e-5, atol=1e-5)
    total = plain.counts["prefill_tokens"]
    assert pooled.counts["prefill_tokens"] + pooled.counts["reused_tokens"] == total
    assert plain.counts["reused_tokens"] == 0
    assert pooled.counts["prefill_tokens"] < (0.6 if rows == 4 else 0.3) * total


def test_a_prefix_pool_smaller_than_a_batch_is_refused(tiny, ppm):
    with pytest.raises(ValueError, match="prefix_cache_rows=2"):
        PPMScorer(ppm, tiny[2], ScorerConfig(max_batch=4, prefix_cache_rows=2))


def step_starts(texts: list[str]) -> list[int]:
    """Where each text of `tree_like_texts` starts its step: a child's where its parent's text
    ends, a new question's at 0 (all of it is read)."""
    return [t.rfind("<code>") if "<code>" in t else 0 for t in texts]


def test_step_mean_scores_read_the_step_from_where_it_starts(tiny, ppm, mean_ppm):
    """A "step_mean" PPM scores each text by the head's mean over the tokens from its step's start
    on (HF hidden states through the head), with or without a prefix pool."""
    tokenizer = tiny[2]
    plain = PPMScorer(mean_ppm, tokenizer, ScorerConfig(max_batch=4, min_bucket=16))
    pooled = PPMScorer(mean_ppm, tokenizer, ScorerConfig(max_batch=4, min_bucket=16, prefix_cache_rows=4))
    for texts in tree_like_texts(3):
        starts = step_starts(texts)
        raw = plain.score(texts, starts)[0]
        np.testing.assert_allclose(pooled.score(texts, starts)[0], raw, rtol=1e-5, atol=1e-5)
    encoded = tokenizer(texts[0], return_offsets_mapping=True)
    step = [i for i, (start, _) in enumerate(encoded["offset_mapping"]) if start >= starts[0]]
    np.testing.assert_allclose(raw[0], head_values(tiny, ppm, encoded["input_ids"])[step].mean(),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="step_starts"):
        plain.score(texts)
    # A step longer than the end a long text keeps is read over what is left of it.
    prompt = sf.policy_prompt("What is 12 + 30?")
    text = prompt + "".join(f"<code>\nx{i} = {i}\n<end_of_step>" for i in range(40))
    cut = PPMScorer(mean_ppm, tokenizer, ScorerConfig(max_len=96, min_bucket=16))
    ids, head = cut.tokenize(text), len(tokenizer(prompt)["input_ids"])
    np.testing.assert_allclose(cut.score([text], [len(prompt)])[0], [head_values(tiny, ppm, ids)[head:].mean()],
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="outside"):
        cut.score([text], [len(text) + 1])


def test_a_step_mean_child_reuses_its_whole_parent(tiny, mean_ppm):
    """With the "step_mean" readout the pool serves a text all but the tokens its score reads: a
    child its parent's whole text, a new question nothing. (A prefill may still run some of the
    served tokens in its padding: `pack_suffixes`.)"""
    tokenizer = tiny[2]
    pooled = PPMScorer(mean_ppm, tokenizer, ScorerConfig(max_batch=4, min_bucket=16, prefix_cache_rows=32))
    index, served = pooled._prefix_index, []
    place = index.place

    def recorded(prefixes, limits):
        placed = place(prefixes, limits)
        served.extend(p.reused for p in placed)
        return placed
    index.place = recorded
    for level, texts in enumerate(tree_like_texts(3)):
        starts, served[:] = step_starts(texts), []
        pooled.score(texts, starts)
        ids, offsets = encode(tokenizer, texts, offsets=True)  # the scorer's rule for the tokens a score reads
        read = [sum(1 for _, end in row if end > start) for row, start in zip(offsets, starts)]
        if level:  # the first level's parents were never scored
            assert sorted(served) == sorted(len(row) - r for row, r in zip(ids, read))
