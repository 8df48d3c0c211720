"""The installed commands' entry points (pyproject.toml `[project.scripts]`, and train.py / upscale.py).

Ctrl-C at any moment ends a command with one line and exit code 130, never
a traceback: while the command's module loads (JAX, the networks) the
process exits at once, since nothing is there to save and a
KeyboardInterrupt inside a half-initialised extension module can crash the
interpreter; afterwards the command's own handling applies (training saves
a checkpoint first). Python warnings (skipped files, upscaled images, a
damaged checkpoint) print as `warning: ...` lines, without a source line.
Every command compiles through JAX's persistent compilation cache
(`compile_cache`: a second start of the same run compiles nothing again)
and runs Python's garbage collector less often (`collect_less`).
"""

import argparse
import contextlib
import ctypes
import gc
import importlib
import os
import re
import signal
import sys
import tempfile
import warnings
from typing import NoReturn

from fastgan_jax.commands import compile_cache

_stderr = 2  # the terminal's file descriptor, also while `_without_cuda_stub_lines` holds descriptor 2


def _exit_now(signum, frame):
    os.write(_stderr, b"interrupted\n")
    os._exit(130)


# The CUDA stub's lines: JAX's CUDA plugin (the gpu-aot extra, for compiling to GPUs that are not here) loads
# where no CUDA driver is and logs, from C++, that it found none, before anything can configure that logging.
CUDA_STUB_NOISE = re.compile(
    rb"cudart_stub\.cc:\d+\] Could not find cuda drivers|^WARNING: All log messages before absl::InitializeLog"
)


def _no_cuda_driver() -> bool:
    """Whether JAX's CUDA plugin is installed, no platform was chosen (JAX_PLATFORMS) and no CUDA driver loads:
    then JAX would try CUDA, fail and log a traceback before it falls back to the CPU."""
    if os.environ.get("JAX_PLATFORMS") or importlib.util.find_spec("jax_cuda12_plugin") is None:
        return False
    try:
        ctypes.CDLL("libcuda.so.1")  # what the plugin itself loads
    except OSError:
        return True
    return False


def _load_jax_plugins() -> None:
    """Loads JAX's PJRT plugins now (they log as they load), without starting a backend: multi-host runs call
    `jax.distributed.initialize` before that. JAX has no public call for it; without this one (a JAX that
    renamed it) the plugins load later, as usual."""
    from jax._src import xla_bridge

    getattr(xla_bridge, "_discover_and_register_pjrt_plugins", lambda: None)()


@contextlib.contextmanager
def _without_cuda_stub_lines():
    """Runs the block with file descriptor 2 in a file, then writes back what it got but the CUDA stub's lines."""
    global _stderr
    sys.stderr.flush()
    _stderr = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(_stderr, 2)
            os.close(_stderr)
            _stderr = 2
            caught.seek(0)
            os.write(2, b"".join(line for line in caught if not CUDA_STUB_NOISE.search(line)))


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The commands' --help: their module docstring as written, and every option's default."""


def fail(message: str) -> NoReturn:
    """Ends a command on the user's own mistake (a flag, an input, a run): one `error: ...` line on stderr and exit
    code 2, as argparse's usage errors. Failures of the run itself (disk full, non-finite losses) exit 1."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def print_any_file_name() -> None:
    """Lets stdout print file names that are not UTF-8 (`caf\\xe9.png` in Latin-1, which Python reads as
    `caf\\udce9.png`): their bytes are written as the file system has them, instead of a UnicodeEncodeError.
    (stderr escapes them already.)"""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")


def collect_less() -> None:
    """Lets Python's cyclic garbage collector run after every 50,000 net allocations instead of 700.

    A command's start-up (importing JAX, tracing and lowering the step) allocates millions of objects that live to
    its end, and the collector walks them again and again: at CPython's default it took about 0.55 s of a cached
    start's 6.3 s (cpu_quick, benchmarks/compile_cache.py) and 1.4 s of the 256 px step's first trace and compile
    (docs/speed.md). The commands call it first; a library leaves the process's collector as its caller set it.
    """
    gc.set_threshold(50_000, *gc.get_threshold()[1:])


def run(module: str) -> None:
    """Runs the command `fastgan_jax.commands.MODULE` (its `main()`): loaded inside the Ctrl-C guard."""
    collect_less()
    warnings.formatwarning = _warning_line  # a warning is a line for the user, not a source location
    print_any_file_name()
    signal.signal(signal.SIGINT, _exit_now)
    if _no_cuda_driver():
        os.environ["JAX_PLATFORMS"] = "cpu"  # JAX would fail on CUDA first, with a traceback
    try:
        with _without_cuda_stub_lines():
            main = importlib.import_module(f"fastgan_jax.commands.{module}").main
            _load_jax_plugins()
    finally:
        # From here Ctrl-C raises KeyboardInterrupt, which the command handles (training: a checkpoint first), also
        # where the process started with SIGINT ignored (a script's background job; `kill -INT` still reaches it,
        # as it reaches the training loop's own handler), instead of being ignored during the first compile.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    compile_cache.enable()  # before anything compiles
    try:
        main()
    except KeyboardInterrupt:  # before the command's own handling (training's) is in place
        # XLA's threads may be compiling: the interpreter's finalisation under them crashes (SIGSEGV), and
        # nothing is there to save yet. Flush what was printed and leave at once.
        print("interrupted", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(130)


def train() -> None:
    """fastgan-train (fastgan_jax/commands/train.py)."""
    run("train")


def sample() -> None:
    """fastgan-sample (fastgan_jax/commands/sample.py)."""
    run("sample")


def upscale() -> None:
    """fastgan-upscale (fastgan_jax/commands/upscale.py)."""
    run("upscale")


def evaluate() -> None:
    """fastgan-evaluate (fastgan_jax/commands/evaluate.py)."""
    run("evaluate")


def evaluate_sr() -> None:
    """fastgan-evaluate-sr (fastgan_jax/commands/evaluate_sr.py)."""
    run("evaluate_sr")
