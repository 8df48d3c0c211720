import os

# XLA's CPU compiler dominates the suite's time. Without LLVM's optimisations it compiles in about half
# the time (the test networks are tiny: their programs run in milliseconds either way); subprocesses that
# tests start inherit the flags. Set before JAX starts its CPU backend.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

import jax  # noqa: E402

# Identical programs (every fresh init of the same network) compile once per session.
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_configure(config):
    if getattr(config, "cache", None) is not None:  # absent with -p no:cacheprovider
        jax.config.update("jax_compilation_cache_dir", str(config.cache.mkdir("jax_compilation_cache")))
