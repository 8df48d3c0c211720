"""JAX's persistent compilation cache for the installed commands: compile once per machine.

A training step compiles in 50-90 s on an H200 (XLA:GPU autotunes its
convolutions) and in tens of seconds on a CPU; without a cache every run,
resume and `fastgan-sample` pays it again. Every command turns on JAX's own
cache (https://docs.jax.dev/en/latest/persistent_compilation_cache.html)
before it compiles anything, in the user's cache folder beside the decoded
images:

    FASTGAN_JAX_COMPILE_CACHE unset   $XDG_CACHE_HOME/fastgan_jax/jax (~/.cache/fastgan_jax/jax)
    FASTGAN_JAX_COMPILE_CACHE=DIR     DIR
    FASTGAN_JAX_COMPILE_CACHE=off     no cache (also: 0, false, no, or empty)

JAX's own `JAX_COMPILATION_CACHE_DIR` (or `jax_compilation_cache_dir` set
by the caller) wins over all of these. With the cache JAX also keeps
XLA:GPU's per-fusion autotuning results (its default
`jax_persistent_cache_enable_xla_caches`), so a second start on the same GPU
neither compiles nor autotunes. Every program is written, also those that
compile in under a second (JAX's own threshold is one second: a start
compiles dozens of small programs besides the step). Processes of one run share the
cache safely: only process 0 writes, and an entry is never rewritten.

Library users (JAX code importing fastgan_jax) keep their own settings: only
the commands call `enable`.
"""

import os
import pathlib
import warnings

ENV = "FASTGAN_JAX_COMPILE_CACHE"
OFF = ("", "0", "off", "false", "no")


def default_dir() -> pathlib.Path:
    """$XDG_CACHE_HOME/fastgan_jax/jax, else ~/.cache/fastgan_jax/jax."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(root) / "fastgan_jax" / "jax"


def _writable(folder: pathlib.Path) -> str | None:
    """None if `folder` can be created and written, else why not (one line)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}-{os.urandom(4).hex()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def enable() -> pathlib.Path | None:
    """Turns on JAX's persistent compilation cache as the module docstring says; call before compiling.

    Returns:
      The cache folder, or None when it is off: by FASTGAN_JAX_COMPILE_CACHE, or because the folder cannot be
      written (then one warning names it; the command runs on, compiling as without a cache).
    """
    import jax

    if jax.config.jax_compilation_cache_dir:  # JAX_COMPILATION_CACHE_DIR, or a caller's choice
        return pathlib.Path(jax.config.jax_compilation_cache_dir)
    value = os.environ.get(ENV)
    if value is not None and value.strip().lower() in OFF:
        return None
    folder = pathlib.Path(value).expanduser() if value else default_dir()
    why = _writable(folder)
    if why is not None:
        warnings.warn(
            f"cannot write the compilation cache {folder} ({why}); compiling without it "
            f"(set {ENV}=DIR to move it, or {ENV}=off)",
            stacklevel=2,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    return folder
