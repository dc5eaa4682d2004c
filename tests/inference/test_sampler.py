"""The sampler against HF `generate` and the model's own distribution; stops, forks, seeds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import torch
from flax import nnx

from rstar_jax.config import SamplerConfig, SamplingConfig
from rstar_jax.inference import decode
from rstar_jax.inference.sampler import Completion, Sampler
from rstar_jax.inference.static_graph import StaticGraph

CONFIG = SamplerConfig(max_batch=8, max_len=256, chunk_tokens=8, min_prompt_bucket=16)
PROMPTS = ["<|user|>:\nWhat is 12 + 30?\n\n<|assistant|>:", "the quick brown fox", "héllo",
           "print(x)"]  # 2 samples each fill the 8 slots: most tests share these shapes and programs


@pytest.fixture(scope="module")
def sampler(tiny):
    return Sampler(tiny[1], tiny[2], CONFIG)


@pytest.fixture(scope="module")
def sampled(sampler):
    """Two samples per prompt at temperature 1, no stop strings: the base of the stop tests."""
    return sampler.sample(PROMPTS, 2, SamplingConfig(max_new_tokens=32), seed=5)


def test_greedy_equals_hf_generate_on_a_padded_batch(tiny, sampler):
    hf_model, _, tokenizer = tiny
    prompts = PROMPTS + [p[::-1] for p in PROMPTS]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        out = hf_model.generate(**batch, max_new_tokens=32, do_sample=False,
                                eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id)
    ours = sampler.sample(prompts, 2, SamplingConfig(temperature=0.0, max_new_tokens=32))
    for row, (first, second) in zip(out[:, batch["input_ids"].shape[1]:].tolist(), ours):
        ends = tokenizer.eos_token_id in row
        expected = row[: row.index(tokenizer.eos_token_id) + 1] if ends else row
        assert first.token_ids == expected and first == second
        assert first.finish_reason == ("eos" if ends else "length")
        assert first.text == tokenizer.decode(expected, skip_special_tokens=ends)


def test_first_token_follows_the_model_distribution(tiny, sampler):
    hf_model, _, tokenizer = tiny
    prompt, n = "the quick", 2000
    with torch.no_grad():
        logits = hf_model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1].double()
    logp = torch.log_softmax(logits, -1).numpy()
    completions = sampler.sample([prompt], n, SamplingConfig(max_new_tokens=1), seed=3)[0]
    tokens = np.array([c.token_ids[0] for c in completions])
    np.testing.assert_allclose([c.logprob_sum for c in completions], logp[tokens], rtol=1e-4,
                               atol=1e-4)
    expected, observed = n * np.exp(logp), np.bincount(tokens, minlength=len(logp))
    big = expected >= 5  # chi-square needs expected counts >= 5: lump the tail into one bin
    assert big.sum() >= 5
    stat = scipy.stats.chisquare(np.append(observed[big], observed[~big].sum()),
                                 np.append(expected[big], expected[~big].sum()))
    assert stat.pvalue > 1e-3, stat


def test_top_k_samples_only_the_top_k(tiny, sampler):
    hf_model, _, tokenizer = tiny
    with torch.no_grad():
        logits = hf_model(**tokenizer("the quick", return_tensors="pt")).logits[0, -1]
    top3 = set(torch.topk(logits, 3).indices.tolist())
    completions = sampler.sample(["the quick"], 64, SamplingConfig(top_k=3, max_new_tokens=1), seed=4)[0]
    assert {c.token_ids[0] for c in completions} == top3


def stopped(sampler, stop):
    return sampler.sample(PROMPTS, 2, SamplingConfig(max_new_tokens=32, stop=stop), seed=5)


def assert_cut_at(base, cut, stop):
    """`cut` is `base` ended right after the first `stop`, at the token that completes it."""
    end = base.text.index(stop) + len(stop)
    assert (cut.text, cut.finish_reason, cut.stop_string) == (base.text[:end], "stop", stop)
    assert cut.token_ids == base.token_ids[: len(cut.token_ids)]
    assert base.logprob_sum <= cut.logprob_sum <= 0  # a prefix of the same draws


def clean_pieces(tokenizer, completion):
    """(index, text) of the completion's tokens that decode to whole characters."""
    pieces = [(i, tokenizer.decode([t])) for i, t in enumerate(completion.token_ids)]
    return [(i, p) for i, p in pieces if p and "\ufffd" not in p]


