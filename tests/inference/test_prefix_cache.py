"""The sampler's prefix pool: the host index, and samples that do not change with reuse on."""

import dataclasses

import numpy as np
import pytest

from rstar_jax.config import SamplerConfig, SamplingConfig
from rstar_jax.inference import decode
from rstar_jax.inference.prefix_cache import Placement, PrefixIndex, pack_suffixes
from rstar_jax.inference.sampler import Sampler

# Suffixes padded to multiples of 4 tokens, not 16: a prompt that fits in one bucket runs whole, so
# these short prompts need a small bucket to show any reuse.
CONFIG = SamplerConfig(max_batch=8, max_len=256, chunk_tokens=8, min_prompt_bucket=4)


def test_a_prompt_reuses_the_row_sharing_its_longest_prefix():
    index = PrefixIndex(rows=4, length=16)
    assert index.place([[1, 2, 3], [7, 8]]) == [Placement(0, 0, 0), Placement(0, 0, 1)]
    # [1, 2, 9] shares 2 tokens with row 0; [7, 8, 5, 6] extends row 1 whole and takes it over.
    assert index.place([[1, 2, 9], [7, 8, 5, 6]]) == [Placement(0, 2, 2), Placement(1, 2, 1)]
    assert index.tokens[1, :5].tolist() == [7, 8, 5, 6, -1] and index.lengths[1] == 4
    # Row 1's prefix lives on in its new prompt: a sibling still reuses it.
    assert index.place([[7, 8, 4]]) == [Placement(1, 2, 3)]


def test_the_least_recently_used_row_is_overwritten_first():
    index = PrefixIndex(rows=2, length=8)
    index.place([[1, 1]])  # row 0
    index.place([[2, 2]])  # row 1
    index.place([[1, 1, 5, 5]])  # reuses row 0 whole: takes it over, so row 1 is the oldest now
    assert index.place([[3]]) == [Placement(0, 0, 1)]
    assert index.tokens[:, :4].tolist() == [[1, 1, 5, 5], [3, -1, -1, -1]]


def test_one_refill_never_stores_two_prompts_in_one_row():
    index = PrefixIndex(rows=3, length=8)
    index.place([[1, 2]])
    placed = index.place([[1, 2, 3], [1, 2, 4], [1, 2, 5]])  # all extend row 0 whole
    assert [p.reused for p in placed] == [2, 2, 2]
    assert sorted(p.dest for p in placed) == [0, 1, 2]
    with pytest.raises(ValueError, match="3 pool rows"):
        index.place([[1], [2], [3], [4]])


def test_a_limit_caps_the_reuse_but_the_row_keeps_the_whole_prompt():
    index = PrefixIndex(rows=2, length=8)
    index.place([[1, 2, 3]])
    # Extends row 0 whole, so takes it over, yet reuses only 2 tokens; the row holds all 5 after.
    assert index.place([[1, 2, 3, 4, 5]], limits=[2]) == [Placement(0, 2, 0)]
    assert index.lengths[0] == 5
    assert index.place([[1, 2, 3, 4, 5, 6]], limits=[5]) == [Placement(0, 5, 0)]
    with pytest.raises(ValueError):  # one limit per prompt
        index.place([[1], [2]], limits=[1])


def test_a_prefill_sees_no_more_cache_than_its_longest_row():
    """A deep reused row beside a wide new suffix gives up reused tokens instead of widening the
    view: they run in its padding, within the same width."""
    rows = [list(range(30)), list(range(100, 110))]
    packed = pack_suffixes(rows, [Placement(0, 28, 1), Placement(0, 0, 2)], rows=2, min_bucket=16,
                           max_len=256, pool_rows=4)
    assert packed.view_len == 32 and packed.tokens.shape == (2, 16)
    assert packed.start.tolist() == [16, 0] and packed.mask.sum(axis=1).tolist() == [14, 10]
    assert packed.tokens[0, :14].tolist() == rows[0][16:] and packed.dest.tolist() == [1, 2]


def search_like_calls(sampler: Sampler, depth: int) -> list[list[list[int]]]:
    """Calls shaped like a tree search: each call's prompts extend the last call's with one of its
    sampled completions, and a new question joins at every level."""
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=12)
    prompts = ["the quick brown fox", "<|user|>:\nWhat is 12 + 30?\n\n<|assistant|>:"]
    calls = []
    for level in range(depth):
        samples = sampler.sample(prompts, 3, sampling, seed=level)
        calls.append([c.token_ids for cs in samples for c in cs])
        prompts = [p + cs[j % 3].text for j, (p, cs) in enumerate(zip(prompts, samples))]
        prompts = prompts + [p + cs[1].text for p, cs in zip(prompts, samples)] + [f"hello {level}"]
    return calls


