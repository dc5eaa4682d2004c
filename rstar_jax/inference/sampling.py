"""Next-token choice from logits: greedy, temperature, top-k and top-p (nucleus).

The parameters are traced scalars shared by the batch, so changing them never recompiles, and
`lax.cond` skips the work a setting does not need (no sort unless top-k/top-p filter).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class SamplingParams:
    """vLLM's conventions: temperature 0 is greedy; top_k <= 0 and top_p >= 1 disable filtering."""

    temperature: jax.Array  # f32[]
    top_k: jax.Array  # int32[]
    top_p: jax.Array  # f32[]

    @classmethod
    def make(cls, temperature: float, top_k: int, top_p: float) -> "SamplingParams":
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"sampling: need temperature >= 0 and 0 < top_p <= 1, "
                             f"got temperature={temperature}, top_p={top_p}")
        return cls(jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p))


def filter_logits(logits_bv: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """Sets logits outside the top-k and outside the top-p nucleus to -inf.

    Expects temperature already applied. Both filters keep every token tied with the threshold
    logit, so a tie can keep a few more than k tokens.
    """
    sorted_bv = -jnp.sort(-logits_bv, axis=-1)
    vocab = logits_bv.shape[-1]
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    kth_b1 = jax.lax.dynamic_slice_in_dim(sorted_bv, k - 1, 1, axis=-1)
    # Nucleus: the smallest prefix of the sorted tokens whose probability reaches top_p.
    probs_bv = jax.nn.softmax(sorted_bv, axis=-1)
    mass_before_bv = jnp.cumsum(probs_bv, axis=-1) - probs_bv
    in_nucleus_bv = mass_before_bv < top_p
    nucleus_min_b1 = jnp.min(jnp.where(in_nucleus_bv, sorted_bv, jnp.inf), axis=-1, keepdims=True)
    threshold_b1 = jnp.maximum(kth_b1, nucleus_min_b1)
    return jnp.where(logits_bv >= threshold_b1, logits_bv, -jnp.inf)


def _sample(logits_bv: jax.Array, uniform_b: jax.Array, params: SamplingParams) -> jax.Array:
    """Draws one token per row from softmax(filtered logits / temperature) by inverse CDF.

    One uniform number per row instead of a Gumbel per vocabulary entry keeps the random-number
    work independent of the vocabulary size.
    """
    scaled_bv = logits_bv / params.temperature
    needs_filter = (params.top_k > 0) | (params.top_p < 1)
    scaled_bv = jax.lax.cond(needs_filter, filter_logits, lambda x, *_: x,
                             scaled_bv, params.top_k, params.top_p)
    cdf_bv = jnp.cumsum(jax.nn.softmax(scaled_bv, axis=-1), axis=-1)
    u_b = uniform_b * cdf_bv[:, -1]
    tokens_b = jax.vmap(lambda cdf, u: jnp.searchsorted(cdf, u, side="right"))(cdf_bv, u_b)
    return jnp.minimum(tokens_b, logits_bv.shape[-1] - 1).astype(jnp.int32)


def next_tokens(logits_bv: jax.Array, uniform_b: jax.Array,
                params: SamplingParams) -> tuple[jax.Array, jax.Array]:
    """Chosen tokens int32[B] and their log-probabilities under the model (before temperature and
    filtering, like vLLM's raw logprobs). `uniform_b`: one draw in [0, 1) per row, used when
    sampling (the caller owns the random streams)."""
    logits_bv = logits_bv.astype(jnp.float32)
    tokens_b = jax.lax.cond(
        params.temperature > 0, _sample,
        lambda x, *_: jnp.argmax(x, axis=-1).astype(jnp.int32), logits_bv, uniform_b, params)
    logprobs_bv = jax.nn.log_softmax(logits_bv, axis=-1)
    return tokens_b, jnp.take_along_axis(logprobs_bv, tokens_b[:, None], axis=-1)[:, 0]
