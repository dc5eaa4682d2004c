"""Top-k / top-p filtering and the greedy / sampled next-token choice on hand-made logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rstar_jax.inference import sampling
from rstar_jax.inference.sampling import SamplingParams

# Jitted once here: op-by-op execution would compile every primitive separately.
filter_logits, next_tokens = jax.jit(sampling.filter_logits), jax.jit(sampling.next_tokens)

LOGITS = jnp.log(jnp.array([[0.05, 0.4, 0.1, 0.3, 0.15], [0.2, 0.2, 0.2, 0.2, 0.2]]))


@pytest.mark.parametrize("top_k, top_p, kept", [
    (2, 1.0, [[1, 3], [0, 1, 2, 3, 4]]),  # ties at the k-th logit are all kept
    (0, 0.65, [[1, 3], [0, 1, 2, 3, 4]]),  # 0.4 + 0.3 reaches 0.65; uniform row ties
    (0, 0.75, [[1, 3, 4], [0, 1, 2, 3, 4]]),
    (3, 0.5, [[1, 3], [0, 1, 2, 3, 4]]),  # the stricter filter wins
    (-1, 1.0, [[0, 1, 2, 3, 4]] * 2),
])
def test_filter_keeps_top_k_and_nucleus(top_k, top_p, kept):
    out = filter_logits(LOGITS, jnp.int32(top_k), jnp.float32(top_p))
    assert [np.flatnonzero(np.isfinite(row)).tolist() for row in np.asarray(out)] == kept


def test_greedy_takes_argmax_and_reports_model_logprob():
    tokens, logprobs = next_tokens(LOGITS, jnp.full((2,), 0.5), SamplingParams.make(0.0, -1, 1.0))
    assert tokens.tolist()[0] == 1
    np.testing.assert_allclose(logprobs, jax.nn.log_softmax(LOGITS)[jnp.arange(2), tokens],
                               rtol=1e-6)


def test_logprob_of_a_near_certain_token_keeps_its_precision():
    # -log1p(e^-10) ~ -4.5e-5: subtracting a logsumexp rounded at 20 (float32 spacing ~2e-6)
    # would be 1% off; shifting by the max first leaves the rounding of 1 + e^-10 (~0.3%).
    _, logprobs = next_tokens(jnp.array([[20.0, 10.0]]), jnp.zeros(1),
                              SamplingParams.make(0.0, -1, 1.0))
    np.testing.assert_allclose(logprobs, [-np.log1p(np.exp(-10.0))], rtol=3e-3)


def test_sampling_frequencies_follow_filtered_softmax():
    n = 20000
    logits = jnp.broadcast_to(LOGITS[0], (n, 5))
    uniform = jax.random.uniform(jax.random.key(1), (n,))
    tokens, _ = next_tokens(logits, uniform, SamplingParams.make(0.5, 3, 1.0))
    expected = np.array([0, 0.4**2, 0, 0.3**2, 0.15**2])  # temperature 0.5 squares the probs
    np.testing.assert_allclose(np.bincount(tokens, minlength=5) / n, expected / expected.sum(),
                               atol=0.015)


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams.make(1.0, -1, 0.0)