def test_multi_token_stop(tiny, sampler, sampled):
    tokenizer = tiny[2]
    base = sampled[0][1]
    # The last character of one token and the first of the next: a stop only the pair completes.
    pieces = dict(clean_pieces(tokenizer, base))
    i = next(i for i in sorted(pieces) if i + 1 in pieces)
    stop = pieces[i][-1] + pieces[i + 1][0]
    cut = stopped(sampler, [stop])[0][1]
    assert_cut_at(base, cut, stop)
    assert len(cut.token_ids) <= i + 2 and stop not in tokenizer.decode(cut.token_ids[:-1])


def test_stop_inside_a_longer_token(tiny, sampler, sampled):
    tokenizer = tiny[2]
    base = sampled[1][0]
    i, piece = next((i, p) for i, p in clean_pieces(tokenizer, base) if len(p) >= 3)
    stop = piece[1:-1]
    cut = stopped(sampler, [stop])[1][0]
    assert_cut_at(base, cut, stop)
    assert len(cut.token_ids) <= i + 1


def test_several_stops_end_at_the_earliest(tiny, sampler, sampled):
    tokenizer = tiny[2]
    base = sampled[3][1]
    (_, early), *_, (_, late) = clean_pieces(tokenizer, base)
    cuts = stopped(sampler, [late, early])
    assert_cut_at(base, cuts[3][1], early)


def test_no_stop_reached_changes_nothing(sampler, sampled):
    assert stopped(sampler, ["\x00never"]) == sampled


def test_seeds_reproduce_and_differ(sampler, sampled):
    assert sampler.sample(PROMPTS, 2, SamplingConfig(max_new_tokens=32), seed=5) == sampled
    other = sampler.sample(PROMPTS, 2, SamplingConfig(max_new_tokens=32), seed=6)
    assert [c.token_ids for cs in other for c in cs] != [c.token_ids for cs in sampled for c in cs]
    # Samples of one prompt differ from each other.
    assert sampled[0][0].token_ids != sampled[0][1].token_ids


def test_continuous_batching_gives_the_same_samples(sampler, sampled):
    """Sixteen rows through eight slots: slots are refilled with queued rows as rows finish, and
    a row's samples do not depend on its slot or neighbours (up to float noise of the batch)."""
    more = sampler.sample(PROMPTS, 4, SamplingConfig(max_new_tokens=32), seed=5)
    for got, base in zip(more, sampled):
        assert [c.token_ids for c in got[:2]] == [c.token_ids for c in base]
        assert [c.text for c in got[:2]] == [c.text for c in base]
        np.testing.assert_allclose([c.logprob_sum for c in got[:2]],
                                   [c.logprob_sum for c in base], rtol=1e-5)