@pytest.mark.parametrize("rows", [8, 64])
def test_reuse_changes_no_sample_and_prefills_less(tiny, rows):
    _, model, tokenizer = tiny
    plain = Sampler(model, tokenizer, CONFIG)
    pooled = Sampler(model, tokenizer, dataclasses.replace(CONFIG, prefix_cache_rows=rows))
    assert search_like_calls(pooled, 4) == search_like_calls(plain, 4)
    assert plain.counts["reused_tokens"] == 0
    assert pooled.counts["reused_tokens"] > pooled.counts["prefill_tokens"] > 0
    assert (pooled.counts["prefill_tokens"] + pooled.counts["reused_tokens"]
            == plain.counts["prefill_tokens"])


def test_reused_prefix_gives_the_same_logprobs(tiny):
    _, model, tokenizer = tiny
    prompt, more = "the quick brown fox jumps", " over the lazy dog"
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=16)
    plain = Sampler(model, tokenizer, CONFIG).sample([prompt + more], 4, sampling, seed=1)
    pooled = Sampler(model, tokenizer, dataclasses.replace(CONFIG, prefix_cache_rows=8))
    pooled.sample([prompt], 1, sampling)
    reused = pooled.sample([prompt + more], 4, sampling, seed=1)
    assert pooled.counts["reused_tokens"] > 0
    np.testing.assert_allclose([c.logprob_sum for c in reused[0]], [c.logprob_sum for c in plain[0]],
                               rtol=1e-5, atol=1e-5)


def test_a_sampler_that_forgets_its_prefixes_samples_as_a_new_one(tiny):
    """Reuse moves float roundings; after `forget_prefixes` the logprobs are a new sampler's to the bit."""
    _, model, tokenizer = tiny
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=8)
    config = dataclasses.replace(CONFIG, prefix_cache_rows=8)
    used = Sampler(model, tokenizer, config)
    search_like_calls(used, 2)
    used.forget_prefixes()
    prompts = ["the quick brown fox jumps over", "hello world, héllo"]
    got, expected = (s.sample(prompts, 2, sampling, seed=4) for s in (used, Sampler(model, tokenizer, config)))
    assert [[(c.token_ids, c.logprob_sum) for c in cs] for cs in got] == \
        [[(c.token_ids, c.logprob_sum) for c in cs] for cs in expected]


def test_a_pool_smaller_than_the_slots_is_refused(tiny):
    with pytest.raises(ValueError, match="prefix_cache_rows=4"):
        Sampler(tiny[1], tiny[2], dataclasses.replace(CONFIG, prefix_cache_rows=4))


def test_a_refill_mixing_a_long_new_prompt_with_a_deep_reused_one_samples_the_same(tiny):
    """The prefill stays as wide as the longest prompt: the reused prompt gives up what would not
    fit beside the new one's suffix, and nothing sampled changes."""
    _, model, tokenizer = tiny
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=8)
    deep, long = "the quick brown fox jumps over the lazy dog " * 3, "hello world, héllo wörld 1234567890 " * 4
    plain = Sampler(model, tokenizer, CONFIG)
    pooled = Sampler(model, tokenizer, dataclasses.replace(CONFIG, prefix_cache_rows=8))
    for sampler in (plain, pooled):
        sampler.sample([deep], 1, sampling, seed=1)
    prompts = [deep + "and so on", long]
    got, expected = pooled.sample(prompts, 2, sampling, seed=2), plain.sample(prompts, 2, sampling, seed=2)
    assert [[c.token_ids for c in cs] for cs in got] == [[c.token_ids for c in cs] for cs in expected]


def test_a_failed_refill_starts_the_pool_afresh(tiny, monkeypatch):
    _, model, tokenizer = tiny
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=8)
    pooled = Sampler(model, tokenizer, dataclasses.replace(CONFIG, prefix_cache_rows=8))
    pooled.sample(["the quick brown fox"], 1, sampling)
    real = decode.refill
    monkeypatch.setattr(decode, "refill", lambda *args: (_ for _ in ()).throw(MemoryError("out of memory")))
    with pytest.raises(MemoryError):
        pooled.sample(["the quick brown fox jumps"], 1, sampling)
    assert pooled._pool is None and not pooled._prefix_index.lengths.any()
    monkeypatch.setattr(decode, "refill", real)
    expected = Sampler(model, tokenizer, CONFIG).sample(["the quick brown fox jumps"], 2, sampling, seed=3)
    got = pooled.sample(["the quick brown fox jumps"], 2, sampling, seed=3)
    assert [c.token_ids for c in got[0]] == [c.token_ids for c in expected[0]]
