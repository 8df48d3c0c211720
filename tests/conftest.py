import os

# The suite runs on the CPU. Set before JAX starts: with JAX's CUDA plugin installed (the gpu-aot extra,
# for compiling to GPUs that are not here) JAX would otherwise try CUDA first and log its failure.
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

# XLA's CPU compiler dominates the suite's time; identical programs (every
# fresh init of the same network) compile once per session.
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_configure(config):
    if getattr(config, "cache", None) is not None:  # absent with -p no:cacheprovider
        jax.config.update("jax_compilation_cache_dir", str(config.cache.mkdir("jax_compilation_cache")))
