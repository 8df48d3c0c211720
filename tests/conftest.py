import os

# The suite runs on the CPU. Set before JAX starts: with JAX's CUDA plugin installed (the gpu-aot extra,
# for compiling to GPUs that are not here) JAX would otherwise try CUDA first and log its failure.
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

# TFDS's first import replaces builtins.__import__ with etils' lazy import for its duration, in every thread:
# a finalizer or a Grain thread that imports meanwhile gets a stand-in module (or a ValueError for a relative
# import), and pytest's unraisable-exception hook, importing tracemalloc then, fails the test that happened to
# import TFDS first (seen once: benchmarks_test's data_speed test after Grain had run in the same worker). So
# the suite imports TFDS here, before any test has made garbage or started a thread.
import tensorflow_datasets  # noqa: E402, F401

# XLA's CPU compiler dominates the suite's time; identical programs (every
# fresh init of the same network) compile once per session.
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_configure(config):
    if getattr(config, "cache", None) is not None:  # absent with -p no:cacheprovider
        jax.config.update("jax_compilation_cache_dir", str(config.cache.mkdir("jax_compilation_cache")))