def test_forked_prefix_gives_from_scratch_logits(tiny):
    _, model, tokenizer = tiny
    prompt = tokenizer(PROMPTS[0])["input_ids"]
    n, k, steps = len(prompt), 3, 4
    # One prompt prefilled once, forked into slots 0-2 of 8 (the other entries are dropped).
    slots = decode.init_slots(model.config, 8, 64)
    pad = lambda values, fill: jnp.array(values + [fill] * (8 - len(values)), jnp.int32)
    new = decode.Refill(
        tokens_pt=jnp.array([prompt[:-1] + [0] * (16 - n + 1)] + [[0] * 16], jnp.int32),
        mask_pt=jnp.array([[True] * (n - 1) + [False] * (16 - n + 1), [False] * 16]),
        start_p=jnp.zeros(2, jnp.int32), source_p=jnp.zeros(2, jnp.int32),
        dest_p=jnp.zeros(2, jnp.int32), slot_r=pad([0, 1, 2], 8), prompt_r=pad([], 0), last_token_r=pad([], prompt[-1]),
        position_r=pad([], n - 1), stream_r=jnp.zeros((8, 2), jnp.int32), budget_r=pad([], 8),
        seed_key=jax.random.key(0))
    graphdef, state = nnx.split(model)
    cache = decode.refill(StaticGraph.of(graphdef), state, slots, None, new, 16)[0].cache
    forward = jax.jit(lambda tokens, positions, cache: nnx.merge(graphdef, state)(
        tokens, positions, cache=cache))
    continuations = np.random.default_rng(0).integers(0, len(tokenizer), (k, steps))
    inputs = np.concatenate([np.full((k, 1), prompt[-1]), continuations], axis=1)
    forked = []
    for t in range(steps + 1):
        logits, cache = forward(jnp.asarray(np.pad(inputs[:, t: t + 1], ((0, 8 - k), (0, 0)))),
                                jnp.full((8, 1), n - 1 + t), cache)
        forked.append(logits[:k, 0])
    full = np.concatenate([np.tile(prompt[:-1], (k, 1)), inputs], axis=1)
    scratch, _ = forward(jnp.asarray(full), jnp.broadcast_to(jnp.arange(full.shape[1]), full.shape),
                         None)
    np.testing.assert_allclose(np.stack(forked, 1), scratch[:, n - 1:], atol=1e-4, rtol=1e-4)


def test_compiles_are_reused_across_lengths_and_parameters(sampler):
    sampler.sample(["a b c", "hello"], 4, SamplingConfig(temperature=0.7, max_new_tokens=32), seed=1)
    sizes = decode.decode_chunk._cache_size(), decode.refill._cache_size()
    sampler.sample(["the quick brown", "héllo wörld"], 4,
                   SamplingConfig(temperature=1.0, top_p=0.9, top_k=5, max_new_tokens=30, stop=("x",)), seed=2)
    assert (decode.decode_chunk._cache_size(), decode.refill._cache_size()) == sizes


def test_samplers_of_one_structure_share_programs_without_walking_it(tiny, sampler, monkeypatch):
    """Samplers are made anew for every round's policy: one StaticGraph per structure, so a call
    neither hashes nor compares the GraphDef, and finds the programs compiled for another sampler."""
    prompts, sampling = ["a b c", "hello"], SamplingConfig(temperature=0.7, max_new_tokens=32)
    first = sampler.sample(prompts, 4, sampling, seed=1)
    sizes = decode.decode_chunk._cache_size(), decode.refill._cache_size()
    graphdef, state = nnx.split(tiny[1])
    other = Sampler(nnx.merge(graphdef, jax.tree.map(jnp.copy, state)), tiny[2], CONFIG)
    assert other._graph is sampler._graph
    walks = []
    monkeypatch.setattr(nnx.GraphDef, "__hash__", lambda self: walks.append("hash") or 0)
    monkeypatch.setattr(nnx.GraphDef, "__eq__", lambda self, other: walks.append("eq") or self is other)
    assert other.sample(prompts, 4, sampling, seed=1) == first
    assert walks == []
    assert (decode.decode_chunk._cache_size(), decode.refill._cache_size()) == sizes


def test_a_prompt_without_room_gets_empty_length_completions(sampler):
    # vLLM ignores a prompt over max_model_len: an empty output, finish "length", and goes on
    ok, full = sampler.sample(["ok", "x" * 1000], 2, SamplingConfig(max_new_tokens=4), seed=1)
    assert full == [Completion("", [], "length", 0.0)] * 2
    assert all(c.token_ids for c in ok)
    assert sampler.sample(["x" * 1000], 3) == [[Completion("", [], "length", 0.0)] * 3]  # no device work


def test_an_empty_prompt_is_refused(sampler):
    with pytest.raises(ValueError, match="prompt 0 has no tokens"):
        sampler.sample([""], 1)
