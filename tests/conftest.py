import jax

# XLA's CPU compiler dominates the suite's time; identical programs (every
# fresh init of the same network) compile once per session.
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_configure(config):
    cache = config.cache.mkdir("jax_compilation_cache")
    jax.config.update("jax_compilation_cache_dir", str(cache))
