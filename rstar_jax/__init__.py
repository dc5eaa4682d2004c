"""rstar-jax: rStar-Math self-evolution in JAX/Flax."""
