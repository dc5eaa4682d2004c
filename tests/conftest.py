"""Session-wide setup: one persistent XLA compilation cache for the whole run.

The CLI keeps compiled programs in its workdir unless a cache is already configured; without this,
the first in-process CLI test would claim the cache for every later test. Identical programs that
different tests compile (the same tiny models) load from it."""

import tempfile

import jax

jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="rstar_jax_xla_"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
