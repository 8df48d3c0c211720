"""Where a training step's time goes: a `jax.profiler` trace of a few steps, its kernel count and top kernels.

    python benchmarks/profile_step.py --im-size 256 --precision bfloat16 --out runs/profile

Builds the step as `train_speed.py` does (synthetic uint8 images resident on
the device, LPIPS-VGG, batch 8), compiles it, runs `--warmup` steps, then
traces `--steps` steps with `jax.profiler.trace` into `--out` (the raw trace
stays there: TensorBoard's or Perfetto's viewer opens it). From the trace's
XSpace (`jax.profiler.ProfileData`) it counts what ran: on a GPU every event on
the device's streams (kernels and memory copies, `/device:GPU:N` planes); on
a CPU every thunk XLA's CPU client ran. Prints the count per step, the busy
time against the wall time, and the `--top` most expensive kernels by total
time with their share of the busy time; `--json` appends the figures.
"""

import argparse
import collections
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import train_speed  # noqa: E402  (sets up sys.path for fastgan_jax)

from fastgan_jax.train.state import create_train_state, make_models, make_optimizer  # noqa: E402
from fastgan_jax.train.step import make_mesh  # noqa: E402


def kernel_events(xspace_path) -> list[tuple[str, float]]:
    """(name, duration in ns) of every kernel or copy a device ran in a trace, or every XLA thunk on a CPU."""
    profile = jax.profiler.ProfileData.from_file(str(xspace_path))
    gpu = [p for p in profile.planes if p.name.startswith("/device:GPU:")]
    events = []
    if gpu:
        for plane in gpu:
            for line in plane.lines:
                if line.name.startswith("Stream"):
                    events += [(e.name, e.duration_ns) for e in line.events]
        return events
    for plane in profile.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if line.name.startswith("tf_XLA"):
                skip = ("end: ", "ThreadpoolListener", "ThunkExecutor")  # markers and the wrapper of all thunks
                events += [(e.name, e.duration_ns) for e in line.events if not e.name.startswith(skip)]
    return events


def summarize(events, steps: int, wall_s: float, top: int) -> dict:
    """Kernels per step, busy time and the `top` kernels by total time with their share of the busy time."""
    total = collections.Counter()
    count = collections.Counter()
    for name, ns in events:
        total[name] += ns
        count[name] += 1
    busy = sum(total.values())
    rows = [
        {"kernel": n, "calls_per_step": count[n] / steps, "ms_per_step": t / steps / 1e6, "share": t / busy}
        for n, t in total.most_common(top)
    ]
    return {
        "kernels_per_step": len(events) / steps,
        "distinct_kernels": len(total),
        "busy_ms_per_step": busy / steps / 1e6,
        "wall_ms_per_step": 1000 * wall_s / steps,
        "top": rows,
    }


def table(s: dict) -> str:
    lines = [
        f"{s['kernels_per_step']:.0f} kernels per step ({s['distinct_kernels']} distinct); busy "
        f"{s['busy_ms_per_step']:.2f} ms of {s['wall_ms_per_step']:.2f} ms wall per step",
        "",
        "| kernel | calls/step | ms/step | share of busy time |",
        "|---|---|---|---|",
    ]
    for r in s["top"]:
        name = r["kernel"] if len(r["kernel"]) <= 80 else r["kernel"][:77] + "..."
        lines.append(f"| `{name}` | {r['calls_per_step']:.0f} | {r['ms_per_step']:.3f} | {100 * r['share']:.1f}% |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--im-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--precision", default="bfloat16")
    p.add_argument("--remat", default="none")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--nz", type=int, default=256)
    p.add_argument("--dec-width", type=int, default=32)
    p.add_argument("--recon", default="lpips")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="traced steps")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--out", required=True, help="folder for the raw trace (and profile.md)")
    p.add_argument("--json", default=None, help="append the figures as one JSON line")
    args = p.parse_args()

    tx = make_optimizer()
    kw = {"ngf": args.ngf, "ndf": args.ndf, "nz": args.nz, "dec_width": args.dec_width}
    G, D = make_models(im_size=args.im_size, precision=args.precision, remat=args.remat, **kw)
    step = train_speed._step(G, D, tx, args.recon, args.batch, make_mesh())
    state = create_train_state(G, D, jax.random.key(0), tx_g=tx, tx_d=tx)
    images = jax.random.randint(jax.random.key(1), (64, args.im_size, args.im_size, 3), 0, 256).astype(jnp.uint8)
    recon = train_speed._recon_params(args.recon)
    key = jax.random.key(2)
    for _ in range(max(args.warmup, 1)):  # the first call compiles
        state, metrics = step(state, images, key, recon)
    jax.block_until_ready(state)
    out = pathlib.Path(args.out)
    with jax.profiler.trace(str(out)):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = step(state, images, key, recon)
        jax.block_until_ready((state, metrics))
        wall = time.perf_counter() - t0
    trace = sorted(out.glob("**/*.xplane.pb"))[-1]
    s = summarize(kernel_events(trace), args.steps, wall, args.top)
    device = jax.local_devices()[0].device_kind
    text = f"{device}, {args.im_size}px batch {args.batch} {args.precision} remat={args.remat}: " + table(s)
    print(text)
    (out / "profile.md").write_text(text + f"\n\nraw trace: {trace}\n")
    if args.json:
        row = {"device": device, "im_size": args.im_size, "batch": args.batch, "precision": args.precision}
        with open(args.json, "a") as f:
            f.write(json.dumps(row | {"remat": args.remat, "trace": str(trace), **s}) + "\n")


if __name__ == "__main__":
    main()
