"""Seconds per 100 PULSE steps through the FastGAN generator.

    python benchmarks/upscale_speed.py --im-size 256 1024 --restarts 8 --precision float32 bfloat16

As the official reference in ../shared/reference: default widths (ngf 64,
nz 256), R restarts searched together, MSE of the 16x16 area-downsampled
output, Adam with projection to the sphere; the LR is uniform noise in
[-1, 1] (the speed does not depend on it). The whole search is one compiled
call; compile time is reported separately.
"""

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax

from fastgan_jax.nn.models import init_generator
from fastgan_jax.sr import pulse
from fastgan_jax.train import state


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--im-size", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--restarts", type=int, default=8)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr-size", type=int, default=16)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--nz", type=int, default=256)
    p.add_argument("--precision", nargs="+", default=["float32", "bfloat16"], choices=sorted(state.PRECISIONS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="append one JSON line per setting to this file")
    args = p.parse_args()
    dev = jax.local_devices()[0]
    for im_size in args.im_size:
        for precision in args.precision:
            G, _ = state.make_models(im_size=im_size, ngf=args.ngf, ndf=8, nz=args.nz, precision=precision)
            variables = init_generator(G, jax.random.key(0))
            lr = jax.random.uniform(jax.random.key(1), (1, args.lr_size, args.lr_size, 3), minval=-1.0, maxval=1.0)

            times = []
            for seed in range(args.repeats + 1):  # the first call compiles
                t0 = time.perf_counter()
                res = pulse.upscale(
                    G, variables, lr, key=jax.random.key(seed), restarts=args.restarts, steps=args.steps
                )
                jax.block_until_ready(res)
                times.append(time.perf_counter() - t0)
            first, times = times[0], times[1:]
            per100 = min(times) * 100 / args.steps
            peak = (dev.memory_stats() or {}).get("peak_bytes_in_use")
            mem = f"{peak / 2**30:.2f} GiB" if peak else "n/a"
            print(
                f"{dev.device_kind} | {im_size}px {precision} | {args.restarts} restarts | "
                f"{per100:.3f} s / 100 steps | first call (compile + run) {first:.1f} s | "
                f"peak mem {mem}",
                flush=True,
            )
            if args.json:
                row = {"device": dev.device_kind, "im_size": im_size, "precision": precision}
                row |= {"restarts": args.restarts, "lr_size": args.lr_size, "s_per_100_steps": per100}
                row |= {"compile_and_run_s": first, "peak_gib": peak / 2**30 if peak else None}
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
