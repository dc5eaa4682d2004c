"""Experiment configs (gin files) and notebooks; installed with the library as rstar_jax.experiments."""
