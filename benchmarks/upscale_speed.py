"""Seconds per 100 PULSE steps through the FastGAN generator, and the search's memory.

    python benchmarks/upscale_speed.py --im-size 256 1024 --restarts 8 --precision float32 bfloat16
    python benchmarks/upscale_speed.py --im-size 256 --precision float32 --target gtx1050ti rtx3060

As the official reference in ../shared/reference: default widths (ngf 64,
nz 256), R restarts searched together, MSE of the 16x16 area-downsampled
output, Adam with projection to the sphere; the LR is uniform noise in
[-1, 1] (the speed does not depend on it). The whole search is one compiled
call; compile time is reported separately.

`--target NAME|FILE ...` times nothing: it compiles the search for this
machine's device and for GPUs that need not be here (`targets.py`; `pip
install -e '.[gpu-aot]'`) and prints XLA's memory analysis of each (JSON:
"memory_bytes", and "gpu" by target): arguments (the generator's variables,
the LR images, the keys), outputs (every candidate's image), temporaries.
"""

import argparse
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
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fastgan_jax.nn.models import init_generator
from fastgan_jax.sr import pulse
from fastgan_jax.train import memory, state

# Without a device XLA:GPU picks no tiling for the search's small Triton matrix products (the area
# downsampling's, "Couldn't find output tile sizes"): deviceless compiles of the search use cuBLAS for them,
# as autotuning may choose on a real card; their workspace is a few MB at most.
NO_TRITON = {"xla_gpu_enable_triton_gemm": False}


def search(args) -> pulse.Search:
    return pulse.Search(restarts=args.restarts, steps=args.steps)


def timed(G, variables, lr, args) -> dict:
    """Seconds per 100 steps (best of `args.repeats` calls after the compiling one) and the device's peak."""
    times = []
    for seed in range(args.repeats + 1):  # the first call compiles
        t0 = time.perf_counter()
        res = pulse.upscale(G, variables, lr, key=jax.random.key(seed), search=search(args))
        jax.block_until_ready(res)
        times.append(time.perf_counter() - t0)
    peak = (jax.local_devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    return {
        "s_per_100_steps": min(times[1:]) * 100 / search(args).steps,
        "compile_and_run_s": times[0],
        "peak_gib": peak / 2**30 if peak else None,
    }


def compiled_memory(G, variables, lr, args, gpus) -> dict:
    """XLA's memory analysis of the search for this machine's device and for each of `gpus`."""
    settings = {"key": jax.random.key(0), "search": search(args)}
    out = {"memory_bytes": memory.step_bytes(pulse.lower(G, variables, lr, **settings).compile()), "gpu": {}}
    for name, (devices, memory_size) in gpus.items():
        sharding = NamedSharding(Mesh(np.asarray(devices), ("data",)), P())
        t0 = time.perf_counter()
        compiled = targets.compile_uncached(pulse.lower(G, variables, lr, sharding=sharding, **settings), NO_TRITON)
        out["gpu"][name] = {
            "device": devices[0].device_kind,
            "memory_size": memory_size,
            "compile_s": round(time.perf_counter() - t0, 2),
            "memory_bytes": memory.step_bytes(compiled),
        }
    return out


def report(row) -> None:
    head = f"{row['device']} | {row['im_size']}px {row['precision']} | {row['restarts']} restarts"
    if "s_per_100_steps" in row:
        peak = f"{row['peak_gib']:.2f} GiB" if row["peak_gib"] else "n/a"
        print(
            f"{head} | {row['s_per_100_steps']:.3f} s / 100 steps | first call (compile + run) "
            f"{row['compile_and_run_s']:.1f} s | peak mem {peak}",
            flush=True,
        )
        return
    print(f"{head} | {gib_line(row['memory_bytes'])}", flush=True)
    for name, g in row["gpu"].items():
        print(f"  XLA:GPU {g['device']} ({name}) | compile {g['compile_s']:.1f} s | {gib_line(g['memory_bytes'])}")


def gib_line(m: dict) -> str:
    g = {k: v / 2**30 for k, v in m.items()}
    return f"args {g['argument']:.2f} + out {g['output']:.2f} + temp {g['temp']:.2f} = {g['total']:.2f} GiB"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--im-size", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--restarts", type=int, default=pulse.Search.restarts)
    p.add_argument("--steps", type=int, default=pulse.Search.steps)
    p.add_argument("--lr-size", type=int, default=16)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--nz", type=int, default=256)
    p.add_argument("--precision", nargs="+", default=["float32", "bfloat16"], choices=sorted(state.PRECISIONS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--target",
        nargs="+",
        default=[],
        help=f"no timing: XLA's memory analysis of the search compiled for this device and for these GPUs, "
        f"which need not be here (bundled: {', '.join(targets.names())}; or a GpuTargetConfig file)",
    )
    p.add_argument("--json", default=None, help="append one JSON line per setting to this file")
    args = p.parse_args()
    gpus = {name: targets.load(name) for name in args.target}
    for im_size in args.im_size:
        for precision in args.precision:
            G, _ = state.make_models(im_size=im_size, ngf=args.ngf, ndf=8, nz=args.nz, precision=precision)
            variables = init_generator(G, jax.random.key(0))
            lr = jax.random.uniform(jax.random.key(1), (1, args.lr_size, args.lr_size, 3), minval=-1.0, maxval=1.0)
            row = {"device": jax.local_devices()[0].device_kind, "im_size": im_size, "precision": precision}
            row |= {"restarts": args.restarts, "lr_size": args.lr_size}
            row |= compiled_memory(G, variables, lr, args, gpus) if gpus else timed(G, variables, lr, args)
            report(row)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
