"""GPUs that need not be here: XLA:GPU targets for compiling without the card ("deviceless" compilation).

Each card class in `gpu_targets/` is a GpuTargetConfig text in the field set
of XLA's own RTX A6000 spec (which the pinned jaxlib parses), written from
the card's published figures (the file's comments cite them). JAX builds
compile-only devices from it with its CUDA plugin and ptxas (`pip install -e
'.[gpu-aot]'`), while running on the CPU: `train_speed.py` and
`upscale_speed.py` set JAX_PLATFORMS=cpu themselves when given `--target`.
The target's memory size is part of the program (XLA:GPU rematerialises
when a program would not fit), so each card is compiled with its own.
"""

import collections
import os
import pathlib
import re
import sys

FOLDER = pathlib.Path(__file__).resolve().parent / "gpu_targets"
MEMORY = re.compile(r"^\s*device_memory_size:\s*(\d+)\s*$", re.MULTILINE)  # a field, not a comment


def wanted() -> bool:
    """Whether the command line asks for --target (then JAX must start on the CPU: call before importing it)."""
    return any(arg == "--target" or arg.startswith("--target=") for arg in sys.argv[1:])


def names() -> list[str]:
    """The bundled GPU targets, e.g. ['a100_40gb', 'gtx1050ti', 'rtx2070super', 'rtx3060', 'rtx4090']."""
    return sorted(p.stem for p in FOLDER.glob("*.txtpb"))


def load(target: str) -> tuple[list, int]:
    """(compile-only devices, memory in bytes) of a bundled target's name or a GpuTargetConfig file.

    Needs JAX's CUDA plugin, not a GPU. Raises SystemExit with one line when the target is unknown or
    cannot be made.
    """
    path = FOLDER / f"{target}.txtpb" if target in names() else pathlib.Path(target)
    if not path.is_file():
        raise SystemExit(f"error: --target {target}: no such file, nor a bundled target ({', '.join(names())})")
    spec = path.read_text()
    size = MEMORY.search(spec)
    if not size:
        raise SystemExit(f"error: --target {target}: no device_memory_size in {path}")
    try:
        from jax.experimental import topologies

        devices = topologies.get_topology_desc(platform="cuda", target_config=spec, topology="1x1x1").devices
    except Exception as e:  # no CUDA plugin, or a spec this jaxlib does not parse
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise SystemExit(
            f"error: --target {target}: no XLA:GPU target ({first}); pip install -e '.[gpu-aot]'"
        ) from None
    return devices, int(size.group(1))


def limit(memory_size: int) -> int:
    """What JAX's allocator would allow on a card of `memory_size` bytes: XLA_PYTHON_CLIENT_MEM_FRACTION of it
    (0.75 unless set), the `bytes_limit` that `remat=auto` reads on a real card."""
    return int(memory_size * float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.75")))


def compile_uncached(lowered, options=None):
    """`lowered.compile(compiler_options=options)` with JAX's persistent cache off: it would write an
    executable for a device that is not here, and warn that it cannot read it back."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    # JAX decides once per process whether the cache is used: resetting makes it look at the flag again.
    cached = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    try:
        return lowered.compile(compiler_options=options)
    finally:
        jax.config.update("jax_enable_compilation_cache", cached)
        compilation_cache.reset_cache()


def describe(name: str) -> tuple[str, int]:
    """(the card's name, its memory in bytes) from a bundled target's text, without JAX."""
    spec = (FOLDER / f"{name}.txtpb").read_text()
    card = re.search(r'device_description_str:\s*"([^"]*)"', spec).group(1)
    return card, int(MEMORY.search(spec).group(1))


# HLO instructions that launch nothing on a GPU: buffers, views, tuples and scheduling markers.
_FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "opt-barrier", "after-all"}
_FREE |= {"partition-id", "replica-id", "add-dependency", "copy-done", "send-done", "recv-done"}
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%?[\w.\-]+ = .*? ([a-z][\w\-]*)\(")
_COMPUTATION = re.compile(r"^(ENTRY )?%?([\w.\-]+) .*\{$")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
# What a launch computes, by the first name scope found in its op_name: the modules (forward and backward) and
# the step's scopes (fastgan_jax/train/step.py: Adam and the gradient norms, the EMA, the non-finite guard).
PARTS = {"D": "Discriminator", "G": "Generator", "optimizer": "optimizer/", "ema": "ema/", "guard": "guard/"}


def kernels(hlo_text: str) -> dict:
    """What XLA:GPU launches per run of a compiled program: {fusions, library, copies, other, total}.

    `hlo_text` is the optimized HLO of a program compiled for a GPU (`compiled.as_text()`, deviceless or
    not). Every instruction of its entry computation that is not free (`_FREE`: parameters, tuples,
    bitcasts, ...) is one launch: `fusion` (XLA's generated kernels, Triton GEMM fusions included),
    `custom-call` (cuDNN convolutions, cuBLAS GEMMs: "library"), `copy`/`copy-start` (layout changes and
    moves) and the rest ("other"). Nested control flow (`while`, `conditional`, `call`) counts as one launch
    each (a loop's trip count is not known here); FastGAN's step has none. CUDA graphs (XLA's command
    buffers, applied to the thunks after this HLO) group launches without changing the count.

    Also "parts": the same launches by what they compute, from the name scopes in each instruction's
    `op_name` (`PARTS`: the networks' modules, forward and backward, and the step's named scopes), the
    rest under "other". A fusion counts for the scope of its root, the value it writes: XLA fuses the EMA's
    and most of Adam's arithmetic into the guard's selects, so "guard" is the parameters' update as a whole.
    """
    counts, parts, entry = collections.Counter(), collections.Counter(), False
    for line in hlo_text.splitlines():
        head = _COMPUTATION.match(line)
        if head:
            entry = bool(head.group(1))
            continue
        m = _INSTRUCTION.match(line) if entry else None
        if not m or m.group(1) in _FREE:
            continue
        op = m.group(1)
        kind = {"fusion": "fusions", "custom-call": "library", "copy": "copies", "copy-start": "copies"}
        counts[kind.get(op, "other")] += 1
        scope = _OP_NAME.search(line)
        parts[next((p for p, name in PARTS.items() if scope and name in scope.group(1)), "other")] += 1
    out = {k: counts[k] for k in ("fusions", "library", "copies", "other")}
    return out | {"total": sum(out.values()), "parts": {p: parts[p] for p in [*PARTS, "other"]}}
