import os
import pathlib

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


# pytest-xdist's `--dist loadfile` hands out files with the most tests first, so the one-test files that take
# minutes (the GPU session script, two training processes, kill -9 reruns) would start last and leave the
# other worker idle at the end. They go first, the rest most tests first (pyproject's `--no-loadscope-reorder`
# keeps this order); the order changes no result, only the suite's time on two workers.
FIRST = ("benchmarks/gpu_session_test.py", "train/multihost_test.py", "train/fault_injection_test.py")


def pytest_collection_modifyitems(config, items):
    here = pathlib.Path(__file__).parent
    missing = [name for name in FIRST if not (here / name).is_file()]
    assert not missing, f"conftest.FIRST names files that are not there: {missing}"
    files = {}
    for item in items:
        files.setdefault(item.path, []).append(item)
    first = {here / name: rank for rank, name in enumerate(FIRST)}
    order = sorted(files, key=lambda path: (first.get(path, len(FIRST)), -len(files[path])))
    items[:] = [item for path in order for item in files[path]]
