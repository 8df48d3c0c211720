"""FID and KID of a run's EMA samples against an image folder.

    fastgan-evaluate --workdir RUN [--data DIR] [--n 5000]
    python -m fastgan_jax.commands.evaluate ...  (the same)

Real images get the training preprocessing (the run's im_size, aspect and
background); their Inception features are cached per folder and size.
Prints the figures and writes them as JSON (default RUN/eval/fid_<step>.json).
"""

import argparse
import json
import pathlib
import sys
import time

import jax

from fastgan_jax import data
from fastgan_jax.metrics import inception
from fastgan_jax.train import runs


def evaluate(workdir, *, data_source=None, n=5000, step=None, seed=0, cache_dir=None):
    """{'fid', 'kid', ...} of the run's EMA generator against its data (or `data_source`)."""
    run = runs.load_run(workdir, step)  # a clear error when there is no run
    G, variables, cfg, step = run.generator, run.g_variables, run.config, run.step
    source = data_source or cfg["data"]
    t0 = time.perf_counter()
    real = inception.real_features(
        source, cfg["im_size"], aspect=cfg["aspect"], background=tuple(cfg["background"]), cache_dir=cache_dir
    )
    fake = inception.generated_features(G, variables, n, jax.random.key(seed))
    return {
        "step": int(step),
        "fid": inception.fid(fake, real),
        "kid": inception.kid(fake, real),
        "n_generated": int(n),
        "n_real": int(len(real)),
        "data": str(source),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv=None) -> None:
    """The `fastgan-evaluate` command."""
    p = argparse.ArgumentParser(
        prog="fastgan-evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workdir", required=True, help="run folder written by fastgan-train / train.py")
    p.add_argument("--data", default=None, help="real images (default: the run's --data)")
    p.add_argument("--n", type=int, default=5000, help="generated samples")
    p.add_argument("--step", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON output (default: RUN/eval/fid_<step>.json)")
    args = p.parse_args(argv)
    if args.n < 2:
        p.error(f"--n {args.n}: FID and KID need at least 2 generated samples")
    if args.step is not None and args.step < 0:
        p.error(f"--step {args.step}: give a checkpoint step >= 0 (default: the latest)")
    try:
        result = evaluate(args.workdir, data_source=args.data, n=args.n, step=args.step, seed=args.seed)
    except (FileNotFoundError, data.DataError, ValueError) as e:  # ValueError: a damaged checkpoint
        sys.exit(f"error: {e}")
    out = pathlib.Path(args.out or pathlib.Path(args.workdir) / "eval" / f"fid_{result['step']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(
        f"step {result['step']}: FID {result['fid']:.2f}  KID {1000 * result['kid']:.2f}e-3  "
        f"({result['n_generated']} samples vs {result['n_real']} real images from {result['data']}); wrote {out}"
    )


if __name__ == "__main__":
    main()
