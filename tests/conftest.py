import os

# XLA's CPU compiler dominates the suite's time. Without LLVM's optimisations it compiles in about half the
# time (set before JAX starts its backend; subprocesses inherit it). parity_test.py asks for XLA's default
# optimisation in its own programs.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

import jax  # noqa: E402

# Identical programs (every fresh init of the same network) compile once per session.
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_configure(config):
    if getattr(config, "cache", None) is not None:  # absent with -p no:cacheprovider
        jax.config.update("jax_compilation_cache_dir", str(config.cache.mkdir("jax_compilation_cache")))
